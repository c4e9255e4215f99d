//! The seed's LEADER ELECTION: several processes over one directory agree
//! on one leader, and a standby takes over when the leader dies, resigns or
//! freezes.
//!
//! # Protocol
//!
//! The directory holds four files (see `record.rs`): `leader.lock`,
//! `epoch.lock`, `epoch` and `leader` (the heartbeat record).
//!
//! * **Winning the lock.** Every candidate has a thread blocked in `flock`
//!   on `leader.lock`. The kernel gives the lock to one of them, and takes it
//!   back when its process exits for any reason, kill -9 included; the next
//!   waiter then holds it at once.
//! * **Epoch.** Holding the lock is not yet leading. Under `epoch.lock`, the
//!   winner reads the persisted epoch, writes epoch + 1 and fsyncs it, then
//!   writes its heartbeat record. Only then does it lead. The epoch file is
//!   the single source of truth: the leader is whoever holds the greatest
//!   epoch, and that epoch is the fencing token attached to its writes
//!   ([`SharedMemory::fence`](crate::SharedMemory::fence)).
//! * **Heartbeat.** Every heartbeat interval the leader re-reads the epoch
//!   and rewrites the record (atomically: temp file and rename). If the epoch
//!   grew, it was deposed: it steps down ([`ElectionEvent::Demoted`]) and
//!   releases the lock. If it cannot write the record for the lease timeout
//!   minus one heartbeat interval, it steps down too.
//! * **Frozen leader.** A leader stopped by SIGSTOP or a stalled machine
//!   keeps its lock, so followers also watch the epoch file and the record:
//!   if neither changed for a whole lease timeout (measured on the
//!   follower's monotonic clock, so wall-clock jumps do not matter), a
//!   follower runs the election without the lock, provided, under
//!   `epoch.lock`, that the files are still exactly what it watched go
//!   stale. When the frozen leader runs again, its first heartbeat finds the
//!   greater epoch and it steps down; meanwhile [`ElectionHandle::is_leader`]
//!   already answers `false`, since its last renewal is too old.
//!
//! `docs/RELIABILITY.md` states the guarantees, the failure model and the
//! timings.

mod config;
mod handle;
mod lease;
mod record;
mod runner;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

pub use config::{
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_LEASE_TIMEOUT, DEFAULT_RETRY_INTERVAL, ElectionConfig,
};
pub use handle::ElectionHandle;
pub use lease::Leadership;

use self::handle::Shared;
use self::record::Dir;
use self::runner::Runner;
use crate::error::{Error, Result};

/// The leader of an election directory, as its heartbeat record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's [`ElectionConfig::new`] name.
    pub instance_id: String,
    /// The leader's process id.
    pub pid: u32,
    /// The epoch the leader was elected with (its fencing token).
    pub epoch: u64,
    /// When the leader last wrote its heartbeat (its wall clock).
    pub heartbeat: SystemTime,
}

/// What happened in an election, as [`ElectionHandle::events`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElectionEvent {
    /// This instance became leader under `epoch`.
    Elected {
        /// The new epoch: the fencing token of this leadership.
        epoch: u64,
    },
    /// This instance stopped leading: it resigned, was deposed by a later
    /// election, or could not renew its heartbeat in time.
    Demoted {
        /// The epoch it led under.
        epoch: u64,
    },
    /// The leader seen in the directory changed (this instance included):
    /// a new leader, or `None` once a leader resigned and none took over yet.
    LeaderChanged {
        /// The new leader, if any.
        leader: Option<LeaderInfo>,
    },
}

/// One candidate in a file-based leader election among processes (or
/// threads) sharing a directory on a local file system.
///
/// [`start`](Self::start) runs the election in the background and returns an
/// [`ElectionHandle`]; [`try_acquire`](Self::try_acquire) makes one attempt
/// and hands back a [`Leadership`] guard. The module documentation of
/// `election` and `docs/RELIABILITY.md` describe the protocol.
///
/// ```
/// use agentry::{ElectionConfig, LeaderElection};
/// use std::time::Duration;
///
/// let dir = tempfile::tempdir()?;
/// let config = |name: &str| {
///     ElectionConfig::new(name)
///         .heartbeat_interval(Duration::from_millis(20))
///         .lease_timeout(Duration::from_millis(100))
///         .retry_interval(Duration::from_millis(5))
/// };
/// let a = LeaderElection::new(dir.path(), config("a"))?;
/// let b = LeaderElection::new(dir.path(), config("b"))?;
///
/// let leadership = a.try_acquire()?.expect("nobody else leads");
/// assert!(b.try_acquire()?.is_none(), "one leader at a time");
/// let info = LeaderElection::leader_info(dir.path())?.expect("a leads");
/// assert_eq!((info.instance_id.as_str(), info.epoch), ("a", leadership.epoch()));
///
/// // Releasing hands over; every election raises the epoch.
/// let first = leadership.epoch();
/// leadership.resign()?;
/// assert!(b.try_acquire()?.expect("free now").epoch() > first);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// `flock` is what makes takeover immediate, and it is only reliable on a
/// local file system: do not put the directory on NFS or another network
/// file system, where locks may be emulated, lost, or never released.
#[derive(Debug)]
pub struct LeaderElection {
    dir: Dir,
    config: ElectionConfig,
}

impl LeaderElection {
    /// A candidate in the election held in `dir`, created if absent.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidConfig`] if a duration is zero, the lease timeout is
    ///   shorter than three heartbeat intervals, or the retry interval is not
    ///   shorter than the heartbeat interval.
    /// * [`Error::Io`], naming the directory, if it cannot be created or
    ///   written.
    pub fn new(dir: impl AsRef<Path>, config: ElectionConfig) -> Result<LeaderElection> {
        config.validate()?;
        Ok(LeaderElection {
            dir: Dir::create(dir.as_ref())?,
            config,
        })
    }

    /// Tries once to become leader, without waiting: `None` if another
    /// candidate holds the lock. On success the epoch is already raised and
    /// durable, and the heartbeat record written.
    ///
    /// The returned guard is not renewed in the background: call
    /// [`Leadership::renew`] every heartbeat interval, or use
    /// [`start`](Self::start). Two candidates in one process exclude each
    /// other like two processes do (each opens the lock file anew). This
    /// does not take over from a frozen leader; the background election does.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the lock or the epoch cannot be read or written.
    pub fn try_acquire(&self) -> Result<Option<Leadership>> {
        let mut lock = fslock::LockFile::open(&self.dir.leader_lock())?;
        if !lock.try_lock()? {
            return Ok(None);
        }
        lease::elect(
            &self.dir,
            &self.config,
            Some(lock),
            None,
            self.config.retry(),
        )
    }

    /// Starts the election on a background thread named `agentry-election`:
    /// it becomes leader as soon as it can, renews the heartbeat, steps down
    /// when deposed, and takes over when the leader dies, resigns or lets its
    /// lease expire.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the thread cannot be spawned.
    pub fn start(self) -> Result<ElectionHandle> {
        let shared = Arc::new(Shared::new());
        let (events, receive_events) = crossbeam_channel::unbounded();
        let (commands, receive_commands) = crossbeam_channel::bounded(1);
        let runner = Runner::new(
            self.dir.clone(),
            self.config.clone(),
            Arc::clone(&shared),
            events,
            receive_commands,
        );
        let thread = std::thread::Builder::new()
            .name("agentry-election".into())
            .spawn(move || runner.run())
            .map_err(Error::Io)?;
        Ok(ElectionHandle::new(
            self.dir,
            self.config.instance_id().to_owned(),
            self.config.renew_deadline(),
            shared,
            receive_events,
            commands,
            thread,
        ))
    }

    /// The leader named by the heartbeat record in `dir`: the last leader
    /// that wrote one and has not resigned. A leader killed by a signal
    /// leaves its record behind, so compare
    /// [`heartbeat`](LeaderInfo::heartbeat) with the lease timeout to judge
    /// whether it is alive. `None` if there is no record, or it is damaged
    /// (logged), or the directory does not exist.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the record exists but cannot be read.
    pub fn leader_info(dir: impl AsRef<Path>) -> Result<Option<LeaderInfo>> {
        match Dir::existing(dir.as_ref()).record() {
            Ok(record) => Ok(record.map(|r| r.info())),
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                tracing::warn!(error = %e, "ignoring a damaged heartbeat record");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The directory of this election.
    pub fn dir(&self) -> &Path {
        self.dir.root()
    }

    /// This candidate's configuration.
    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }
}
