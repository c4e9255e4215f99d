//! The shared memory on Redis (cargo feature `redis`).
//!
//! # Layout
//!
//! Under the namespace `ns`:
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `ns:memory` | hash | field = the key; value = `"<version>:"` then the postcard bytes |
//! | `ns:memory:clock` | string | the global version, bumped by `INCR` on every write |
//! | `ns:memory:fence` | string | the greatest epoch [`fence`](super::SharedMemory::fence)d |
//! | `ns:memory:lock:<key>` | string | the token of an `update` in progress on that key, with a lease |
//!
//! Value and version live in one hash field, so a `get` is one `HGET` and
//! can never see the value of one write with the version of another.
//!
//! # Atomicity
//!
//! Every write is one Lua script, which Redis runs without interleaving:
//! check the fence (an epoch older than `ns:memory:fence` is refused with
//! [`Error::NotLeader`]), check the key's update lock, compare the version,
//! `INCR` the clock, write. `update` must run a Rust closure between its
//! read and its write, so it takes the key's lock first (`SET NX PX` with a
//! lease, in the same script that reads the value), calls the closure once,
//! and writes with a script that checks both the lock and the version it
//! read, and releases the lock. Other writers of a locked key wait (polling)
//! until it is released or its lease expires, so nothing comes between an
//! update's read and its write. Only a closure that outlives the lease (the
//! store's timeout) loses that guarantee; its write is then refused with
//! [`Error::Conflict`] rather than overwrite what came in between.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ::redis::Script;

use super::Version;
use super::backend::{Backend, conflict};
use crate::cluster::{Pool, RedisConfig, Retry, unexpected};
use crate::error::{Error, Result};

/// Stores the bytes under a fresh version if the fence, the lock and the
/// expected version allow.
/// KEYS: data, clock, fence, lock. ARGV: field, bytes, expected (`-`: any),
/// epoch, lock token (empty: none).
const WRITE: &str = r"
local fence = tonumber(redis.call('GET', KEYS[3]) or '0')
if fence > tonumber(ARGV[4]) then return 'fenced ' .. string.format('%d', fence) end
local holder = redis.call('GET', KEYS[4])
if holder and holder ~= ARGV[5] then return 'locked' end
local current = redis.call('HGET', KEYS[1], ARGV[1])
local version = 0
if current then version = tonumber(string.match(current, '^(%d+):')) end
if ARGV[3] ~= '-' and tonumber(ARGV[3]) ~= version then
  return 'conflict ' .. string.format('%d', version)
end
local next = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:', next) .. ARGV[2])
if ARGV[5] ~= '' then redis.call('DEL', KEYS[4]) end
return 'ok ' .. string.format('%d', next)
";

/// Removes the field if the fence, the lock and the expected version allow;
/// `ok 0` when there was nothing to remove.
/// KEYS: data, clock, fence, lock. ARGV: field, expected (`-`: any), epoch.
const REMOVE: &str = r"
local fence = tonumber(redis.call('GET', KEYS[3]) or '0')
if fence > tonumber(ARGV[3]) then return 'fenced ' .. string.format('%d', fence) end
if redis.call('EXISTS', KEYS[4]) == 1 then return 'locked' end
local current = redis.call('HGET', KEYS[1], ARGV[1])
local version = 0
if current then version = tonumber(string.match(current, '^(%d+):')) end
if ARGV[2] ~= '-' and tonumber(ARGV[2]) ~= version then
  return 'conflict ' .. string.format('%d', version)
end
if not current then return 'ok 0' end
local next = redis.call('INCR', KEYS[2])
redis.call('HDEL', KEYS[1], ARGV[1])
return 'ok ' .. string.format('%d', next)
";

/// Takes the key's update lock (or finds it already ours: a retried call)
/// and returns the current field: `ok` (absent) or `ok <version>:<bytes>`.
/// KEYS: data, fence, lock. ARGV: field, token, lease (ms), epoch.
const LOCK: &str = r"
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if fence > tonumber(ARGV[4]) then return 'fenced ' .. string.format('%d', fence) end
if redis.call('GET', KEYS[3]) ~= ARGV[2] then
  if not redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then return 'locked' end
end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then return 'ok ' .. current end
return 'ok'
";

/// Releases the update lock if it is still ours.
/// KEYS: lock. ARGV: token.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 'ok'
";

/// Raises the fence to the epoch, refusing an older one.
/// KEYS: fence. ARGV: epoch.
const FENCE: &str = r"
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
local epoch = tonumber(ARGV[1])
if epoch < fence then return 'fenced ' .. string.format('%d', fence) end
if epoch > fence then redis.call('SET', KEYS[1], ARGV[1]) end
return 'ok'
";

/// How long a writer polls between looks at a key locked by an update.
const LOCKED_POLL: Duration = Duration::from_micros(500);

/// What a script answered.
enum Reply {
    /// Done; the number (a version, or 0) and any bytes after it.
    Ok(u64, Vec<u8>),
    Conflict(Version),
    Fenced(u64),
    Locked,
}

pub(crate) struct RedisStore {
    pool: Pool,
    data: String,
    clock: String,
    fence: String,
    epoch: AtomicU64,
    scripts: Scripts,
}

struct Scripts {
    write: Script,
    remove: Script,
    lock: Script,
    unlock: Script,
    fence: Script,
}

impl RedisStore {
    /// Connects, and adopts the epoch the store is fenced at (0 if never),
    /// as opening a snapshot adopts the epoch it carries.
    ///
    /// # Errors
    ///
    /// As [`Pool::connect`]; [`Error::Backend`] if the fence cannot be read.
    pub(crate) fn connect(config: RedisConfig) -> Result<RedisStore> {
        let pool = Pool::connect(config, None)?;
        let store = RedisStore {
            data: pool.key("memory"),
            clock: pool.key("memory:clock"),
            fence: pool.key("memory:fence"),
            pool,
            epoch: AtomicU64::new(0),
            scripts: Scripts {
                write: Script::new(WRITE),
                remove: Script::new(REMOVE),
                lock: Script::new(LOCK),
                unlock: Script::new(UNLOCK),
                fence: Script::new(FENCE),
            },
        };
        let fence = store.fence_on_server()?;
        store.epoch.store(fence, Ordering::Release);
        Ok(store)
    }

    pub(crate) fn config(&self) -> &RedisConfig {
        self.pool.config()
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}:lock:{key}", self.data)
    }

    fn lease(&self) -> Duration {
        self.pool.config().command_timeout()
    }

    fn fence_on_server(&self) -> Result<u64> {
        let raw: Option<u64> =
            self.pool
                .run(Retry::Once, &|| "read the fence".to_owned(), |c| {
                    ::redis::cmd("GET").arg(&self.fence).query(c)
                })?;
        Ok(raw.unwrap_or(0))
    }

    fn not_leader(&self, current: u64) -> Error {
        Error::NotLeader {
            epoch: Some(self.epoch.load(Ordering::Acquire)),
            current: Some(current),
            leader: None,
        }
    }

    /// Runs a write script until no update holds the key (at most twice the
    /// lock lease: by then a dead updater's lock has expired).
    fn until_unlocked(
        &self,
        operation: &dyn Fn() -> String,
        retry: Retry,
        mut attempt: impl FnMut(&mut ::redis::Connection) -> ::redis::RedisResult<Vec<u8>>,
    ) -> Result<Reply> {
        let deadline = crate::clock::deadline_after(self.lease().saturating_mul(2));
        loop {
            let raw = self.pool.run(retry, operation, &mut attempt)?;
            match parse(&raw).ok_or_else(|| unexpected(&operation(), &lossy(&raw)))? {
                Reply::Locked if Instant::now() < deadline => thread::sleep(LOCKED_POLL),
                Reply::Locked => {
                    return Err(Error::Backend {
                        operation: format!("redis {}", operation()),
                        reason: "the key stayed locked by an update for twice its lease".into(),
                    });
                }
                Reply::Fenced(current) => return Err(self.not_leader(current)),
                reply => return Ok(reply),
            }
        }
    }

    /// The write half of `update`: stores `bytes` if the key is still at
    /// `read` and the lock still ours, releasing the lock.
    fn write_locked(&self, key: &str, bytes: &[u8], read: Version, token: &str) -> Result<Version> {
        let lock = self.lock_key(key);
        let epoch = self.epoch.load(Ordering::Acquire);
        let raw: Vec<u8> = self
            .pool
            .run(Retry::Never, &|| format!("update key {key:?}"), |c| {
                self.scripts
                    .write
                    .key(&self.data)
                    .key(&self.clock)
                    .key(&self.fence)
                    .key(&lock)
                    .arg(key)
                    .arg(bytes)
                    .arg(read.get())
                    .arg(epoch)
                    .arg(token)
                    .invoke(c)
            })?;
        match parse(&raw).ok_or_else(|| unexpected("update", &lossy(&raw)))? {
            Reply::Ok(version, _) => Ok(Version::new(version)),
            Reply::Fenced(current) => {
                // Refused before the script released the key's lock: release
                // it here, or the new leader waits a whole lease for it.
                self.unlock(key, token);
                Err(self.not_leader(current))
            }
            // The closure outlived the lease and another writer got in.
            Reply::Conflict(actual) => Err(conflict(key, read, actual)),
            Reply::Locked => {
                let actual = self
                    .read(key, |_, version| version)?
                    .unwrap_or(Version::NONE);
                Err(conflict(key, read, actual))
            }
        }
    }

    fn unlock(&self, key: &str, token: &str) {
        let lock = self.lock_key(key);
        let released: Result<Vec<u8>> =
            self.pool
                .run(Retry::Once, &|| format!("unlock key {key:?}"), |c| {
                    self.scripts.unlock.key(&lock).arg(token).invoke(c)
                });
        if let Err(e) = released {
            // The lease frees it anyway.
            tracing::warn!(error = %e, key, "could not release an update lock");
        }
    }
}

impl Backend for RedisStore {
    fn read<R>(&self, key: &str, f: impl FnOnce(&[u8], Version) -> R) -> Result<Option<R>> {
        let raw: Option<Vec<u8>> =
            self.pool
                .run(Retry::Once, &|| format!("get key {key:?}"), |c| {
                    ::redis::cmd("HGET").arg(&self.data).arg(key).query(c)
                })?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let (version, bytes) = split_field(&raw)
            .ok_or_else(|| unexpected(&format!("get key {key:?}"), &lossy(&raw)))?;
        Ok(Some(f(bytes, version)))
    }

    fn contains(&self, key: &str) -> Result<bool> {
        self.pool
            .run(Retry::Once, &|| format!("check key {key:?}"), |c| {
                ::redis::cmd("HEXISTS").arg(&self.data).arg(key).query(c)
            })
    }

    fn write(&self, key: &str, bytes: Vec<u8>, expected: Option<Version>) -> Result<Version> {
        let lock = self.lock_key(key);
        let expected_arg = expected.map_or_else(|| "-".to_owned(), |v| v.get().to_string());
        let epoch = self.epoch.load(Ordering::Acquire);
        let reply = self.until_unlocked(&|| format!("write key {key:?}"), Retry::Never, |c| {
            self.scripts
                .write
                .key(&self.data)
                .key(&self.clock)
                .key(&self.fence)
                .key(&lock)
                .arg(key)
                .arg(&bytes[..])
                .arg(&expected_arg)
                .arg(epoch)
                .arg("")
                .invoke(c)
        })?;
        match reply {
            Reply::Ok(version, _) => Ok(Version::new(version)),
            Reply::Conflict(actual) => Err(conflict(key, expected.unwrap_or_default(), actual)),
            Reply::Fenced(_) | Reply::Locked => Err(unexpected("write", "refusal")),
        }
    }

    fn update<R>(
        &self,
        key: &str,
        f: impl FnOnce(Option<&[u8]>) -> Result<(Vec<u8>, R)>,
    ) -> Result<(R, Version)> {
        let token = token();
        let lock = self.lock_key(key);
        let lease = self.lease().as_millis().to_string();
        let epoch = self.epoch.load(Ordering::Acquire);
        let reply = self.until_unlocked(&|| format!("lock key {key:?}"), Retry::Once, |c| {
            self.scripts
                .lock
                .key(&self.data)
                .key(&self.fence)
                .key(&lock)
                .arg(key)
                .arg(&token)
                .arg(&lease)
                .arg(epoch)
                .invoke(c)
        })?;
        let Reply::Ok(_, field) = reply else {
            return Err(unexpected("lock", "refusal"));
        };
        let current = if field.is_empty() {
            None
        } else {
            Some(split_field(&field).ok_or_else(|| unexpected("lock", &lossy(&field)))?)
        };
        let read = current.map_or(Version::NONE, |(version, _)| version);
        let (bytes, output) = match f(current.map(|(_, bytes)| bytes)) {
            Ok(done) => done,
            Err(e) => {
                self.unlock(key, &token);
                return Err(e);
            }
        };
        let version = self.write_locked(key, &bytes, read, &token)?;
        Ok((output, version))
    }

    fn remove(&self, key: &str, expected: Option<Version>) -> Result<bool> {
        let lock = self.lock_key(key);
        let expected_arg = expected.map_or_else(|| "-".to_owned(), |v| v.get().to_string());
        let epoch = self.epoch.load(Ordering::Acquire);
        let reply = self.until_unlocked(&|| format!("delete key {key:?}"), Retry::Never, |c| {
            self.scripts
                .remove
                .key(&self.data)
                .key(&self.clock)
                .key(&self.fence)
                .key(&lock)
                .arg(key)
                .arg(&expected_arg)
                .arg(epoch)
                .invoke(c)
        })?;
        match reply {
            Reply::Ok(version, _) => Ok(version != 0),
            Reply::Conflict(actual) => Err(conflict(key, expected.unwrap_or_default(), actual)),
            Reply::Fenced(_) | Reply::Locked => Err(unexpected("delete", "refusal")),
        }
    }

    fn len(&self) -> Result<usize> {
        self.pool
            .run(Retry::Once, &|| "count keys".to_owned(), |c| {
                ::redis::cmd("HLEN").arg(&self.data).query(c)
            })
    }

    fn keys(&self) -> Result<Vec<String>> {
        self.pool.run(Retry::Once, &|| "list keys".to_owned(), |c| {
            ::redis::cmd("HKEYS").arg(&self.data).query(c)
        })
    }

    fn version(&self) -> Result<Version> {
        let raw: Option<u64> =
            self.pool
                .run(Retry::Once, &|| "read the global version".to_owned(), |c| {
                    ::redis::cmd("GET").arg(&self.clock).query(c)
                })?;
        Ok(Version::new(raw.unwrap_or(0)))
    }

    fn fence(&self, epoch: u64) -> Result<()> {
        let raw: Vec<u8> = self
            .pool
            .run(Retry::Once, &|| format!("fence epoch {epoch}"), |c| {
                self.scripts.fence.key(&self.fence).arg(epoch).invoke(c)
            })?;
        match parse(&raw).ok_or_else(|| unexpected("fence", &lossy(&raw)))? {
            Reply::Ok(..) => {
                self.epoch.fetch_max(epoch, Ordering::AcqRel);
                Ok(())
            }
            Reply::Fenced(current) => Err(Error::NotLeader {
                epoch: Some(epoch),
                current: Some(current),
                leader: None,
            }),
            Reply::Conflict(_) | Reply::Locked => Err(unexpected("fence", &lossy(&raw))),
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Every write is already in Redis when it returns; how durable Redis
    /// makes it is its `appendfsync` setting. What is left to check is the
    /// fence, as the file backend's `persist` does.
    fn persist(&self) -> Result<()> {
        let current = self.fence_on_server()?;
        if current > self.epoch.load(Ordering::Acquire) {
            Err(self.not_leader(current))
        } else {
            Ok(())
        }
    }

    fn write_batch(&self, writes: Vec<(String, Option<Vec<u8>>)>) -> Result<()> {
        for (key, value) in writes {
            match value {
                Some(bytes) => {
                    self.write(&key, bytes, None)?;
                }
                None => {
                    self.remove(&key, None)?;
                }
            }
        }
        Ok(())
    }

    fn entries(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let raw: Vec<(String, Vec<u8>)> =
            self.pool
                .run(Retry::Once, &|| "read every key".to_owned(), |c| {
                    ::redis::cmd("HGETALL").arg(&self.data).query(c)
                })?;
        raw.into_iter()
            .map(|(key, field)| {
                let (_, bytes) = split_field(&field)
                    .ok_or_else(|| unexpected("read every key", &lossy(&field)))?;
                Ok((key, bytes.to_vec()))
            })
            .collect()
    }
}

/// Splits a stored field, `"<version>:<bytes>"`.
fn split_field(field: &[u8]) -> Option<(Version, &[u8])> {
    let colon = field.iter().position(|&b| b == b':')?;
    let version = std::str::from_utf8(&field[..colon]).ok()?.parse().ok()?;
    Some((Version::new(version), &field[colon + 1..]))
}

/// Parses `ok [N[ rest]]`, `conflict N`, `fenced N` or `locked`.
fn parse(raw: &[u8]) -> Option<Reply> {
    let (word, rest) = match raw.iter().position(|&b| b == b' ') {
        Some(space) => (&raw[..space], &raw[space + 1..]),
        None => (raw, &[][..]),
    };
    let number = |bytes: &[u8]| -> Option<u64> { std::str::from_utf8(bytes).ok()?.parse().ok() };
    match word {
        b"ok" if rest.is_empty() => Some(Reply::Ok(0, Vec::new())),
        // `ok <version>` from a write, `ok <version>:<bytes>` from a lock.
        b"ok" => match number(rest) {
            Some(n) => Some(Reply::Ok(n, Vec::new())),
            None => Some(Reply::Ok(0, rest.to_vec())),
        },
        b"conflict" => number(rest).map(|n| Reply::Conflict(Version::new(n))),
        b"fenced" => number(rest).map(Reply::Fenced),
        b"locked" => Some(Reply::Locked),
        _ => None,
    }
}

fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(&raw[..raw.len().min(64)]).into_owned()
}

/// A token no other update, in this process or another, uses: the pid, a
/// per-process random number and a counter.
fn token() -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::OnceLock;
    static NONCE: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nonce = NONCE.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{nonce:x}-{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        assert!(matches!(parse(b"ok 12"), Some(Reply::Ok(12, b)) if b.is_empty()));
        assert!(matches!(parse(b"ok"), Some(Reply::Ok(0, b)) if b.is_empty()));
        assert!(matches!(parse(b"ok 7:\x01\x02"), Some(Reply::Ok(0, b)) if b == b"7:\x01\x02"));
        assert!(matches!(parse(b"conflict 3"), Some(Reply::Conflict(v)) if v == Version::new(3)));
        assert!(matches!(parse(b"fenced 9"), Some(Reply::Fenced(9))));
        assert!(matches!(parse(b"locked"), Some(Reply::Locked)));
        assert!(parse(b"what").is_none());
        assert!(parse(b"conflict x").is_none());
    }

    #[test]
    fn fields_split_into_version_and_bytes() {
        assert_eq!(
            split_field(b"42:\x00:x"),
            Some((Version::new(42), &b"\x00:x"[..]))
        );
        assert_eq!(split_field(b"nope"), None);
        assert_eq!(split_field(b"x:1"), None);
    }

    #[test]
    fn tokens_are_unique() {
        assert_ne!(token(), token());
    }
}
