//! Identity and routing types shared by every part of agentry.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity of one agent: unique within an orchestrator (or within a
/// [`MessageBroker`](crate::MessageBroker) used on its own).
///
/// Displays as `agent-7`.
///
/// # On a cluster
///
/// An orchestrator that is a node of a cluster on Redis (feature `redis`,
/// `OrchestratorBuilder::redis`) gets a node number from Redis (`INCR`) when
/// it connects, and numbers its agents with it in the high bits: the top 24
/// bits hold the node number, the low [`AgentId::NODE_SHIFT`] (40) bits count
/// the node's agents from 1. So every id is unique across the cluster, and
/// [`node`](AgentId::node) tells which node an agent lives on (the broker
/// routes a message for another node's agent through Redis). Outside a
/// cluster the node number is 0 and ids are the plain counter: 1, 2, 3, ...
///
/// ```
/// use agentry::AgentId;
/// let id = AgentId::from(7);
/// assert_eq!(id.to_string(), "agent-7");
/// assert_eq!(id.get(), 7);
/// assert_eq!(id.node(), 0);
///
/// let remote = AgentId::on_node(3, 7);
/// assert_eq!(remote.node(), 3);
/// assert_eq!(remote.get(), (3 << AgentId::NODE_SHIFT) | 7);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AgentId(u64);

impl AgentId {
    /// How many low bits of an id count the agents of one node; the node
    /// number is above them.
    pub const NODE_SHIFT: u32 = 40;

    /// The largest node number an id can hold (24 bits).
    pub const MAX_NODE: u32 = (1 << (64 - Self::NODE_SHIFT)) - 1;

    /// An id from its raw number (same as `AgentId::from(raw)`, usable in
    /// constants).
    pub const fn new(raw: u64) -> AgentId {
        AgentId(raw)
    }

    /// The id of the `local`-th agent of cluster node `node`: `node` in the
    /// high bits, the low [`NODE_SHIFT`](AgentId::NODE_SHIFT) bits of `local`
    /// below (higher bits of `local` and of `node` past
    /// [`MAX_NODE`](AgentId::MAX_NODE) are dropped).
    pub const fn on_node(node: u32, local: u64) -> AgentId {
        let node = (node & Self::MAX_NODE) as u64;
        AgentId((node << Self::NODE_SHIFT) | (local & ((1 << Self::NODE_SHIFT) - 1)))
    }

    /// The cluster node this agent lives on; 0 outside a cluster.
    pub const fn node(self) -> u32 {
        (self.0 >> Self::NODE_SHIFT) as u32
    }

    /// The raw number behind this id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for AgentId {
    fn from(raw: u64) -> Self {
        AgentId(raw)
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "agent-{}", self.0)
    }
}

/// The identity of one task, assigned by the orchestrator at submit and
/// unique within that orchestrator.
///
/// Displays as `task-42`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId(u64);

impl TaskId {
    /// An id from its raw number (same as `TaskId::from(raw)`).
    pub const fn new(raw: u64) -> TaskId {
        TaskId(raw)
    }

    /// The raw number behind this id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for TaskId {
    fn from(raw: u64) -> Self {
        TaskId(raw)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-{}", self.0)
    }
}

/// How urgent a task is. Higher priority is always served first; within one
/// priority, first in first out.
///
/// `Critical` is the greatest value, so `Priority::Critical > Priority::Low`.
/// The default is [`Priority::Normal`].
///
/// ```
/// use agentry::Priority;
/// assert!(Priority::Critical > Priority::High);
/// assert!(Priority::Normal > Priority::Low);
/// assert_eq!(Priority::default(), Priority::Normal);
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Priority {
    /// Served after every other level.
    Low,
    /// The default level.
    #[default]
    Normal,
    /// Served before normal and low tasks.
    High,
    /// Served before everything else.
    Critical,
}

impl Priority {
    /// Every level, most urgent first: the order in which queues are served.
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// The position of this level in [`Priority::ALL`] (0 for critical).
    pub const fn rank(self) -> usize {
        match self {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Normal => 2,
            Priority::Low => 3,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        })
    }
}

/// What an agent does. The four built-in roles are the seed's; any other is
/// a [`Role::Custom`].
///
/// ```
/// use agentry::Role;
/// assert_eq!(Role::Researcher.to_string(), "researcher");
/// assert_eq!(Role::Custom("translator".into()).to_string(), "translator");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Creates plans and decomposes goals into tasks.
    Planner,
    /// Gathers data: fetches pages, searches.
    Researcher,
    /// Parses gathered data and extracts records.
    Extractor,
    /// Checks and scores extracted records.
    Validator,
    /// Any other role, by name.
    Custom(String),
}

impl Role {
    /// The role's name as [`Display`](fmt::Display) prints it.
    pub fn name(&self) -> &str {
        match self {
            Role::Planner => "planner",
            Role::Researcher => "researcher",
            Role::Extractor => "extractor",
            Role::Validator => "validator",
            Role::Custom(name) => name,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The life-cycle state of an agent, as the seed's agent boxes show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AgentState {
    /// Waiting for work.
    Idle,
    /// Executing a task.
    Busy,
    /// Panicked, hung or ended unexpectedly; recovery replaces it.
    Error,
    /// Shut down; it will not run again.
    Stopped,
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AgentState::Idle => "IDLE",
            AgentState::Busy => "BUSY",
            AgentState::Error => "ERROR",
            AgentState::Stopped => "STOPPED",
        })
    }
}
