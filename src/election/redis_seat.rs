//! The election on Redis (cargo feature `redis`).
//!
//! # Protocol
//!
//! Under the namespace `ns`:
//!
//! | key | what |
//! | --- | --- |
//! | `ns:election:epoch` | the epoch, raised by `INCR` at every election: the fencing token |
//! | `ns:election:leader` | the lease: the leader's epoch, expiring after the lease timeout (`PX`) |
//! | `ns:election:record` | the heartbeat record (a hash: instance id, pid, epoch, heartbeat time), same expiry |
//!
//! * **Election.** One script: if no lease exists, `INCR` the epoch, set
//!   the lease to it (`PX` lease timeout) and write the record. Redis runs
//!   scripts one at a time, so two candidates can never both win.
//! * **Renewal.** One script checks that the epoch is still the leader's
//!   own and that no other lease exists, then extends the lease and the
//!   record. A later epoch means a follower took over: the leader is
//!   deposed and steps down ([`ElectionEvent::Demoted`](super::ElectionEvent)).
//! * **Frozen leader.** Its lease expires in Redis by itself after the lease
//!   timeout (measured on the server's clock, so no two hosts' clocks are
//!   compared); a follower's next attempt wins under a greater epoch. The
//!   frozen leader stops answering [`is_leader`](super::ElectionHandle::is_leader)
//!   once its last renewal is older than the lease minus one heartbeat, and
//!   its first renewal after the pause finds the greater epoch. Its writes
//!   to a Redis [`SharedMemory`](crate::SharedMemory) fenced by the new
//!   leader are refused.
//! * **Takeover delay.** Followers try every retry interval, so a leader
//!   that resigns (its lease deleted) is replaced within one retry interval,
//!   and one that dies within the lease timeout plus one retry interval.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::Script;

use super::config::ElectionConfig;
use super::record::Record;
use crate::cluster::{Pool, RedisConfig, Retry};
use crate::error::Result;

/// Elects if no lease exists; returns the new epoch, or 0.
/// KEYS: epoch, leader, record. ARGV: lease (ms), instance id, pid, now (ms).
const ELECT: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local epoch = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], epoch, 'PX', ARGV[1])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'instance_id', ARGV[2], 'pid', ARGV[3], 'epoch', epoch, 'heartbeat_ms', ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
return epoch
";

/// Extends the lease if the epoch is still ours; returns the current epoch
/// (ours when renewed).
/// KEYS: epoch, leader, record. ARGV: our epoch, lease (ms), now (ms),
/// instance id, pid.
const RENEW: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current ~= tonumber(ARGV[1]) then return current end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return current end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[3], 'instance_id', ARGV[4], 'pid', ARGV[5], 'epoch', ARGV[1], 'heartbeat_ms', ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return current
";

/// Deletes the lease and the record if they are still ours.
/// KEYS: leader, record. ARGV: our epoch.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
end
return 0
";

/// The election keys of one namespace on one server.
pub(crate) struct RedisSeat {
    pool: Pool,
    epoch: String,
    leader: String,
    record: String,
    elect: Script,
    renew: Script,
    release: Script,
}

impl RedisSeat {
    /// Commands take at most `timeout` once connected.
    ///
    /// # Errors
    ///
    /// As [`Pool::connect`].
    pub(crate) fn connect(config: RedisConfig, timeout: Duration) -> Result<RedisSeat> {
        let pool = Pool::connect(config, Some(timeout))?;
        Ok(RedisSeat {
            epoch: pool.key("election:epoch"),
            leader: pool.key("election:leader"),
            record: pool.key("election:record"),
            pool,
            elect: Script::new(ELECT),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
        })
    }

    pub(crate) fn config(&self) -> &RedisConfig {
        self.pool.config()
    }

    /// Runs one election: the new leader's record if this candidate won,
    /// `None` if a lease is held.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) if Redis cannot be reached;
    /// the election is then not retried (a lost reply could hide a win,
    /// whose lease simply expires).
    pub(crate) fn elect(&self, config: &ElectionConfig) -> Result<Option<Record>> {
        let now = now_in_millis();
        let pid = std::process::id();
        let epoch: u64 = self
            .pool
            .run(Retry::Never, &|| "run an election".to_owned(), |c| {
                self.elect
                    .key(&self.epoch)
                    .key(&self.leader)
                    .key(&self.record)
                    .arg(millis(config.lease()))
                    .arg(config.instance_id())
                    .arg(pid)
                    .arg(millis_since_epoch(now))
                    .invoke(c)
            })?;
        if epoch == 0 {
            return Ok(None);
        }
        tracing::info!(
            epoch,
            instance_id = config.instance_id(),
            "elected leader on redis"
        );
        Ok(Some(Record {
            instance_id: config.instance_id().to_owned(),
            pid,
            epoch,
            heartbeat: now,
            sequence: 0,
        }))
    }

    /// Extends the lease of `record`'s leadership; returns the current
    /// epoch, which is `record.epoch` if renewed and greater if deposed.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) if Redis cannot be reached.
    pub(crate) fn renew(&self, record: &Record, lease: Duration) -> Result<u64> {
        self.pool.run(
            Retry::Once,
            &|| format!("renew the lease of epoch {}", record.epoch),
            |c| {
                self.renew
                    .key(&self.epoch)
                    .key(&self.leader)
                    .key(&self.record)
                    .arg(record.epoch)
                    .arg(millis(lease))
                    .arg(millis_since_epoch(record.heartbeat))
                    .arg(&record.instance_id)
                    .arg(record.pid)
                    .invoke(c)
            },
        )
    }

    /// Deletes the lease of `epoch`, if still held, so a follower takes over
    /// at its next try.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) if Redis cannot be reached;
    /// the lease then expires by itself.
    pub(crate) fn release(&self, epoch: u64) -> Result<()> {
        self.pool.run(
            Retry::Once,
            &|| format!("release the lease of epoch {epoch}"),
            |c| {
                self.release
                    .key(&self.leader)
                    .key(&self.record)
                    .arg(epoch)
                    .invoke::<i64>(c)
            },
        )?;
        Ok(())
    }

    /// The current epoch (0 before the first election).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) if Redis cannot be reached.
    pub(crate) fn epoch(&self) -> Result<u64> {
        let epoch: Option<u64> =
            self.pool
                .run(Retry::Once, &|| "read the epoch".to_owned(), |c| {
                    ::redis::cmd("GET").arg(&self.epoch).query(c)
                })?;
        Ok(epoch.unwrap_or(0))
    }

    /// The heartbeat record of the leader whose lease is live, if any. A
    /// record that does not parse (written by something else) is none.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) if Redis cannot be reached.
    pub(crate) fn record(&self) -> Result<Option<Record>> {
        let fields: Vec<(String, String)> = self.pool.run(
            Retry::Once,
            &|| "read the heartbeat record".to_owned(),
            |c| ::redis::cmd("HGETALL").arg(&self.record).query(c),
        )?;
        if fields.is_empty() {
            return Ok(None);
        }
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let parsed = (|| {
            Some(Record {
                instance_id: field("instance_id")?.to_owned(),
                pid: field("pid")?.parse().ok()?,
                epoch: field("epoch")?.parse().ok()?,
                heartbeat: UNIX_EPOCH + Duration::from_millis(field("heartbeat_ms")?.parse().ok()?),
                sequence: 0,
            })
        })();
        if parsed.is_none() {
            tracing::warn!(?fields, "ignoring a damaged heartbeat record on redis");
        }
        Ok(parsed)
    }
}

impl std::fmt::Debug for RedisSeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSeat")
            .field("url", &self.config().url())
            .field("namespace", &self.config().namespace_prefix())
            .finish()
    }
}

/// The wall clock to the millisecond, the precision the record keeps, so a
/// leader's own record reads back equal.
pub(crate) fn now_in_millis() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis_since_epoch(SystemTime::now()))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn millis_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
