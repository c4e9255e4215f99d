//! The one error type of agentry.

use std::fmt;
use std::path::PathBuf;

use crate::ids::{AgentId, Role, TaskId};
use crate::memory::Version;

/// `Result` with agentry's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in agentry, one variant per failure a caller
/// can act on.
///
/// Messages are lower-case and name the values that matter (key, versions,
/// agent id). New variants may be added in minor releases, so matches need a
/// wildcard arm.
///
/// ```
/// use agentry::{Error, MessageBroker, AgentId};
///
/// let broker = MessageBroker::new(1);
/// let _mailbox = broker.register(AgentId::from(1))?;
/// broker.send(AgentId::from(0), AgentId::from(1), &"first")?;
/// match broker.send(AgentId::from(0), AgentId::from(1), &"second") {
///     Err(Error::Full { agent, .. }) => assert_eq!(agent, AgentId::from(1)),
///     other => panic!("expected a full mailbox, got {other:?}"),
/// }
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An optimistic write found the key at another version than expected;
    /// nothing was written. Read the key again and retry.
    #[error("version conflict on key {key:?}: expected {expected}, found {actual}")]
    Conflict {
        /// The key written.
        key: String,
        /// The version the writer expected.
        expected: Version,
        /// The version the key had ([`Version::NONE`] if absent).
        actual: Version,
    },

    /// The recipient's mailbox is at capacity; the message was not queued.
    /// The caller still owns the body and may retry later or drop it.
    #[error("mailbox of {agent} is full ({capacity} messages)")]
    Full {
        /// The recipient.
        agent: AgentId,
        /// The mailbox capacity.
        capacity: usize,
    },

    /// A wait ran out of time.
    #[error("timed out")]
    Timeout,

    /// A non-blocking receive found the mailbox empty.
    #[error("mailbox is empty")]
    Empty,

    /// The thing named does not exist (or no longer exists).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: Missing,
    },

    /// An agent id was registered twice with one broker.
    #[error("{agent} is already registered")]
    AlreadyRegistered {
        /// The id registered twice.
        agent: AgentId,
    },

    /// The mailbox was unregistered (or its agent stopped) and holds no more
    /// messages.
    #[error("mailbox of {agent} is closed")]
    Disconnected {
        /// The agent whose mailbox is closed.
        agent: AgentId,
    },

    /// No agent spec could ever serve this task: no agent has the role, or
    /// none has every required capability, or the only specs that could have
    /// were failed by the restart limit.
    #[error("no agent can serve task {kind:?} (role: {}, capabilities: {capabilities:?}): {reason}",
        role.as_ref().map_or("any", |r| r.name()))]
    NoAgentForTask {
        /// The task's kind.
        kind: String,
        /// The role the task asked for, if any.
        role: Option<Role>,
        /// The capabilities the task requires.
        capabilities: Vec<String>,
        /// Why nobody can serve it.
        reason: String,
    },

    /// This instance is not the leader, so it may not act as one (or a write
    /// carried an epoch older than the current leader's: it was fenced off).
    #[error("not the leader{}{}", match (epoch, current) {
        (Some(e), Some(c)) => format!(" (epoch {e} is older than the current epoch {c})"),
        _ => String::new(),
    }, match leader {
        Some(l) => format!("; the leader is {} (pid {}, epoch {})", l.instance_id, l.pid, l.epoch),
        None => String::new(),
    })]
    NotLeader {
        /// The epoch the refused action carried, if any.
        epoch: Option<u64>,
        /// The current leader's epoch, if known.
        current: Option<u64>,
        /// The current leader, when known: set by an orchestrator's
        /// `submit` on a follower (from the heartbeat record the election
        /// last read), `None` elsewhere.
        leader: Option<crate::election::LeaderInfo>,
    },

    /// The orchestrator (or the part asked) has shut down.
    #[error("shut down")]
    ShutDown,

    /// A value could not be encoded or decoded with postcard, e.g. a body read
    /// as the wrong type.
    #[error("codec error: {0}")]
    Codec(#[from] postcard::Error),

    /// An operating-system I/O error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),

    /// A snapshot file is not a valid agentry snapshot: garbage, truncated,
    /// of another format version, or with a bad checksum. The file was not
    /// loaded.
    #[error("corrupt snapshot {}: {reason}", path.display())]
    CorruptSnapshot {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A journal holds a damaged record before its end (a torn last record
    /// is not an error: it is dropped at open).
    #[error("corrupt journal {} at byte {offset}: {reason}", path.display())]
    CorruptJournal {
        /// The file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// A configuration that cannot work was refused at construction.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// An argument was refused (an empty key, a malformed name, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// Every tab of a [`TabPool`](crate::tabs::TabPool) is leased (from a
    /// `try_` lease, which does not wait).
    #[error("all {max_tabs} tabs are leased")]
    NoTabFree {
        /// The pool's size.
        max_tabs: usize,
    },

    /// A host already has as many leases on it as a
    /// [`TabPool`](crate::tabs::TabPool)'s per-site limit allows.
    #[error("{host} already has {limit} leases on it (the per-site limit)")]
    SiteBusy {
        /// The host.
        host: String,
        /// The per-site limit.
        limit: usize,
    },

    /// A site-aware [`TabLease`](crate::tabs::TabLease) was asked to
    /// navigate to another host than the one it holds a slot for: lease a
    /// tab for that host instead.
    #[error("this lease holds a slot for {leased}, not for {url}: lease a tab for that site")]
    WrongSite {
        /// The host the lease holds a slot for.
        leased: String,
        /// The url refused.
        url: String,
    },

    /// A browser or one of its tabs failed: it could not start, crashed,
    /// lost its connection or stopped answering. A tab pool recycles a tab
    /// whose operation returned this.
    #[error("browser failed: {reason}")]
    Browser {
        /// What happened.
        reason: String,
    },

    /// The browser to launch is not there. Install it (on Debian and
    /// Ubuntu: `apt-get install chromium`) or point to it.
    #[error("no browser at {}: install it with `{install}`", path.display())]
    BrowserNotInstalled {
        /// Where the browser was looked for.
        path: PathBuf,
        /// The command that installs it.
        install: &'static str,
    },

    /// A page could not be loaded: unreachable or refusing host, a scheme
    /// the backend cannot fetch, a broken response. The tab is usable.
    #[error("navigation to {url} failed: {reason}")]
    Navigation {
        /// The url.
        url: String,
        /// Why it failed.
        reason: String,
    },

    /// A page did not finish loading within the navigation timeout. The tab
    /// stopped loading it and is usable.
    #[error("navigation to {url} timed out after {timeout:?}")]
    NavigationTimeout {
        /// The url.
        url: String,
        /// The timeout.
        timeout: std::time::Duration,
    },

    /// A script evaluated in a page threw, or its value could not be
    /// returned.
    #[error("script failed: {reason}")]
    Script {
        /// The exception, as the page describes it.
        reason: String,
    },

    /// The tab backend cannot do this (the HTTP backend runs no script and
    /// takes no screenshot).
    #[error("the {backend} tab backend cannot {operation}")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// What was asked.
        operation: &'static str,
    },

    /// The storage backend (Redis, with the `redis` feature) could not be
    /// reached, or failed a command. The connection is dropped and the next
    /// operation reconnects (with backoff). A read can simply be retried; a
    /// write that failed this way may or may not have been applied (its reply
    /// was lost): read the key to find out.
    #[error("backend failed to {operation}: {reason}")]
    Backend {
        /// What was being done, e.g. `get key "plan"`.
        operation: String,
        /// Why it failed, as the backend or the connection reported it.
        reason: String,
    },

    /// A closure run on the data-parallel pool panicked (the message is the
    /// panic's). The pool is unharmed; inside an agent, `?` fails the task.
    #[error("a parallel closure panicked: {0}")]
    Panicked(String),
}

/// What a [`Error::NotFound`] was looking for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Missing {
    /// No agent (or mailbox) with this id is registered.
    Agent(AgentId),
    /// No task with this id was submitted, or its result was evicted.
    Task(TaskId),
    /// Nobody is subscribed to this topic under this id.
    Subscription {
        /// The agent.
        agent: AgentId,
        /// The topic.
        topic: String,
    },
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Agent(id) => write!(f, "{id}"),
            Missing::Task(id) => write!(f, "{id}"),
            Missing::Subscription { agent, topic } => {
                write!(f, "subscription of {agent} to topic {topic:?}")
            }
        }
    }
}

impl Error {
    /// Whether this is [`Error::Full`].
    pub fn is_full(&self) -> bool {
        matches!(self, Error::Full { .. })
    }

    /// Whether this is [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout)
    }

    /// Whether this is [`Error::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    pub(crate) fn unknown_agent(agent: AgentId) -> Error {
        Error::NotFound {
            what: Missing::Agent(agent),
        }
    }
}
