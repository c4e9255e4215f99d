//! Becoming leader, and the [`Leadership`] guard a leader holds.
//!
//! An election, by either path, runs under `epoch.lock`: read the epoch,
//! write epoch + 1 durably, write the heartbeat record, release. Holding
//! `epoch.lock` only for these few milliseconds (never across heartbeats)
//! matters: a leader frozen while holding it would block every takeover.

use std::fmt;
#[cfg(feature = "redis")]
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use fslock::LockFile;

use super::config::ElectionConfig;
use super::record::{Dir, Record};
#[cfg(feature = "redis")]
use super::redis_seat::RedisSeat;
use super::{LeaderInfo, Place};
use crate::error::{Error, Result};

/// How often a candidate looks again at a busy `epoch.lock`. An election
/// holds it for about two fsyncs, so a short poll costs little.
const EPOCH_LOCK_POLL: Duration = Duration::from_micros(200);

/// What a follower saw in the directory: the raw epoch file and heartbeat
/// record. A takeover goes ahead only if they are still exactly this.
pub(crate) type Observed = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Being the leader: held by whoever won an election, released on drop.
///
/// Obtained from [`LeaderElection::try_acquire`](crate::LeaderElection::try_acquire).
/// While it lives, this process holds `leader.lock` (on Redis: the lease
/// key) and the epoch
/// [`epoch`](Self::epoch) is the fencing token to attach to its writes.
/// Nothing renews it in the background: call [`renew`](Self::renew) at
/// least every heartbeat interval, or followers take over once the lease
/// timeout passes (use [`LeaderElection::start`](crate::LeaderElection::start)
/// to have a thread do it). Dropping it, or [`resign`](Self::resign),
/// removes the heartbeat record and releases the lock, so a waiting
/// follower takes over at once.
pub struct Leadership {
    seat: Seat,
    record: Record,
}

/// Where the leadership is held.
enum Seat {
    File {
        dir: Dir,
        /// `leader.lock`, held; `None` after a takeover from a frozen
        /// leader that still holds it.
        lock: Option<LockFile>,
    },
    #[cfg(feature = "redis")]
    Redis {
        seat: Arc<RedisSeat>,
        lease: Duration,
    },
}

impl Leadership {
    /// The epoch this leadership was won with: the fencing token.
    pub fn epoch(&self) -> u64 {
        self.record.epoch
    }

    /// This leader as the heartbeat record describes it (the time is that
    /// of the last heartbeat written).
    pub fn info(&self) -> LeaderInfo {
        self.record.info()
    }

    /// Checks that no later election happened: re-reads the persisted epoch
    /// and returns this leadership's epoch if it is still the current one.
    /// Call it before acting as leader after any pause.
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`] with both epochs if a follower took over (this
    /// leader was frozen or too slow to renew); [`Error::Io`] if the epoch
    /// file cannot be read ([`Error::Backend`] if Redis cannot be reached).
    pub fn confirm(&self) -> Result<u64> {
        let current = self.place().epoch()?;
        if current == self.record.epoch {
            Ok(current)
        } else {
            Err(Error::NotLeader {
                epoch: Some(self.record.epoch),
                current: Some(current),
                leader: None,
            })
        }
    }

    /// Confirms the leadership (see [`confirm`](Self::confirm)) and writes a
    /// fresh heartbeat record. Call it at least every heartbeat interval.
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`] if a later epoch exists: this guard is then
    /// worthless and should be dropped. [`Error::Io`] if the epoch cannot
    /// be read or the record written ([`Error::Backend`] if Redis cannot be
    /// reached).
    pub fn renew(&mut self) -> Result<()> {
        match &self.seat {
            Seat::File { dir, .. } => {
                self.confirm()?;
                self.record.sequence += 1;
                self.record.heartbeat = SystemTime::now();
                dir.write_record(&self.record)
            }
            // One script confirms the epoch and extends the lease.
            #[cfg(feature = "redis")]
            Seat::Redis { seat, lease } => {
                let mut record = self.record.clone();
                record.sequence += 1;
                record.heartbeat = super::redis_seat::now_in_millis();
                let current = seat.renew(&record, *lease)?;
                if current != record.epoch {
                    return Err(Error::NotLeader {
                        epoch: Some(record.epoch),
                        current: Some(current),
                        leader: None,
                    });
                }
                self.record = record;
                Ok(())
            }
        }
    }

    /// Steps down: removes the heartbeat record (if still this epoch's) and
    /// releases the lock, so a follower waiting on it becomes leader at once.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the lock cannot be released; it is released anyway
    /// when the file closes, which happens here too. On Redis,
    /// [`Error::Backend`] if the lease cannot be deleted; it then expires by
    /// itself after the lease timeout.
    pub fn resign(mut self) -> Result<()> {
        self.release()
    }

    /// Whether this leader holds `leader.lock` (false after a takeover from
    /// a frozen leader, until that one lets go).
    /// Always true on Redis, where the lease is the only lock.
    pub(crate) fn holds_lock(&self) -> bool {
        match &self.seat {
            Seat::File { lock, .. } => lock.is_some(),
            #[cfg(feature = "redis")]
            Seat::Redis { .. } => true,
        }
    }

    /// Takes `leader.lock`, freed by the frozen leader this one deposed.
    pub(crate) fn adopt_lock(&mut self, adopted: LockFile) {
        match &mut self.seat {
            Seat::File { lock, .. } => *lock = Some(adopted),
            #[cfg(feature = "redis")]
            Seat::Redis { .. } => {}
        }
    }

    /// Where this leadership is held.
    pub(crate) fn place(&self) -> Place {
        match &self.seat {
            Seat::File { dir, .. } => Place::Dir(dir.clone()),
            #[cfg(feature = "redis")]
            Seat::Redis { seat, .. } => Place::Redis(Arc::clone(seat)),
        }
    }

    fn release(&mut self) -> Result<()> {
        match &mut self.seat {
            Seat::File { dir, lock } => {
                dir.remove_record(self.record.epoch);
                match lock.take() {
                    Some(mut lock) => Ok(lock.unlock()?),
                    None => Ok(()),
                }
            }
            #[cfg(feature = "redis")]
            Seat::Redis { seat, .. } => seat.release(self.record.epoch),
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!(error = %e, "releasing the leader lock failed");
        }
    }
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("place", &self.place())
            .field("epoch", &self.record.epoch)
            .field("instance_id", &self.record.instance_id)
            .field("holds_lock", &self.holds_lock())
            .finish()
    }
}

/// Runs an election: under `epoch.lock`, bumps the persisted epoch (fsynced
/// before anything else happens) and writes the first heartbeat record.
///
/// * `lock`: `leader.lock`, held, for the normal path; `None` for a takeover
///   from a frozen leader, which then requires `expected`: the directory must
///   still be exactly what the follower watched go stale, or another
///   candidate got there first and this one stands down.
/// * Waits at most `patience` for `epoch.lock`.
///
/// Returns `None` if the election did not happen (lock busy, or the
/// directory changed).
///
/// # Errors
///
/// [`Error::Io`] if a file cannot be read or written (a damaged heartbeat
/// record is no error: it is simply replaced).
pub(crate) fn elect(
    dir: &Dir,
    config: &ElectionConfig,
    lock: Option<LockFile>,
    expected: Option<&Observed>,
    patience: Duration,
) -> Result<Option<Leadership>> {
    let mut epoch_lock = LockFile::open(&dir.epoch_lock())?;
    let deadline = crate::clock::deadline_after(patience);
    while !epoch_lock.try_lock()? {
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(EPOCH_LOCK_POLL);
    }
    if let Some(expected) = expected {
        if dir.observe() != *expected {
            return Ok(None);
        }
    }
    let current = dir.epoch()?;
    let epoch = current.checked_add(1).ok_or_else(|| {
        Error::Io(std::io::Error::other(
            "the election epoch is at u64::MAX and cannot grow",
        ))
    })?;
    // The epoch is durable before the record announces it and before the
    // caller acts: a crash after this line burns the epoch, which is
    // harmless, while acting on an epoch that could be handed out again
    // would break fencing.
    dir.write_epoch(epoch)?;
    let record = Record {
        instance_id: config.instance_id().to_owned(),
        pid: std::process::id(),
        epoch,
        heartbeat: SystemTime::now(),
        sequence: 0,
    };
    dir.write_record(&record)?;
    drop(epoch_lock);
    tracing::info!(
        epoch,
        instance_id = config.instance_id(),
        takeover = lock.is_none(),
        "elected leader"
    );
    Ok(Some(Leadership {
        seat: Seat::File {
            dir: dir.clone(),
            lock,
        },
        record,
    }))
}

/// Runs an election on Redis (see `redis_seat.rs`): `None` if a lease is
/// held.
///
/// # Errors
///
/// [`Error::Backend`] if Redis cannot be reached.
#[cfg(feature = "redis")]
pub(crate) fn elect_on_redis(
    seat: &Arc<RedisSeat>,
    config: &ElectionConfig,
) -> Result<Option<Leadership>> {
    Ok(seat.elect(config)?.map(|record| Leadership {
        seat: Seat::Redis {
            seat: Arc::clone(seat),
            lease: config.lease(),
        },
        record,
    }))
}
