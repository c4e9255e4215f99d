//! Metrics and status reporting: one value with everything the seed's agent
//! boxes show, printable as a table and serialisable.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::ids::{AgentId, AgentState, Role, TaskId};
use crate::tabs::TabPoolStats;

/// One agent's row in a [`StatusReport`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AgentStatus {
    /// The agent.
    pub id: AgentId,
    /// Its role.
    pub role: Role,
    /// Its capabilities.
    pub capabilities: Vec<String>,
    /// Idle, busy, in error or stopped.
    pub state: AgentState,
    /// Attempts executed.
    pub tasks: u64,
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed (errors and panics).
    pub failed: u64,
    /// `succeeded / tasks` (1.0 before the first task).
    pub success_rate: f64,
    /// Mean execution time of an attempt.
    pub mean_time: Duration,
    /// 99th percentile of execution time (upper bound of its histogram
    /// bucket: within 2x).
    pub p99_time: Duration,
    /// The task it is running, if any.
    pub current_task: Option<TaskId>,
}

/// One agent spec's pool in a [`StatusReport`]: its size, its queue, and
/// what supervision and scaling did to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PoolStatus {
    /// The spec's role.
    pub role: Role,
    /// The spec's capabilities.
    pub capabilities: Vec<String>,
    /// Agents in the pool now.
    pub agents: usize,
    /// Of which idle.
    pub idle: usize,
    /// Tasks waiting that this spec can serve (a task several specs can
    /// serve counts for each).
    pub queued: usize,
    /// Failed or hung agents replaced.
    pub restarts: u64,
    /// Agents added by auto-scaling.
    pub scaled_up: u64,
    /// Agents removed by auto-scaling.
    pub scaled_down: u64,
    /// Whether the restart limit failed the spec.
    pub failed: bool,
}

/// Tasks waiting to start, per priority: queued, or handed to an agent
/// (in a batch of quick tasks) and not yet begun.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepths {
    /// Critical tasks waiting.
    pub critical: usize,
    /// High-priority tasks waiting.
    pub high: usize,
    /// Normal tasks waiting.
    pub normal: usize,
    /// Low-priority tasks waiting.
    pub low: usize,
}

impl QueueDepths {
    pub(crate) fn from_ranks(ranks: [usize; 4]) -> QueueDepths {
        let [critical, high, normal, low] = ranks;
        QueueDepths {
            critical,
            high,
            normal,
            low,
        }
    }

    /// All priorities together.
    pub fn total(&self) -> usize {
        self.critical + self.high + self.normal + self.low
    }
}

/// Task counts since the orchestrator started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TaskTotals {
    /// Tasks accepted.
    pub submitted: u64,
    /// Tasks that succeeded.
    pub succeeded: u64,
    /// Tasks that failed (after their last attempt, or by a dependency).
    pub failed: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Tasks that timed out.
    pub timed_out: u64,
    /// Attempts retried.
    pub retried: u64,
    /// Results that came back after their task had ended (timed out), and
    /// were ignored.
    pub late_results: u64,
    /// Tasks accepted here and left unstarted to a new leader when this
    /// instance was deposed: they finish there, not here.
    pub handed_over: u64,
}

impl TaskTotals {
    /// Tasks finished, whatever the outcome.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled + self.timed_out
    }
}

/// A snapshot of the whole system: a row per agent, queue depths, totals
/// and throughput. `Display` prints a table in the spirit of the seed's
/// agent boxes; it serialises with serde.
///
/// ```
/// use agentry::{Orchestrator, Output, Role, Task};
/// use std::time::Duration;
///
/// let orchestrator = Orchestrator::builder()
///     .agents(Role::Validator, 2, || |_: &Task, _: &agentry::AgentContext| Ok(Output::empty()))
///     .build()?;
/// let id = orchestrator.submit(Task::new("check").with_role(Role::Validator))?;
/// orchestrator.wait(id, Duration::from_secs(10))?;
/// let report = orchestrator.status();
/// assert_eq!(report.agents().len(), 2);
/// assert_eq!(report.totals.succeeded, 1);
/// println!("{report}");
/// # Ok::<(), agentry::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StatusReport {
    /// One row per live agent.
    pub agents: Vec<AgentStatus>,
    /// One row per agent spec.
    pub pools: Vec<PoolStatus>,
    /// Threads of hung agents, detached from their pools, still running.
    pub hung_threads: usize,
    /// Tasks waiting for an agent, per priority.
    pub queues: QueueDepths,
    /// Tasks waiting for their dependencies.
    pub waiting_on_dependencies: usize,
    /// Tasks running now.
    pub running: usize,
    /// Task counts since start.
    pub totals: TaskTotals,
    /// Time since the orchestrator started.
    pub uptime: Duration,
    /// Finished tasks per second since start.
    pub throughput: f64,
    /// Events dropped because the application did not read them.
    pub events_dropped: u64,
    /// The figures of the agents' tab pool, if the orchestrator has one
    /// ([`OrchestratorBuilder::tab_pool`](crate::OrchestratorBuilder::tab_pool)).
    pub tabs: Option<TabPoolStats>,
}

impl StatusReport {
    /// One row per live agent.
    pub fn agents(&self) -> &[AgentStatus] {
        &self.agents
    }

    /// Tasks waiting for an agent, all priorities.
    pub fn queued(&self) -> usize {
        self.queues.total()
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<12} {:<12} {:<8} {:>9} {:>8} {:>10} {:>10}",
            "AGENT", "ROLE", "STATE", "TASKS", "SUCCESS", "AVG TIME", "P99"
        )?;
        for a in &self.agents {
            writeln!(
                f,
                "{:<12} {:<12} {:<8} {:>9} {:>7.1}% {:>10} {:>10}",
                a.id.to_string(),
                a.role.name(),
                a.state.to_string(),
                a.tasks,
                a.success_rate * 100.0,
                format_duration(a.mean_time),
                format_duration(a.p99_time),
            )?;
        }
        for p in &self.pools {
            writeln!(
                f,
                "pool {:<12} agents {:>3} (idle {:>3}) | queued {:>6} | restarts {} | scaled +{} -{}{}",
                p.role.name(),
                p.agents,
                p.idle,
                p.queued,
                p.restarts,
                p.scaled_up,
                p.scaled_down,
                if p.failed {
                    " | FAILED (restart limit)"
                } else {
                    ""
                }
            )?;
        }
        if self.hung_threads > 0 {
            writeln!(f, "hung threads still running: {}", self.hung_threads)?;
        }
        let q = &self.queues;
        writeln!(
            f,
            "queues: critical {} | high {} | normal {} | low {} | waiting on dependencies {} | running {}",
            q.critical, q.high, q.normal, q.low, self.waiting_on_dependencies, self.running
        )?;
        if let Some(tabs) = &self.tabs {
            writeln!(f, "{tabs}")?;
        }
        let t = &self.totals;
        write!(
            f,
            "tasks: {} submitted, {} succeeded, {} failed, {} cancelled, {} timed out, {} retried; {:.0} tasks/s over {}",
            t.submitted,
            t.succeeded,
            t.failed,
            t.cancelled,
            t.timed_out,
            t.retried,
            self.throughput,
            format_duration(self.uptime)
        )
    }
}

/// A short human form: `850ns`, `12.5µs`, `3.1ms`, `2.50s`.
pub(crate) fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos < 1_000 {
        format!("{nanos}ns")
    } else if nanos < 1_000_000 {
        format!("{:.1}µs", nanos as f64 / 1e3)
    } else if nanos < 1_000_000_000 {
        format!("{:.1}ms", nanos as f64 / 1e6)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// One node of a Redis cluster, as its last heartbeat says; from
/// [`Orchestrator::cluster_nodes`](crate::Orchestrator::cluster_nodes).
#[cfg(feature = "redis")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's [name](crate::OrchestratorBuilder::node).
    pub name: String,
    /// When it last wrote its heartbeat (the Redis server's clock).
    pub heartbeat: std::time::SystemTime,
    /// How many agents it started with.
    pub agents: usize,
}
