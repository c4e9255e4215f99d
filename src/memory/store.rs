//! The store behind every handle: shards, the global version counter, and
//! (for a persisted store) its files, journal and snapshot bookkeeping.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::Version;
use super::durability::Durability;
use super::files::Files;
use super::journal::{self, Journal};
use super::shard::{Entry, Shards};
use super::snapshot::{self, Payload};
use crate::error::Result;

/// What a write decided to do with the key, seen under its shard lock.
#[derive(Debug)]
pub(crate) enum Action {
    /// Leave the key as it is (a refused or empty operation).
    Keep,
    /// Store these encoded bytes under a fresh version.
    Write(Vec<u8>),
    /// Remove the key; only returned for a key that exists.
    Remove,
}

#[derive(Debug)]
pub(crate) struct Store {
    shards: Shards,
    /// The global write counter: the version of the newest write. Bumped
    /// while the written key's shard is write-locked, so one key's versions
    /// increase in the order its writes apply.
    clock: AtomicU64,
    backing: Option<Backing>,
}

/// What one snapshot leaves for the next.
#[derive(Debug, Default)]
struct Persisting {
    /// Journal generations retired by a rotation whose snapshot has not been
    /// written yet (a failed snapshot leaves them for the next to delete).
    retired: Vec<u64>,
    /// The previous snapshot's encoding buffers. Keeping them costs memory
    /// about the size of the snapshot file, and makes the next snapshot
    /// encode into pages that are already mapped.
    buffers: Vec<Vec<u8>>,
}

/// The on-disk side of a persisted store.
#[derive(Debug)]
struct Backing {
    files: Files,
    durability: Durability,
    journal: Option<Journal>,
    /// Serialises snapshots, and holds what one snapshot leaves the next.
    persisting: Mutex<Persisting>,
    /// The global version covered by the newest durable snapshot.
    persisted: AtomicU64,
    /// The fencing epoch written into snapshots and new journal files.
    epoch: AtomicU64,
}

impl Backing {
    /// Deletes the retired journal generations, whose records the snapshot on
    /// disk covers.
    fn remove_retired(&self, persisting: &mut Persisting) {
        // No directory fsync: a retired journal that reappears after a crash
        // holds only records the snapshot covers, which replay skips.
        for generation in persisting.retired.drain(..) {
            let path = self.files.journal(generation);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete a compacted journal")
                }
            }
        }
    }
}

impl Store {
    pub(crate) fn in_memory() -> Store {
        Store {
            shards: Shards::new(),
            clock: AtomicU64::new(0),
            backing: None,
        }
    }

    /// Loads the snapshot and replays the journals beside it, folds any
    /// journal into a fresh snapshot, and opens a new journal generation in
    /// Journal mode.
    ///
    /// # Errors
    ///
    /// See [`SharedMemory::open_with`](crate::SharedMemory::open_with).
    pub(crate) fn open(path: &Path, durability: Durability) -> Result<Store> {
        let durability = durability.validate()?;
        let files = Files::new(path)?;
        let shards = Shards::new();
        let loaded = snapshot::load(&files, &shards)?;
        let covered = loaded.map_or(Version::NONE, |loaded| loaded.global);
        let epoch = loaded.map_or(0, |loaded| loaded.epoch);
        let mut newest = loaded.map_or(Version::NONE, |loaded| loaded.newest);
        let mut replayed_any = false;
        let journals = files.journals()?;
        for (index, (_, journal_path)) in journals.iter().enumerate() {
            let last = index + 1 == journals.len();
            let replayed =
                journal::replay(journal_path, last, covered, epoch, |version, key, value| {
                    let mut map = shards.for_key(key).write();
                    match value {
                        Some(bytes) => {
                            let bytes = bytes.to_vec();
                            map.insert(key.to_owned(), Entry { version, bytes });
                        }
                        None => {
                            map.remove(key);
                        }
                    }
                })?;
            tracing::debug!(path = %journal_path.display(), ?replayed, "journal replayed");
            newest = newest.max(replayed.max_version);
            replayed_any |= replayed.applied > 0 || replayed.dropped > 0 || replayed.fenced > 0;
        }
        let mut store = Store {
            shards,
            clock: AtomicU64::new(newest.get()),
            backing: Some(Backing {
                files,
                durability,
                journal: None,
                persisting: Mutex::new(Persisting {
                    retired: journals.iter().map(|(g, _)| *g).collect(),
                    buffers: Vec::new(),
                }),
                // What is on disk is what was loaded: nothing to snapshot yet
                // (a replayed journal is folded in just below).
                persisted: AtomicU64::new(newest.get()),
                epoch: AtomicU64::new(epoch),
            }),
        };
        if replayed_any {
            // Folding the journals in now means a torn tail is gone for good
            // and the next generation starts after a clean snapshot.
            store.persist()?;
        } else if let Some(backing) = &store.backing {
            // Journals holding nothing newer than the snapshot are redundant;
            // deleting them now keeps empty generations from piling up.
            backing.remove_retired(&mut backing.persisting.lock());
        }
        if let (Some(backing), Durability::Journal) = (store.backing.as_mut(), durability) {
            let generation = journals.last().map_or(1, |(g, _)| g + 1);
            backing.journal = Some(Journal::create(&backing.files, generation, epoch)?);
        }
        Ok(store)
    }

    /// Runs `f` on the key's entry under its shard's read lock.
    pub(crate) fn read<R>(&self, key: &str, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        self.shards.for_key(key).read().get(key).map(f)
    }

    /// The one write path. `decide` sees the key's entry under its shard's
    /// write lock and says what to do; the action then gets a fresh version,
    /// its journal record (Journal mode) and its place in the map before the
    /// lock is released. Returns `decide`'s output and the new version
    /// ([`Version::NONE`] for [`Action::Keep`]), after the journal fsync.
    ///
    /// # Errors
    ///
    /// Whatever `decide` returns (nothing is changed then), or a journal
    /// error (the write is then applied in memory but may not be durable).
    pub(crate) fn mutate<R>(
        &self,
        key: &str,
        decide: impl FnOnce(Option<&Entry>) -> Result<(Action, R)>,
    ) -> Result<(R, Version)> {
        let journal = self.backing.as_ref().and_then(|b| b.journal.as_ref());
        let mut map = self.shards.for_key(key).write();
        let (action, output) = decide(map.get(key))?;
        let (version, ticket) = match action {
            Action::Keep => return Ok((output, Version::NONE)),
            Action::Write(bytes) => {
                let version = self.next_version();
                let ticket = journal
                    .map(|j| j.append(version, key, Some(&bytes)))
                    .transpose()?;
                match map.get_mut(key) {
                    Some(entry) => *entry = Entry { version, bytes },
                    None => {
                        map.insert(key.to_owned(), Entry { version, bytes });
                    }
                }
                (version, ticket)
            }
            Action::Remove => {
                let version = self.next_version();
                let ticket = journal.map(|j| j.append(version, key, None)).transpose()?;
                map.remove(key);
                (version, ticket)
            }
        };
        // Waiting for the fsync outside the shard lock lets writers of this
        // shard join the same group commit instead of queueing behind it.
        drop(map);
        if let (Some(journal), Some(ticket)) = (journal, ticket) {
            journal.wait(ticket)?;
        }
        Ok((output, version))
    }

    /// Applies every write (`Some`: store these bytes; `None`: delete), each
    /// under its key's shard lock as [`mutate`](Self::mutate) does, and then
    /// waits for the one journal flush covering the last record: group
    /// commit makes durable everything appended before it.
    ///
    /// # Errors
    ///
    /// A journal error; the writes before it are applied in memory.
    pub(crate) fn write_batch(&self, writes: Vec<(String, Option<Vec<u8>>)>) -> Result<()> {
        let journal = self.backing.as_ref().and_then(|b| b.journal.as_ref());
        let mut last = None;
        for (key, value) in writes {
            let mut map = self.shards.for_key(&key).write();
            if value.is_none() && !map.contains_key(&key) {
                continue;
            }
            let version = self.next_version();
            if let Some(journal) = journal {
                last = Some(journal.append(version, &key, value.as_deref())?);
            }
            match value {
                Some(bytes) => {
                    map.insert(key, Entry { version, bytes });
                }
                None => {
                    map.remove(&key);
                }
            }
        }
        if let (Some(journal), Some(ticket)) = (journal, last) {
            journal.wait(ticket)?;
        }
        Ok(())
    }

    /// Every key with its encoded value, one shard at a time.
    pub(crate) fn entries(&self) -> Vec<(String, Vec<u8>)> {
        let mut entries = Vec::new();
        for shard in self.shards.iter() {
            entries.extend(
                shard
                    .read()
                    .iter()
                    .map(|(k, e)| (k.clone(), e.bytes.clone())),
            );
        }
        entries
    }

    fn next_version(&self) -> Version {
        // A u64 counter does not wrap in practice: at a billion writes a
        // second it lasts five centuries.
        Version::new(self.clock.fetch_add(1, Ordering::AcqRel) + 1)
    }

    pub(crate) fn version(&self) -> Version {
        Version::new(self.clock.load(Ordering::Acquire))
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().len()).sum()
    }

    pub(crate) fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for shard in self.shards.iter() {
            keys.extend(shard.read().keys().cloned());
        }
        keys
    }

    pub(crate) fn durability(&self) -> Option<Durability> {
        self.backing.as_ref().map(|b| b.durability)
    }

    /// Whether a write happened since the newest durable snapshot.
    pub(crate) fn changed_since_persist(&self) -> bool {
        self.backing.as_ref().is_some_and(|b| {
            self.clock.load(Ordering::Acquire) > b.persisted.load(Ordering::Acquire)
        })
    }

    /// Writes a snapshot (after rotating the journal, in Journal mode) and
    /// deletes the journal generations it covers. A no-op in memory.
    ///
    /// Correctness of the journal cut: the rotation returns only after every
    /// record of the retired generations was appended, each under its key's
    /// shard lock after its version was taken. The global version is read
    /// after the rotation, so it is at least every retired record's version,
    /// and the capture then takes each shard's read lock, so it sees every
    /// write numbered up to that global version. Records of the new generation
    /// at or below it are skipped on replay; those above are replayed over
    /// the snapshot in file order, which per key is version order.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if the journal rotation or the
    /// snapshot write fails; the previous snapshot and journals stay valid.
    pub(crate) fn persist(&self) -> Result<()> {
        let Some(backing) = &self.backing else {
            return Ok(());
        };
        let mut persisting = backing.persisting.lock();
        let epoch = backing.epoch.load(Ordering::Acquire);
        if let Some(journal) = &backing.journal {
            persisting
                .retired
                .push(journal.rotate(&backing.files, epoch)?);
        }
        let global = self.version();
        let payload = Payload::capture(&self.shards, std::mem::take(&mut persisting.buffers));
        let written = snapshot::write(&backing.files, global, epoch, &payload);
        persisting.buffers = payload.into_buffers();
        written?;
        backing.persisted.fetch_max(global.get(), Ordering::AcqRel);
        backing.remove_retired(&mut persisting);
        Ok(())
    }

    /// Claims the files for the leader of `epoch`: refuses an epoch older
    /// than this store's or the snapshot's on disk, then writes a snapshot
    /// carrying it, so that from then on a store of an older epoch can no
    /// longer replace the snapshot and its journals are skipped at replay.
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`](crate::Error::NotLeader) for an older epoch
    /// (nothing changes); [`Error::Io`](crate::Error::Io) if the snapshot
    /// cannot be read or written.
    pub(crate) fn fence(&self, epoch: u64) -> Result<()> {
        let Some(backing) = &self.backing else {
            return Ok(());
        };
        let current = backing
            .epoch
            .load(Ordering::Acquire)
            .max(snapshot::epoch_on_disk(&backing.files)?.unwrap_or(0));
        if epoch < current {
            return Err(crate::Error::NotLeader {
                epoch: Some(epoch),
                current: Some(current),
                leader: None,
            });
        }
        backing.epoch.fetch_max(epoch, Ordering::AcqRel);
        self.persist()
    }

    /// The fencing epoch: the one the loaded snapshot carried, or the last
    /// fenced.
    pub(crate) fn epoch(&self) -> u64 {
        self.backing
            .as_ref()
            .map_or(0, |b| b.epoch.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_is_written_into_the_snapshot_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let store = Store::open(&path, Durability::OnPersist).unwrap();
        assert_eq!(store.epoch(), 0);
        store.fence(42).unwrap();
        drop(store);
        assert_eq!(
            Store::open(&path, Durability::OnPersist).unwrap().epoch(),
            42
        );
    }

    #[test]
    fn a_deposed_writer_is_fenced_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let write = |store: &Store, key: &str| {
            store
                .mutate(key, |_| Ok((Action::Write(vec![1]), ())))
                .unwrap();
        };
        let deposed = Store::open(&path, Durability::Journal).unwrap();
        deposed.fence(1).unwrap();
        write(&deposed, "before");
        let leader = Store::open(&path, Durability::Journal).unwrap();
        assert!(leader.read("before", |_| ()).is_some());
        assert!(matches!(
            leader.fence(0),
            Err(crate::Error::NotLeader {
                epoch: Some(0),
                current: Some(1),
                leader: None,
            })
        ));
        leader.fence(2).unwrap();
        write(&deposed, "late");
        assert!(matches!(
            deposed.persist(),
            Err(crate::Error::NotLeader {
                epoch: Some(1),
                current: Some(2),
                leader: None,
            })
        ));
        write(&deposed, "later");
        write(&leader, "mine");
        drop((deposed, leader));
        let reopened = Store::open(&path, Durability::OnPersist).unwrap();
        assert_eq!(reopened.epoch(), 2);
        let mut keys = reopened.keys();
        keys.sort();
        assert_eq!(keys, ["before", "mine"]);
    }

    #[test]
    fn a_batch_is_journaled_and_replayed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let store = Store::open(&path, Durability::Journal).unwrap();
        let writes = (0..100u8)
            .map(|i| (format!("k{i}"), Some(vec![i])))
            .chain([("k0".to_owned(), None), ("absent".to_owned(), None)])
            .collect();
        store.write_batch(writes).unwrap();
        // Dropping the store writes no snapshot: only the journal holds them.
        drop(store);
        let reopened = Store::open(&path, Durability::OnPersist).unwrap();
        assert_eq!(reopened.len(), 99);
        assert_eq!(reopened.read("k7", |e| e.bytes.clone()), Some(vec![7]));
        assert!(reopened.read("k0", |_| ()).is_none());
    }

    #[test]
    fn reopening_without_writes_leaves_no_empty_journals_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        for _ in 0..3 {
            drop(Store::open(&path, Durability::Journal).unwrap());
        }
        let journals = Files::new(&path).unwrap().journals().unwrap();
        assert_eq!(journals.len(), 1, "{journals:?}");
    }

    #[test]
    fn a_retired_journal_that_reappears_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let store = Store::open(&path, Durability::Journal).unwrap();
        let write = |value: u8| {
            store
                .mutate("k", |_| Ok((Action::Write(vec![value]), ())))
                .unwrap()
                .1
        };
        write(1);
        let kept = std::fs::read(Files::new(&path).unwrap().journal(1)).unwrap();
        store.persist().unwrap();
        let last = write(2);
        drop(store);
        // As if the deletion of generation 1 had not reached the disk.
        std::fs::write(Files::new(&path).unwrap().journal(1), kept).unwrap();
        let store = Store::open(&path, Durability::OnPersist).unwrap();
        assert_eq!(
            store.read("k", |e| (e.version, e.bytes.clone())),
            Some((last, vec![2]))
        );
    }
}
