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
//! With the `redis` feature, [`LeaderElection::redis`] runs the same
//! election on a Redis server, for candidates on several hosts: a lease key
//! instead of the lock, the epoch from `INCR`, the same events and the same
//! frozen-leader behaviour (`redis_seat.rs` describes it).
//!
//! `docs/RELIABILITY.md` states the guarantees, the failure model and the
//! timings.

mod config;
mod handle;
mod lease;
mod record;
#[cfg(feature = "redis")]
mod redis_seat;
mod runner;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

pub use config::{
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_LEASE_TIMEOUT, DEFAULT_RETRY_INTERVAL, ElectionConfig,
};
pub use handle::ElectionHandle;
pub use lease::Leadership;

use self::handle::Shared;
use self::record::{Dir, Record};
#[cfg(feature = "redis")]
use self::redis_seat::RedisSeat;
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
///
/// With the `redis` feature, `LeaderElection::redis` makes a candidate in an
/// election held on a Redis server instead, for processes on several hosts;
/// everything else is the same.
#[derive(Debug)]
pub struct LeaderElection {
    place: Place,
    config: ElectionConfig,
}

/// Where an election is held.
#[derive(Clone)]
pub(crate) enum Place {
    Dir(Dir),
    #[cfg(feature = "redis")]
    Redis(Arc<RedisSeat>),
}

impl Place {
    /// The directory of a file election.
    pub(crate) fn dir(&self) -> Option<&Dir> {
        match self {
            Place::Dir(dir) => Some(dir),
            #[cfg(feature = "redis")]
            Place::Redis(_) => None,
        }
    }

    /// The current epoch (0 before the first election).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (file) or [`Error::Backend`] (Redis) if it cannot be
    /// read.
    pub(crate) fn epoch(&self) -> Result<u64> {
        match self {
            Place::Dir(dir) => dir.epoch(),
            #[cfg(feature = "redis")]
            Place::Redis(seat) => seat.epoch(),
        }
    }

    /// The current leader's heartbeat record, if any.
    ///
    /// # Errors
    ///
    /// As [`epoch`](Self::epoch); a damaged record file is an
    /// `InvalidData` [`Error::Io`].
    pub(crate) fn record(&self) -> Result<Option<Record>> {
        match self {
            Place::Dir(dir) => dir.record(),
            #[cfg(feature = "redis")]
            Place::Redis(seat) => seat.record(),
        }
    }
}

impl fmt::Debug for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Dir(dir) => f.debug_tuple("Dir").field(&dir.root()).finish(),
            #[cfg(feature = "redis")]
            Place::Redis(seat) => seat.fmt(f),
        }
    }
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
            place: Place::Dir(Dir::create(dir.as_ref())?),
            config,
        })
    }

    /// A candidate in the election held on the Redis server `redis` names
    /// (a URL, or a [`RedisConfig`](crate::RedisConfig) with a namespace:
    /// candidates of one election share server and namespace), for
    /// processes on any number of hosts.
    ///
    /// The protocol, its events and guarantees are those of the file
    /// election, with a lease key (`SET NX PX`) for the lock and `INCR` for
    /// the epoch; the differences: a leader that dies or resigns is replaced
    /// at a follower's next try (every retry interval; a dead leader's lease
    /// must expire first), and a Redis that cannot be reached is an
    /// [`Error::Backend`] (a leader that cannot renew steps down before its
    /// lease expires, as with a failing disk; each command waits at most
    /// the heartbeat interval, or the Redis timeout if shorter). Fence a Redis
    /// [`SharedMemory`](crate::SharedMemory) with the epoch, and a deposed
    /// leader's writes are refused on every host.
    ///
    /// ```no_run
    /// use agentry::{ElectionConfig, LeaderElection, RedisConfig};
    /// use std::time::Duration;
    ///
    /// let redis = RedisConfig::new("redis://10.0.0.5:6379/").namespace("scheduler");
    /// let handle = LeaderElection::redis(redis, ElectionConfig::new("host-a"))?.start()?;
    /// if handle.wait_until_leader(Duration::from_secs(60)) {
    ///     println!("leading under epoch {:?}", handle.epoch());
    /// }
    /// # Ok::<(), agentry::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for bad timings (as [`new`](Self::new)) or
    /// a bad Redis configuration; [`Error::Backend`] if the server cannot
    /// be reached within its timeout.
    #[cfg(feature = "redis")]
    pub fn redis(
        redis: impl Into<crate::RedisConfig>,
        config: ElectionConfig,
    ) -> Result<LeaderElection> {
        config.validate()?;
        // A command must not outlast a heartbeat, or a leader cut off from
        // Redis would sit in one call past its renew deadline.
        let seat = RedisSeat::connect(redis.into(), config.heartbeat())?;
        Ok(LeaderElection {
            place: Place::Redis(Arc::new(seat)),
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
    /// [`Error::Io`] if the lock or the epoch cannot be read or written;
    /// [`Error::Backend`] if Redis cannot be reached.
    pub fn try_acquire(&self) -> Result<Option<Leadership>> {
        #[cfg(feature = "redis")]
        if let Place::Redis(seat) = &self.place {
            return lease::elect_on_redis(seat, &self.config);
        }
        let Some(dir) = self.place.dir() else {
            return Ok(None);
        };
        let mut lock = fslock::LockFile::open(&dir.leader_lock())?;
        if !lock.try_lock()? {
            return Ok(None);
        }
        lease::elect(dir, &self.config, Some(lock), None, self.config.retry())
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
            self.place.clone(),
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
            self.place,
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

    /// The leader as its heartbeat record says, wherever this election is
    /// held: for a directory, as [`leader_info`](Self::leader_info); on
    /// Redis, the leader whose lease is live.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a record file exists but cannot be read;
    /// [`Error::Backend`] if Redis cannot be reached.
    pub fn leader(&self) -> Result<Option<LeaderInfo>> {
        match &self.place {
            Place::Dir(dir) => LeaderElection::leader_info(dir.root()),
            #[cfg(feature = "redis")]
            Place::Redis(seat) => Ok(seat.record()?.map(|r| r.info())),
        }
    }

    /// The directory of this election; an empty path for an election on
    /// Redis.
    pub fn dir(&self) -> &Path {
        match &self.place {
            Place::Dir(dir) => dir.root(),
            #[cfg(feature = "redis")]
            Place::Redis(_) => Path::new(""),
        }
    }

    /// This candidate's configuration.
    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }
}
