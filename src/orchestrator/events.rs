//! Events: what happened to agents and tasks, for the application to react.

use crate::ids::{AgentId, Role, TaskId};

/// Something the orchestrator did or saw, delivered through
/// [`Orchestrator::events`](crate::Orchestrator::events).
///
/// The channel is bounded (4,096 events); when the application does not
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
    /// A failed attempt will be retried.
    TaskRetried {
        /// The task.
        task: TaskId,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// Why it failed.
        error: String,
    },
    /// A task ran past its timeout and ended as timed out.
    TaskTimedOut {
        /// The task.
        task: TaskId,
        /// The agent still running it.
        agent: AgentId,
    },
}
