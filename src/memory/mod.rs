//! The seed's SHARED MEMORY: a versioned key/value store with optimistic
//! locking, shared by every agent of a process.
//!
//! # Design
//!
//! * **Shards.** Keys are spread by hash over 64 shards, each a
//!   `parking_lot::RwLock<HashMap<String, Entry>>` on its own cache line. A
//!   `get` hashes the key, read-locks one shard and decodes; a write
//!   write-locks one shard. No lock covers the whole store, so threads on
//!   different keys do not wait for each other.
//! * **Versions.** One atomic counter numbers every write (put, set, update,
//!   increment, delete) with a fresh, strictly increasing [`Version`], like
//!   etcd's revision; each key keeps the version of its last write. The
//!   counter is bumped under the key's shard lock, so one key's versions grow
//!   in the order its writes happen. Optimistic locking compares these.
//! * **Values** are stored postcard-encoded and decoded on every read, so
//!   readers never share a value with writers.
//! * **Persistence** (see [`Durability`]): a snapshot of the whole store
//!   written through a memory map and replaced atomically (`snapshot.rs`),
//!   and in Journal mode an fsynced, group-committed journal of every write
//!   (`journal.rs`), folded into the next snapshot.
//! * **Fencing.** Snapshots and journals carry the writer's fencing epoch (0
//!   while no election is configured). A new leader calls
//!   [`SharedMemory::fence`] with its election epoch; from then on a deposed
//!   leader's snapshot is refused with [`Error::NotLeader`] and its journal
//!   records are skipped at the next open.
//!
//! * **Backends.** The store above is the embedded default. With the
//!   `redis` feature, [`SharedMemory::redis`] keeps the same contract on a
//!   Redis server (`redis_store.rs`), so processes on several hosts share
//!   one store. Both implement one internal trait (`backend.rs`), called
//!   without dynamic dispatch.
//!
//! `docs/MEMORY.md` describes the file formats byte by byte and argues why a
//! crash at any point leaves a consistent store.

mod backend;
mod codec;
mod durability;
mod files;
mod journal;
#[cfg(feature = "redis")]
mod redis_store;
mod shard;
mod snapshot;
mod store;
mod version;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;

use self::backend::Backend;
use self::durability::Periodic;
use self::store::Store;
use crate::error::{Error, Result};

pub use durability::Durability;
pub use version::{Version, Versioned};

/// A thread-safe, versioned key/value store with optimistic locking, shared
/// by cloning (every clone is the same store).
///
/// Keys are non-empty strings; values are any serde type, stored
/// postcard-encoded. Every write gives its key a fresh [`Version`], greater
/// than every version before it. [`get`](Self::get) returns the value with
/// its version, and [`set`](Self::set) writes only if the key is still at the
/// version the writer read, so two agents cannot silently overwrite each
/// other:
///
/// ```
/// use agentry::{Error, SharedMemory, Version};
///
/// let memory = SharedMemory::in_memory();
/// memory.put("plan", &"draft")?;
///
/// // Two agents read the same version...
/// let mine = memory.get::<String>("plan")?.expect("just written");
/// let theirs = memory.get::<String>("plan")?.expect("just written");
///
/// // ...the first write wins and gets a new version...
/// let v2 = memory.set("plan", &"reviewed", mine.version)?;
/// assert!(v2 > mine.version);
///
/// // ...and the second is refused, naming the version it has to read again.
/// match memory.set("plan", &"rejected", theirs.version) {
///     Err(Error::Conflict { expected, actual, .. }) => {
///         assert_eq!(expected, theirs.version);
///         assert_eq!(actual, v2);
///     }
///     other => panic!("expected a conflict, got {other:?}"),
/// }
///
/// // Version::NONE means "create only if absent".
/// assert!(memory.set("plan", &"again", Version::NONE).unwrap_err().is_conflict());
/// # Ok::<(), Error>(())
/// ```
///
/// A store opened with [`open`](Self::open) lives in a snapshot file and
/// survives restarts as its [`Durability`] says; one made with
/// [`in_memory`](Self::in_memory) lives as long as its last handle; one made
/// with `SharedMemory::redis` (cargo feature `redis`) lives on a Redis server
/// and is shared by every process, on any host, that connects to it.
#[derive(Clone)]
pub struct SharedMemory {
    inner: Arc<Inner>,
}

/// The backends. An enum rather than a trait object, so the in-process
/// `get` is a predictable branch away from its shard, not a virtual call.
enum Inner {
    Local(Handle),
    #[cfg(feature = "redis")]
    Redis(Box<redis_store::RedisStore>),
}

/// The in-process store seen only through the backend contract (its
/// inherent methods of the same names would otherwise be picked).
#[inline(always)]
fn as_backend(store: &Store) -> &impl Backend {
    store
}

/// Runs `$body` with `$backend` bound to the store behind `$memory`
/// (each arm monomorphised: static dispatch).
macro_rules! with_backend {
    ($memory:expr, |$backend:ident| $body:expr) => {
        match &*$memory.inner {
            Inner::Local(handle) => {
                let guard = handle.store();
                let $backend = as_backend(&guard);
                $body
            }
            #[cfg(feature = "redis")]
            Inner::Redis($backend) => $body,
        }
    };
}

/// What the last clone drops: it stops the snapshot thread, then writes the
/// final snapshot.
///
/// The store sits behind a lock only so that an orchestrator over a state
/// directory can swap a freshly opened store in under every clone at once
/// (on takeover) and swap it out again (when deposed). Readers take the lock
/// shared and never contend with each other; it is taken exclusively only for
/// those swaps.
struct Handle {
    store: RwLock<Arc<Store>>,
    /// The snapshot file, fixed by the first open (or reopen).
    path: OnceLock<PathBuf>,
    periodic: Option<Periodic>,
}

impl Handle {
    fn store(&self) -> MappedRwLockReadGuard<'_, Store> {
        // Recursive: a closure given to `update` may read the store again
        // while a swap waits for the lock.
        RwLockReadGuard::map(self.store.read_recursive(), |store| &**store)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(periodic) = self.periodic.take() {
            periodic.stop();
        }
        let store = self.store.get_mut();
        if store.changed_since_persist() {
            if let Err(e) = store.persist() {
                tracing::warn!(error = %e, "final snapshot of the shared memory failed");
            }
        }
    }
}

impl SharedMemory {
    /// A new, empty store that lives in memory only.
    pub fn in_memory() -> SharedMemory {
        SharedMemory::local(Handle {
            store: RwLock::new(Arc::new(Store::in_memory())),
            path: OnceLock::new(),
            periodic: None,
        })
    }

    fn local(handle: Handle) -> SharedMemory {
        SharedMemory {
            inner: Arc::new(Inner::Local(handle)),
        }
    }

    /// Connects to the store kept on the Redis server `config` names (a URL
    /// such as `"redis://10.0.0.5:6379/0"`, or a
    /// [`RedisConfig`](crate::RedisConfig) with a namespace and timeout).
    /// Every handle connected to the same server and namespace, in any
    /// process on any host, is the same store, with the same contract as the
    /// in-process one: versions from one global counter (`INCR`), `set`,
    /// `update`, `increment` and `delete` atomic (Lua scripts), fencing by
    /// leader epoch.
    ///
    /// The differences are the ones a network brings:
    ///
    /// * Every operation is a round trip (`update` and `increment` two), and
    ///   may fail with [`Error::Backend`] when the server cannot be reached
    ///   within the timeout; a failed write may or may not have been applied.
    ///   The operations that return no `Result` ([`len`](Self::len),
    ///   [`keys`](Self::keys), [`contains_key`](Self::contains_key),
    ///   [`version_of`](Self::version_of), [`version`](Self::version)) log
    ///   such a failure and answer as for an empty store.
    /// * Durability is Redis': a write is acknowledged once Redis applied
    ///   it, and survives a Redis crash as its `appendonly` and
    ///   `appendfsync` settings say (`appendfsync always` for every write).
    ///   [`persist`](Self::persist) only checks the fence;
    ///   [`durability`](Self::durability) and [`path`](Self::path) are
    ///   `None`.
    /// * Fencing is checked by every write, not only by `persist`: once a
    ///   newer leader has [`fence`](Self::fence)d the store, a write from a
    ///   handle fenced at an older epoch fails with [`Error::NotLeader`].
    ///   A new handle adopts the epoch the store is fenced at.
    ///
    /// ```no_run
    /// use agentry::{RedisConfig, SharedMemory};
    ///
    /// let memory = SharedMemory::redis(RedisConfig::new("redis://127.0.0.1:6379/").namespace("app"))?;
    /// memory.put("plan", &"draft")?;
    /// assert_eq!(memory.get::<String>("plan")?.unwrap().value, "draft");
    /// # Ok::<(), agentry::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a URL that cannot be parsed, an empty
    /// namespace or a zero timeout; [`Error::Backend`] if the server cannot
    /// be reached within the timeout.
    #[cfg(feature = "redis")]
    pub fn redis(config: impl Into<crate::RedisConfig>) -> Result<SharedMemory> {
        let store = redis_store::RedisStore::connect(config.into())?;
        Ok(SharedMemory {
            inner: Arc::new(Inner::Redis(Box::new(store))),
        })
    }

    /// Opens the store persisted at `path` with the default durability,
    /// [`Durability::Periodic`] every second. See
    /// [`open_with`](Self::open_with).
    ///
    /// # Errors
    ///
    /// As [`open_with`](Self::open_with).
    pub fn open(path: impl AsRef<Path>) -> Result<SharedMemory> {
        SharedMemory::open_with(path, Durability::default())
    }

    /// Opens the store persisted at `path`: loads the snapshot there (an
    /// absent file is a new, empty store), replays any journal beside it
    /// (`path.journal.N`) and folds it into a fresh snapshot. Every key comes
    /// back with exactly the version it had, and later writes get greater
    /// versions.
    ///
    /// Open one path from one store at a time; several processes coordinate
    /// through leader election.
    ///
    /// # Errors
    ///
    /// * [`Error::CorruptSnapshot`] if the file is not an intact snapshot of
    ///   this format (garbage, truncated, another format version, bad
    ///   checksum): nothing is loaded, and the file is left as it is.
    /// * [`Error::CorruptJournal`] if a journal record other than the last is
    ///   damaged (a torn last record is dropped: it was never acknowledged).
    /// * [`Error::InvalidInput`] if `path` does not name a file.
    /// * [`Error::InvalidConfig`] for `Durability::Periodic(Duration::ZERO)`.
    /// * [`Error::Io`] if a file cannot be read or written.
    pub fn open_with(path: impl AsRef<Path>, durability: Durability) -> Result<SharedMemory> {
        let store = Arc::new(Store::open(path.as_ref(), durability)?);
        let periodic = match durability {
            Durability::Periodic(period) => Some(Periodic::start(Arc::clone(&store), period)?),
            Durability::OnPersist | Durability::Journal => None,
        };
        Ok(SharedMemory::local(Handle {
            store: RwLock::new(store),
            path: OnceLock::from(path.as_ref().to_path_buf()),
            periodic,
        }))
    }

    /// The in-process handle; `None` on another backend.
    fn handle(&self) -> Option<&Handle> {
        match &*self.inner {
            Inner::Local(handle) => Some(handle),
            #[cfg(feature = "redis")]
            Inner::Redis(_) => None,
        }
    }

    /// Opens the store persisted at `path` in [`Durability::Journal`] mode
    /// and swaps it in under this handle, so every clone sees it at once; the
    /// store it replaces is dropped without a final snapshot. For a handle
    /// made with [`in_memory`](Self::in_memory) (no snapshot thread to
    /// retarget): the orchestrator's standby memory, loaded on takeover.
    ///
    /// # Errors
    ///
    /// As [`open_with`](Self::open_with); the current store stays in place.
    pub(crate) fn reopen(&self, path: &Path) -> Result<()> {
        let Some(handle) = self.handle() else {
            return Err(Error::InvalidConfig(
                "a shared memory on another backend cannot be reopened from a file".into(),
            ));
        };
        debug_assert!(handle.periodic.is_none(), "reopen of a periodic store");
        let store = Arc::new(Store::open(path, Durability::Journal)?);
        let _ = handle.path.set(path.to_path_buf());
        *handle.store.write() = store;
        Ok(())
    }

    /// Swaps an empty in-memory store in under this handle: a deposed leader
    /// stops touching the files, which now belong to the new leader.
    pub(crate) fn detach(&self) {
        if let Some(handle) = self.handle() {
            *handle.store.write() = Arc::new(Store::in_memory());
        }
    }

    /// Writes (`Some`) or deletes (`None`) every key given, then waits once
    /// for the journal fsync covering the last: a batch of N writes costs
    /// one group commit, not N. Each key gets a fresh version in order.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the journal write fails (the writes are applied in
    /// memory but may not be durable); [`Error::Backend`] on Redis.
    pub(crate) fn write_batch(&self, writes: Vec<(String, Option<Vec<u8>>)>) -> Result<()> {
        with_backend!(self, |backend| backend.write_batch(writes))
    }

    /// Every key with its encoded value.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] on Redis.
    pub(crate) fn entries(&self) -> Result<Vec<(String, Vec<u8>)>> {
        with_backend!(self, |backend| backend.entries())
    }

    /// Reads `key` as a `T`, with its version; `None` if the key is absent.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] if the stored value is not a `T` (postcard is not
    /// self-describing, so types with the same encoding, such as `u32` and
    /// `u64`, cannot be told apart); [`Error::InvalidInput`] for an empty key.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Versioned<T>>> {
        check_key(key)?;
        with_backend!(self, |backend| {
            backend
                .read(key, |bytes, version| {
                    codec::decode(bytes).map(|value| Versioned { value, version })
                })?
                .transpose()
        })
    }

    /// The version of `key`, or [`Version::NONE`] if it is absent; cheaper
    /// than [`get`](Self::get) when the value is not needed.
    pub fn version_of(&self, key: &str) -> Version {
        let version = with_backend!(self, |backend| backend.read(key, |_, version| version));
        logged("read the version of a key", version)
            .flatten()
            .unwrap_or(Version::NONE)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        let present = with_backend!(self, |backend| backend.contains(key));
        logged("check a key", present).unwrap_or(false)
    }

    /// Writes `value` under `key` only if the key is still at `expected`
    /// ([`Version::NONE`]: only if it is absent), and returns the new version.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] with the key's actual version if it is not at
    /// `expected`; nothing is written. [`Error::Codec`] if `value` cannot be
    /// encoded, [`Error::InvalidInput`] for an empty key, [`Error::Io`] if the
    /// journal write fails (Journal mode).
    pub fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        expected: Version,
    ) -> Result<Version> {
        check_key(key)?;
        let bytes = codec::encode(value)?;
        with_backend!(self, |backend| backend.write(key, bytes, Some(expected)))
    }

    /// Writes `value` under `key` whatever its version, and returns the new
    /// version.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] if `value` cannot be encoded, [`Error::InvalidInput`]
    /// for an empty key, [`Error::Io`] if the journal write fails.
    pub fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Version> {
        check_key(key)?;
        let bytes = codec::encode(value)?;
        with_backend!(self, |backend| backend.write(key, bytes, None))
    }

    /// Read-modify-write, atomic for `key`: calls `f` with the current value
    /// (`None` if absent) and stores what it returns, holding the key's shard
    /// lock throughout, so no other write to the key comes in between. `f`
    /// runs exactly once; it must not use this store (its shard is locked).
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] if the stored value is not a `T` (then `f` is not
    /// called and nothing changes) or the new one cannot be encoded;
    /// [`Error::InvalidInput`] for an empty key; [`Error::Io`] if the journal
    /// write fails.
    pub fn update<T, F>(&self, key: &str, mut f: F) -> Result<Versioned<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        check_key(key)?;
        let (value, version) = with_backend!(self, |backend| {
            backend.update(key, |bytes| {
                let current = bytes.map(codec::decode::<T>).transpose()?;
                let value = f(current);
                Ok((codec::encode(&value)?, value))
            })
        })?;
        Ok(Versioned { value, version })
    }

    /// Adds `delta` to the `i64` counter at `key` (created at 0) and returns
    /// the new value. Atomic, like [`update`](Self::update).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] if the sum overflows an `i64` (the counter is
    /// left as it was) or the key is empty; [`Error::Codec`] if the key holds
    /// something other than an integer; [`Error::Io`] if the journal write
    /// fails.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        check_key(key)?;
        let (value, _) = with_backend!(self, |backend| {
            backend.update(key, |bytes| {
                let current = bytes.map_or(Ok(0), codec::decode::<i64>)?;
                let value = current.checked_add(delta).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "incrementing key {key:?} at {current} by {delta} overflows an i64"
                    ))
                })?;
                Ok((codec::encode(&value)?, value))
            })
        })?;
        Ok(value)
    }

    /// Removes `key`; returns whether it was present. A removal takes a
    /// version of its own, so a key created again later gets a version greater
    /// than any it had.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an empty key; [`Error::Io`] if the journal
    /// write fails.
    pub fn delete(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        with_backend!(self, |backend| backend.remove(key, None))
    }

    /// Removes `key` only if it is at `expected`; returns whether something
    /// was removed. With [`Version::NONE`] it succeeds, removing nothing, if
    /// the key is absent.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] with the actual version if the key is not at
    /// `expected`; nothing is removed. [`Error::InvalidInput`] for an empty
    /// key; [`Error::Io`] if the journal write fails.
    pub fn delete_if(&self, key: &str, expected: Version) -> Result<bool> {
        check_key(key)?;
        with_backend!(self, |backend| backend.remove(key, Some(expected)))
    }

    /// The number of keys. Under concurrent writes it is a moment's count,
    /// summed shard by shard.
    pub fn len(&self) -> usize {
        logged("count keys", with_backend!(self, |backend| backend.len())).unwrap_or(0)
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> Vec<String> {
        logged("list keys", with_backend!(self, |backend| backend.keys())).unwrap_or_default()
    }

    /// The global version: the version of the newest write, or
    /// [`Version::NONE`] if the store was never written.
    pub fn version(&self) -> Version {
        let version = with_backend!(self, |backend| backend.version());
        logged("read the global version", version).unwrap_or(Version::NONE)
    }

    /// The durability of a persisted store; `None` in memory and on Redis
    /// (whose own settings decide).
    pub fn durability(&self) -> Option<Durability> {
        self.handle()?.store().durability()
    }

    /// The snapshot file of a persisted store; `None` in memory and on
    /// Redis.
    pub fn path(&self) -> Option<&Path> {
        self.handle()?.path.get().map(PathBuf::as_path)
    }

    /// Claims the store's files for the leader elected with `epoch` (the
    /// fencing token from [`LeaderElection`](crate::LeaderElection)): writes a
    /// snapshot carrying `epoch`, durable when this returns. From then on, a
    /// store holding an older epoch (a deposed leader, in this process or
    /// another) cannot replace the snapshot: its [`persist`](Self::persist)
    /// fails with [`Error::NotLeader`], and the journal generations it writes
    /// are skipped when the store is next opened. Call it right after opening
    /// the store on election, before any write. Does nothing in memory.
    ///
    /// ```
    /// use agentry::{Error, SharedMemory};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("memory.snap");
    /// let deposed = SharedMemory::open(&path)?;
    /// deposed.fence(1)?;
    ///
    /// let leader = SharedMemory::open(&path)?;
    /// leader.fence(2)?;
    /// deposed.put("late", &"write")?;
    /// assert!(matches!(
    ///     deposed.persist(),
    ///     Err(Error::NotLeader { epoch: Some(1), current: Some(2), .. })
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`] if `epoch` is older than this store's epoch or
    /// than the snapshot's on disk (nothing changes then); [`Error::Io`] if
    /// the snapshot cannot be written.
    pub fn fence(&self, epoch: u64) -> Result<()> {
        with_backend!(self, |backend| backend.fence(epoch))
    }

    /// The fencing epoch this store writes under: the last one
    /// [`fence`](Self::fence)d, else the one its snapshot carried when it was
    /// opened (0 without election, and in memory).
    pub fn epoch(&self) -> u64 {
        with_backend!(self, |backend| backend.epoch())
    }

    /// Writes a snapshot of the whole store; every write that returned before
    /// this call is durable when it returns. In Journal mode this also folds
    /// the journal into the snapshot. Does nothing for an in-memory store.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the snapshot cannot be written; the previous snapshot
    /// (and journal) remain intact and the store keeps working.
    /// [`Error::NotLeader`] if the snapshot on disk carries a greater fencing
    /// epoch than this store's: a newer leader [`fence`](Self::fence)d it, and
    /// this store may no longer write it.
    pub fn persist(&self) -> Result<()> {
        with_backend!(self, |backend| backend.persist())
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            Inner::Local(_) => f
                .debug_struct("SharedMemory")
                .field("keys", &self.len())
                .field("version", &self.version())
                .field("path", &self.path())
                .field("durability", &self.durability())
                .field("epoch", &self.epoch())
                .finish(),
            // No round trips (which could fail) just to print a handle.
            #[cfg(feature = "redis")]
            Inner::Redis(store) => f
                .debug_struct("SharedMemory")
                .field("redis", &store.config().url())
                .field("namespace", &store.config().namespace_prefix())
                .field("epoch", &self.epoch())
                .finish(),
        }
    }
}

/// Empty keys are refused: an empty key is almost always an unset variable,
/// and refusing it keeps such bugs from sharing one silent slot.
fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        Err(Error::InvalidInput(
            "shared memory keys must not be empty".into(),
        ))
    } else {
        Ok(())
    }
}

/// The value of an operation whose signature has no room for an error: a
/// backend failure (only possible on Redis) is logged and read as `None`.
fn logged<T>(operation: &str, result: Result<T>) -> Option<T> {
    result
        .inspect_err(|e| tracing::warn!(error = %e, "shared memory could not {operation}"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_sync_and_share_one_store() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SharedMemory>();
        let a = SharedMemory::in_memory();
        let b = a.clone();
        a.put("k", &1u8).unwrap();
        assert!(b.contains_key("k"));
    }

    #[test]
    fn empty_keys_are_refused() {
        let memory = SharedMemory::in_memory();
        assert!(matches!(memory.put("", &1), Err(Error::InvalidInput(_))));
        assert!(matches!(memory.get::<u8>(""), Err(Error::InvalidInput(_))));
        assert!(!memory.contains_key(""));
    }

    #[test]
    fn a_zero_period_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let result = SharedMemory::open_with(
            dir.path().join("m"),
            Durability::Periodic(std::time::Duration::ZERO),
        );
        assert!(matches!(result, Err(Error::InvalidConfig(_))));
    }
}
