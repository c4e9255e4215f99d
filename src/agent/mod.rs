//! The seed's AGENTS: user code that executes tasks, each on its own OS
//! thread, with a role, capabilities, a state and metrics.

mod metrics;
pub(crate) mod runner;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::broker::{Message, MessageBroker};
use crate::distributor::{Finished, Output, Task, TaskError};
use crate::error::Result;
use crate::ids::{AgentId, AgentState, Priority, Role, TaskId};
use crate::memory::SharedMemory;
use crate::orchestrator::Shared;
use crate::parallel::ParallelPool;
use crate::tabs::TabPool;

pub(crate) use metrics::Metrics;

/// A worker: executes tasks handed to it by the orchestrator, one at a
/// time, on its own thread.
///
/// Implement it for a type that keeps state between tasks, or use a closure
/// (`FnMut(&Task, &AgentContext) -> Result<Output, TaskError>`), which is an
/// agent too.
///
/// ```
/// use agentry::{Agent, AgentContext, Output, Task, TaskError};
///
/// struct Counter { seen: u64 }
///
/// impl Agent for Counter {
///     fn execute(&mut self, task: &Task, ctx: &AgentContext) -> Result<Output, TaskError> {
///         self.seen += 1;
///         ctx.memory().increment("tasks-seen", 1)?;
///         Ok(Output::encode(&format!("{} #{}", task.kind(), self.seen))?)
///     }
/// }
/// ```
pub trait Agent: Send + 'static {
    /// Runs one attempt of `task`. Return an [`Output`] on success, a
    /// [`TaskError::retryable`] to be run again while attempts remain, or a
    /// [`TaskError::fatal`] to fail at once. A panic is caught: the attempt
    /// fails with the panic message, and the agent is marked in error.
    fn execute(
        &mut self,
        task: &Task,
        ctx: &AgentContext,
    ) -> std::result::Result<Output, TaskError>;

    /// Receives a direct, broadcast or topic message addressed to this agent.
    /// Called between tasks; the default ignores the message. Watched for
    /// hangs as a task is (the health config's hang timeout): a handler that
    /// takes long calls [`AgentContext::heartbeat`].
    fn on_message(&mut self, _message: Message, _ctx: &AgentContext) {}
}

impl<F> Agent for F
where
    F: FnMut(&Task, &AgentContext) -> std::result::Result<Output, TaskError> + Send + 'static,
{
    fn execute(
        &mut self,
        task: &Task,
        ctx: &AgentContext,
    ) -> std::result::Result<Output, TaskError> {
        self(task, ctx)
    }
}

/// Describes a pool of agents: a role, how many to start, and the
/// capabilities each has. Given to
/// [`OrchestratorBuilder::agents_with`](crate::OrchestratorBuilder::agents_with)
/// with the factory that makes them.
///
/// ```
/// use agentry::{AgentSpec, Role};
/// let spec = AgentSpec::new(Role::Researcher).count(3).capability("http").capability("js");
/// assert_eq!(spec.capabilities(), ["http", "js"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSpec {
    pub(crate) role: Role,
    pub(crate) count: usize,
    pub(crate) capabilities: Vec<String>,
}

impl AgentSpec {
    /// A spec of one agent of `role`, without capabilities.
    pub fn new(role: Role) -> AgentSpec {
        AgentSpec {
            role,
            count: 1,
            capabilities: Vec::new(),
        }
    }

    /// How many agents to start (default 1).
    pub fn count(mut self, count: usize) -> AgentSpec {
        self.count = count;
        self
    }

    /// Adds a capability every agent of the spec has. May repeat.
    pub fn capability(mut self, capability: impl Into<String>) -> AgentSpec {
        let capability = capability.into();
        if !self.capabilities.contains(&capability) {
            self.capabilities.push(capability);
        }
        self
    }

    /// The role.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The capabilities.
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }
}

/// What an agent sees of the system while it executes: its identity, the
/// shared memory, the broker, and a way to submit subtasks.
pub struct AgentContext {
    pub(crate) agent: Arc<AgentShared>,
    pub(crate) shared: Arc<Shared>,
}

impl AgentContext {
    /// This agent's id.
    pub fn id(&self) -> AgentId {
        self.agent.id
    }

    /// This agent's role.
    pub fn role(&self) -> &Role {
        &self.agent.role
    }

    /// The shared memory of the orchestrator.
    pub fn memory(&self) -> &SharedMemory {
        &self.shared.memory
    }

    /// The message broker of the orchestrator.
    pub fn broker(&self) -> &MessageBroker {
        &self.shared.broker
    }

    /// The orchestrator's data-parallel pool, shared by every agent: split
    /// work over it instead of building a pool of your own.
    pub fn parallel(&self) -> &ParallelPool {
        &self.shared.parallel
    }

    /// The browser tabs the agents share, when the orchestrator was given a
    /// pool ([`OrchestratorBuilder::tab_pool`](crate::OrchestratorBuilder::tab_pool)).
    pub fn tabs(&self) -> Option<&TabPool> {
        self.shared.tabs.as_ref()
    }

    /// Submits a subtask, exactly as
    /// [`Orchestrator::submit`](crate::Orchestrator::submit).
    ///
    /// # Errors
    /// As [`Orchestrator::submit`](crate::Orchestrator::submit).
    pub fn submit(&self, task: Task) -> Result<TaskId> {
        self.shared.submit(task)
    }

    /// Shows that a long task (or a long [`Agent::on_message`]) is still
    /// making progress, so the health monitor does not take the agent for
    /// hung.
    pub fn heartbeat(&self) {
        self.agent.beat(&self.shared);
    }
}

impl fmt::Debug for AgentContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentContext")
            .field("id", &self.agent.id)
            .field("role", &self.agent.role)
            .finish()
    }
}

/// The tasks handed to one agent and not started yet. The orchestrator fills
/// it (under its lock, then this one); the agent takes from it under this
/// lock alone; cancellation and priority preemption take tasks back out.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) tasks: VecDeque<Task>,
    /// The priority of the tasks, while the batch is counted in the
    /// orchestrator's `batched` figures.
    pub(crate) counted: Option<Priority>,
    /// Results of tasks run, gathered to be reported together. Kept here
    /// rather than in the agent's thread so that retiring a hung agent
    /// hands them in: its thread may never come back to report them.
    pub(crate) finished: Vec<Finished>,
}

/// One running agent, as its thread, the orchestrator and the monitor share
/// it.
pub(crate) struct AgentShared {
    pub(crate) id: AgentId,
    pub(crate) role: Role,
    pub(crate) spec: usize,
    pub(crate) batch: Mutex<Batch>,
    state: AtomicU8,
    /// The task executing now, or 0.
    pub(crate) current: AtomicU64,
    /// Whether the agent is in [`Agent::on_message`]: watched for hangs
    /// as a running task is.
    pub(crate) handling_message: AtomicBool,
    /// Nanoseconds since the orchestrator started, at the last sign of life.
    pub(crate) heartbeat: AtomicU64,
    pub(crate) stop: AtomicBool,
    /// Taken out of its pool (failed or hung). Changed under the
    /// distributor's lock only.
    pub(crate) retired: AtomicBool,
    /// Once retired: the task it was running then, which recovery ran again
    /// or failed, so that the agent's late result for it is ignored (0 when
    /// none). Changed under the distributor's lock only.
    pub(crate) recovered: AtomicU64,
    /// A copy of the running task, kept only while another attempt is
    /// allowed, so a hung agent's task can run again elsewhere.
    pub(crate) in_flight: Mutex<Option<Task>>,
    /// The attempt number of the running task.
    pub(crate) current_attempt: AtomicU32,
    /// The running task's own timeout in nanoseconds, or 0.
    pub(crate) current_timeout: AtomicU64,
    /// Whether the agent is in its pool's idle list (changed under the
    /// distributor's lock only).
    pub(crate) idle_listed: AtomicBool,
    /// Whether the last tasks ran so fast that handing out several at once
    /// is worth it.
    pub(crate) quick: AtomicBool,
    pub(crate) metrics: Metrics,
}

impl AgentShared {
    pub(crate) fn new(id: AgentId, role: Role, spec: usize) -> AgentShared {
        AgentShared {
            id,
            role,
            spec,
            batch: Mutex::new(Batch::default()),
            state: AtomicU8::new(AgentState::Idle as u8),
            current: AtomicU64::new(0),
            handling_message: AtomicBool::new(false),
            heartbeat: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            recovered: AtomicU64::new(0),
            in_flight: Mutex::new(None),
            current_attempt: AtomicU32::new(0),
            current_timeout: AtomicU64::new(0),
            idle_listed: AtomicBool::new(false),
            quick: AtomicBool::new(false),
            metrics: Metrics::new(),
        }
    }

    pub(crate) fn state(&self) -> AgentState {
        match self.state.load(Ordering::Relaxed) {
            s if s == AgentState::Idle as u8 => AgentState::Idle,
            s if s == AgentState::Busy as u8 => AgentState::Busy,
            s if s == AgentState::Error as u8 => AgentState::Error,
            _ => AgentState::Stopped,
        }
    }

    /// Sets the state, except that an agent in error stays in error until it
    /// stops (recovery replaces it).
    pub(crate) fn set_state(&self, state: AgentState) {
        let current = self.state.load(Ordering::Relaxed);
        if current == state as u8 {
            return;
        }
        if current != AgentState::Error as u8 || state == AgentState::Stopped {
            self.state.store(state as u8, Ordering::Relaxed);
        }
    }

    pub(crate) fn mark_error(&self) {
        self.state.store(AgentState::Error as u8, Ordering::Relaxed);
    }

    pub(crate) fn beat(&self, shared: &Shared) {
        self.beat_at(shared, Instant::now());
    }

    /// A heartbeat at a time the caller has read already.
    pub(crate) fn beat_at(&self, shared: &Shared, at: Instant) {
        self.heartbeat.store(shared.clock_at(at), Ordering::Relaxed);
    }
}
