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
//! `docs/MEMORY.md` describes the file formats byte by byte and argues why a
//! crash at any point leaves a consistent store.

mod codec;
mod durability;
mod files;
mod journal;
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

use self::durability::Periodic;
use self::store::{Action, Store};
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
/// [`in_memory`](Self::in_memory) lives as long as its last handle.
#[derive(Clone)]
pub struct SharedMemory {
    handle: Arc<Handle>,
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
        SharedMemory {
            handle: Arc::new(Handle {
                store: RwLock::new(Arc::new(Store::in_memory())),
                path: OnceLock::new(),
                periodic: None,
            }),
        }
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
        Ok(SharedMemory {
            handle: Arc::new(Handle {
                store: RwLock::new(store),
                path: OnceLock::from(path.as_ref().to_path_buf()),
                periodic,
            }),
        })
    }

    fn store(&self) -> MappedRwLockReadGuard<'_, Store> {
        // Recursive: a closure given to `update` may read the store again
        // while a swap waits for the lock.
        RwLockReadGuard::map(self.handle.store.read_recursive(), |store| &**store)
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
        debug_assert!(self.handle.periodic.is_none(), "reopen of a periodic store");
        let store = Arc::new(Store::open(path, Durability::Journal)?);
        let _ = self.handle.path.set(path.to_path_buf());
        *self.handle.store.write() = store;
        Ok(())
    }

    /// Swaps an empty in-memory store in under this handle: a deposed leader
    /// stops touching the files, which now belong to the new leader.
    pub(crate) fn detach(&self) {
        *self.handle.store.write() = Arc::new(Store::in_memory());
    }

    /// Writes (`Some`) or deletes (`None`) every key given, then waits once
    /// for the journal fsync covering the last: a batch of N writes costs
    /// one group commit, not N. Each key gets a fresh version in order.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the journal write fails (the writes are applied in
    /// memory but may not be durable).
    pub(crate) fn write_batch(&self, writes: Vec<(String, Option<Vec<u8>>)>) -> Result<()> {
        self.store().write_batch(writes)
    }

    /// Every key with its encoded value.
    pub(crate) fn entries(&self) -> Vec<(String, Vec<u8>)> {
        self.store().entries()
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
        self.store()
            .read(key, |entry| {
                codec::decode(&entry.bytes).map(|value| Versioned {
                    value,
                    version: entry.version,
                })
            })
            .transpose()
    }

    /// The version of `key`, or [`Version::NONE`] if it is absent; cheaper
    /// than [`get`](Self::get) when the value is not needed.
    pub fn version_of(&self, key: &str) -> Version {
        self.store()
            .read(key, |entry| entry.version)
            .unwrap_or(Version::NONE)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.store().read(key, |_| ()).is_some()
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
        let ((), version) = self.store().mutate(key, |entry| {
            let actual = entry.map_or(Version::NONE, |e| e.version);
            if actual == expected {
                Ok((Action::Write(bytes), ()))
            } else {
                Err(conflict(key, expected, actual))
            }
        })?;
        Ok(version)
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
        let ((), version) = self
            .store()
            .mutate(key, |_| Ok((Action::Write(bytes), ())))?;
        Ok(version)
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
        let (value, version) = self.store().mutate(key, |entry| {
            let current = entry.map(|e| codec::decode::<T>(&e.bytes)).transpose()?;
            let value = f(current);
            Ok((Action::Write(codec::encode(&value)?), value))
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
        let (value, _) = self.store().mutate(key, |entry| {
            let current = entry.map_or(Ok(0), |e| codec::decode::<i64>(&e.bytes))?;
            let value = current.checked_add(delta).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "incrementing key {key:?} at {current} by {delta} overflows an i64"
                ))
            })?;
            Ok((Action::Write(codec::encode(&value)?), value))
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
        let (present, _) = self.store().mutate(key, |entry| {
            Ok(match entry {
                Some(_) => (Action::Remove, true),
                None => (Action::Keep, false),
            })
        })?;
        Ok(present)
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
        let (removed, _) = self.store().mutate(key, |entry| {
            let actual = entry.map_or(Version::NONE, |e| e.version);
            if actual != expected {
                Err(conflict(key, expected, actual))
            } else if actual.is_none() {
                Ok((Action::Keep, false))
            } else {
                Ok((Action::Remove, true))
            }
        })?;
        Ok(removed)
    }

    /// The number of keys. Under concurrent writes it is a moment's count,
    /// summed shard by shard.
    pub fn len(&self) -> usize {
        self.store().len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> Vec<String> {
        self.store().keys()
    }

    /// The global version: the version of the newest write, or
    /// [`Version::NONE`] if the store was never written.
    pub fn version(&self) -> Version {
        self.store().version()
    }

    /// The durability of a persisted store; `None` in memory.
    pub fn durability(&self) -> Option<Durability> {
        self.store().durability()
    }

    /// The snapshot file of a persisted store; `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.handle.path.get().map(PathBuf::as_path)
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
        self.store().fence(epoch)
    }

    /// The fencing epoch this store writes under: the last one
    /// [`fence`](Self::fence)d, else the one its snapshot carried when it was
    /// opened (0 without election, and in memory).
    pub fn epoch(&self) -> u64 {
        self.store().epoch()
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
        self.store().persist()
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("keys", &self.len())
            .field("version", &self.version())
            .field("path", &self.path())
            .field("durability", &self.durability())
            .field("epoch", &self.epoch())
            .finish()
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

fn conflict(key: &str, expected: Version, actual: Version) -> Error {
    Error::Conflict {
        key: key.to_owned(),
        expected,
        actual,
    }
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
