//! Events: what happened to agents and tasks, for the application to react.

use std::time::Duration;

use crate::ids::{AgentId, Role, TaskId};

/// Something the orchestrator did or saw, delivered through
/// [`Orchestrator::events`](crate::Orchestrator::events).
///
/// At most 4,096 events wait in the channel; when the application does not
/// read it, newer events are dropped and counted in
/// [`StatusReport::events_dropped`](crate::StatusReport::events_dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An agent thread is running (sent from the new thread itself).
    AgentSpawned {
        /// The agent.
        agent: AgentId,
        /// Its role.
        role: Role,
    },
    /// An agent panicked (in `execute` or `on_message`): it is in error.
    AgentFailed {
        /// The agent.
        agent: AgentId,
        /// The panic message.
        reason: String,
    },
    /// An agent thread ended.
    AgentStopped {
        /// The agent.
        agent: AgentId,
    },
    /// A failed or hung agent was replaced by a new one of the same spec.
    AgentReplaced {
        /// The agent taken out of the pool.
        failed: AgentId,
        /// The agent that took its place.
        replacement: AgentId,
        /// Their role.
        role: Role,
    },
    /// A busy agent (running a task, or in
    /// [`Agent::on_message`](crate::Agent::on_message)) showed no sign of
    /// life for longer than its limit (the hang timeout, or its task's own
    /// timeout): it was detached from the pool; its thread is left to end
    /// on its own.
    AgentHung {
        /// The agent.
        agent: AgentId,
        /// The task it was running; `None` when it hung handling a message.
        task: Option<TaskId>,
        /// How long it had been silent.
        silent_for: Duration,
    },
    /// Auto-scaling added an agent (it is running).
    ScaledUp {
        /// The new agent.
        agent: AgentId,
        /// Its role.
        role: Role,
        /// The pool's size with it.
        pool_size: usize,
    },
    /// Auto-scaling stopped an idle agent.
    ScaledDown {
        /// The agent stopped.
        agent: AgentId,
        /// Its role.
        role: Role,
        /// The pool's size without it.
        pool_size: usize,
    },
    /// A spec needed more restarts than its limit allows: it is failed for
    /// the rest of the orchestrator's life, and tasks only it could serve
    /// fail (queued) or are refused (new).
    RestartLimitReached {
        /// The spec's role.
        role: Role,
        /// The spec's capabilities.
        capabilities: Vec<String>,
        /// Restarts counted within the window.
        restarts: u32,
        /// The window.
        within: Duration,
    },
    /// A failed attempt will be retried.
    TaskRetried {
        /// The task.
        task: TaskId,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// Why it failed.
        error: String,
    },
    /// A task ended without success after its last attempt (failed, or
    /// timed out): its result keeps the reason.
    TaskDeadLettered {
        /// The task.
        task: TaskId,
        /// Why it failed.
        reason: String,
    },
    /// The leader of a Redis cluster (a node given an
    /// [election](crate::OrchestratorBuilder::election)) declared another
    /// node dead: its heartbeat was a quarter of the visibility timeout plus
    /// one Redis command timeout old (by the leader's timeouts or the node's,
    /// whichever is longer). Sent once every task it held at the
    /// declaration is back in the queue for any node (their next attempt
    /// counted), and its entry in the cluster's node list and its consumers
    /// holding nothing are deleted: at once for a node holding up to a
    /// thousand tasks, over the leader's next heartbeats for more. A node
    /// only frozen keeps the tasks it reads after the declaration. Only the
    /// leader sends it (the next leader, if the leader changed meanwhile);
    /// a leader that stops just as it sends it may leave it to the next
    /// leader to send again.
    NodeDead {
        /// The node's name.
        node: String,
        /// How many tasks it held, now back in the queue.
        requeued: usize,
    },
    /// A task ran past its timeout and ended as timed out.
    TaskTimedOut {
        /// The task.
        task: TaskId,
        /// The agent still running it.
        agent: AgentId,
    },
}
