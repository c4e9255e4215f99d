//! The contract every storage of the shared memory keeps: the in-process
//! store (`store.rs`, with its snapshot and journal) and, with the `redis`
//! feature, the Redis store (`redis_store.rs`).
//!
//! [`SharedMemory`](super::SharedMemory) encodes and decodes values and
//! checks keys; a backend only moves encoded bytes and versions. Methods are
//! generic (closures, no boxing), so each backend is called through static
//! dispatch: the in-process `get` costs what it cost before there was a
//! trait.

use super::Version;
use super::store::{Action, Store};
use crate::error::{Error, Result};

pub(crate) trait Backend {
    /// Runs `f` on the key's encoded value and version; `None` if absent.
    fn read<R>(&self, key: &str, f: impl FnOnce(&[u8], Version) -> R) -> Result<Option<R>>;

    /// Whether `key` is present.
    fn contains(&self, key: &str) -> Result<bool> {
        Ok(self.read(key, |_, _| ())?.is_some())
    }

    /// Stores `bytes` under `key` if it is at `expected` (any version for
    /// `None`); returns the new version.
    ///
    /// Errors: [`Error::Conflict`] if the key is not at `expected`.
    fn write(&self, key: &str, bytes: Vec<u8>, expected: Option<Version>) -> Result<Version>;

    /// Atomic read-modify-write: `f` sees the current encoding (`None` if
    /// absent), runs exactly once, and returns the new encoding with an
    /// output; no other write to the key comes in between.
    fn update<R>(
        &self,
        key: &str,
        f: impl FnOnce(Option<&[u8]>) -> Result<(Vec<u8>, R)>,
    ) -> Result<(R, Version)>;

    /// Removes `key` if it is at `expected` (any version for `None`);
    /// returns whether something was removed.
    ///
    /// Errors: [`Error::Conflict`] if the key is not at `expected`.
    fn remove(&self, key: &str, expected: Option<Version>) -> Result<bool>;

    fn len(&self) -> Result<usize>;

    fn keys(&self) -> Result<Vec<String>>;

    /// The global version: that of the newest write.
    fn version(&self) -> Result<Version>;

    /// Claims the store for the leader of `epoch`.
    ///
    /// Errors: [`Error::NotLeader`] for an epoch older than the store's.
    fn fence(&self, epoch: u64) -> Result<()>;

    /// The fencing epoch this handle writes under.
    fn epoch(&self) -> u64;

    /// Makes every write that returned durable, as far as this backend can.
    fn persist(&self) -> Result<()>;

    /// Writes (`Some`) or deletes (`None`) every key given, in order.
    fn write_batch(&self, writes: Vec<(String, Option<Vec<u8>>)>) -> Result<()>;

    /// Every key with its encoded value.
    fn entries(&self) -> Result<Vec<(String, Vec<u8>)>>;
}

impl Backend for Store {
    #[inline]
    fn read<R>(&self, key: &str, f: impl FnOnce(&[u8], Version) -> R) -> Result<Option<R>> {
        Ok(Store::read(self, key, |entry| {
            f(&entry.bytes, entry.version)
        }))
    }

    fn write(&self, key: &str, bytes: Vec<u8>, expected: Option<Version>) -> Result<Version> {
        let ((), version) = self.mutate(key, |entry| {
            let actual = entry.map_or(Version::NONE, |e| e.version);
            match expected {
                Some(expected) if expected != actual => Err(conflict(key, expected, actual)),
                _ => Ok((Action::Write(bytes), ())),
            }
        })?;
        Ok(version)
    }

    fn update<R>(
        &self,
        key: &str,
        f: impl FnOnce(Option<&[u8]>) -> Result<(Vec<u8>, R)>,
    ) -> Result<(R, Version)> {
        self.mutate(key, |entry| {
            let (bytes, output) = f(entry.map(|e| &e.bytes[..]))?;
            Ok((Action::Write(bytes), output))
        })
    }

    fn remove(&self, key: &str, expected: Option<Version>) -> Result<bool> {
        let (removed, _) = self.mutate(key, |entry| {
            let actual = entry.map_or(Version::NONE, |e| e.version);
            match expected {
                Some(expected) if expected != actual => Err(conflict(key, expected, actual)),
                _ if actual.is_none() => Ok((Action::Keep, false)),
                _ => Ok((Action::Remove, true)),
            }
        })?;
        Ok(removed)
    }

    fn len(&self) -> Result<usize> {
        Ok(Store::len(self))
    }

    fn keys(&self) -> Result<Vec<String>> {
        Ok(Store::keys(self))
    }

    fn version(&self) -> Result<Version> {
        Ok(Store::version(self))
    }

    fn fence(&self, epoch: u64) -> Result<()> {
        Store::fence(self, epoch)
    }

    fn epoch(&self) -> u64 {
        Store::epoch(self)
    }

    fn persist(&self) -> Result<()> {
        Store::persist(self)
    }

    fn write_batch(&self, writes: Vec<(String, Option<Vec<u8>>)>) -> Result<()> {
        Store::write_batch(self, writes)
    }

    fn entries(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(Store::entries(self))
    }
}

pub(crate) fn conflict(key: &str, expected: Version, actual: Version) -> Error {
    Error::Conflict {
        key: key.to_owned(),
        expected,
        actual,
    }
}
