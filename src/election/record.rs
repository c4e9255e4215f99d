//! The files of an election directory and how they are read and written.
//!
//! | file | what |
//! | --- | --- |
//! | `leader.lock` | held with `flock` by the leader that won it (empty) |
//! | `epoch.lock` | held for the few milliseconds of an election, so that epoch changes are serialised |
//! | `epoch` | the current epoch, the fencing token: the single source of truth on who leads |
//! | `leader` | the heartbeat record of the current leader |
//!
//! `epoch` and `leader` are small checked files: 8 magic bytes, a format
//! version `u32`, the payload length `u32`, the CRC-32 of the payload `u32`,
//! then the postcard payload (all little-endian). Both are replaced
//! atomically: written to a temporary file of the writer's own, fsynced,
//! renamed over the name, and the directory fsynced. A reader therefore sees
//! either the old or the new content, never a mix; anything else (a file
//! damaged from outside) decodes as an error, never as a wrong value.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::LeaderInfo;
use crate::error::{Error, Result};

const EPOCH_MAGIC: [u8; 8] = *b"AGNTEPOC";
const RECORD_MAGIC: [u8; 8] = *b"AGNTLEAD";
const FORMAT: u32 = 1;
const HEADER_LEN: usize = 20;

/// The paths of one election directory.
#[derive(Debug, Clone)]
pub(crate) struct Dir {
    root: PathBuf,
}

impl Dir {
    /// Creates the directory if needed and checks it can be written.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the directory if it cannot be created or a file
    /// cannot be created in it.
    pub(crate) fn create(root: &Path) -> Result<Dir> {
        let context = |what: &str, e: io::Error| {
            Error::Io(io::Error::new(
                e.kind(),
                format!("election directory {}: {what}: {e}", root.display()),
            ))
        };
        fs::create_dir_all(root).map_err(|e| context("cannot create it", e))?;
        let dir = Dir {
            root: root.to_path_buf(),
        };
        // Opening the lock file proves the directory writable now rather than
        // at the first election, where the error would only reach a log.
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.leader_lock())
            .map_err(|e| context("cannot write in it", e))?;
        Ok(dir)
    }

    /// The directory, without creating or checking anything.
    pub(crate) fn existing(root: &Path) -> Dir {
        Dir {
            root: root.to_path_buf(),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn leader_lock(&self) -> PathBuf {
        self.root.join("leader.lock")
    }

    pub(crate) fn epoch_lock(&self) -> PathBuf {
        self.root.join("epoch.lock")
    }

    fn epoch_file(&self) -> PathBuf {
        self.root.join("epoch")
    }

    fn record_file(&self) -> PathBuf {
        self.root.join("leader")
    }

    /// The raw bytes of the epoch file and of the heartbeat record (`None`
    /// when absent): what a follower watches for change.
    pub(crate) fn observe(&self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        (read_raw(&self.epoch_file()), read_raw(&self.record_file()))
    }

    /// The current epoch: 0 before the first election.
    ///
    /// A damaged epoch file (only possible if something outside agentry wrote
    /// it) falls back on the heartbeat record's epoch, so a candidate can
    /// still be elected above every epoch that was announced.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be read, or if both it and the record
    /// are damaged: then no epoch greater than every past one can be known.
    pub(crate) fn epoch(&self) -> Result<u64> {
        let path = self.epoch_file();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        match decode::<u64>(&EPOCH_MAGIC, &bytes) {
            Ok(epoch) => Ok(epoch),
            Err(reason) => match self.record() {
                Ok(Some(record)) => {
                    tracing::warn!(path = %path.display(), %reason, fallback = record.epoch,
                        "damaged epoch file; using the heartbeat record's epoch");
                    Ok(record.epoch)
                }
                _ => Err(Error::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "epoch file {} is damaged ({reason}) and no heartbeat record gives the epoch",
                        path.display()
                    ),
                ))),
            },
        }
    }

    /// Writes the epoch durably.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if any step of the atomic replacement fails.
    pub(crate) fn write_epoch(&self, epoch: u64) -> Result<()> {
        write_atomic(
            self,
            &self.epoch_file(),
            &encode(&EPOCH_MAGIC, &epoch)?,
            true,
        )
    }

    /// The heartbeat record; `None` if absent.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it cannot be read, or with kind `InvalidData` if it
    /// is damaged.
    pub(crate) fn record(&self) -> Result<Option<Record>> {
        let path = self.record_file();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        decode(&RECORD_MAGIC, &bytes).map(Some).map_err(|reason| {
            Error::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("heartbeat record {} is damaged: {reason}", path.display()),
            ))
        })
    }

    /// Replaces the heartbeat record atomically, without fsync: the record
    /// only matters to processes that are running, and a record lost or
    /// damaged by a power cut reads as stale, which is what it is then.
    /// Skipping the fsync keeps heartbeats cheap and elections fast.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the temp file cannot be written or renamed.
    pub(crate) fn write_record(&self, record: &Record) -> Result<()> {
        write_atomic(
            self,
            &self.record_file(),
            &encode(&RECORD_MAGIC, record)?,
            false,
        )
    }

    /// Removes the heartbeat record if it is still `epoch`'s, so a resigning
    /// leader does not leave its record to look alive. A record of a later
    /// epoch belongs to a new leader and stays.
    pub(crate) fn remove_record(&self, epoch: u64) {
        if matches!(self.record(), Ok(Some(record)) if record.epoch == epoch) {
            if let Err(e) = fs::remove_file(self.record_file()) {
                tracing::warn!(error = %e, "could not remove the heartbeat record");
            }
        }
    }

    fn sync(&self) -> io::Result<()> {
        File::open(&self.root)?.sync_all()
    }
}

/// What the leader writes every heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) instance_id: String,
    pub(crate) pid: u32,
    pub(crate) epoch: u64,
    pub(crate) heartbeat: SystemTime,
    /// Counts the leader's heartbeats, so that two records always differ
    /// even if the wall clock stands still or steps back.
    pub(crate) sequence: u64,
}

impl Record {
    pub(crate) fn info(&self) -> LeaderInfo {
        LeaderInfo {
            instance_id: self.instance_id.clone(),
            pid: self.pid,
            epoch: self.epoch,
            heartbeat: self.heartbeat,
        }
    }
}

fn read_raw(path: &Path) -> Option<Vec<u8>> {
    match fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::debug!(path = %path.display(), error = %e, "cannot read an election file");
            }
            None
        }
    }
}

fn encode<T: Serialize>(magic: &[u8; 8], value: &T) -> Result<Vec<u8>> {
    let payload = postcard::to_stdvec(value)?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(&FORMAT.to_le_bytes());
    // Election payloads are tens of bytes (an instance id at most a few KiB).
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

fn decode<T: for<'de> Deserialize<'de>>(magic: &[u8; 8], bytes: &[u8]) -> Result<T, String> {
    let field = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if bytes.get(..8) != Some(magic.as_slice()) {
        return Err("bad magic bytes".into());
    }
    let (Some(format), Some(len), Some(crc)) = (field(8), field(12), field(16)) else {
        return Err(format!("truncated header ({} bytes)", bytes.len()));
    };
    if format != FORMAT {
        return Err(format!("format version {format} is not supported"));
    }
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != len as usize {
        return Err(format!(
            "the header declares {len} payload bytes, the file holds {}",
            payload.len()
        ));
    }
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".into());
    }
    postcard::from_bytes(payload).map_err(|e| format!("payload does not decode: {e}"))
}

/// Replaces `path` with `bytes`: temp file, (fsync,) rename, (directory
/// fsync). The temp name is unique to this process and call, because a
/// deposed leader and its successor may rewrite the same file at once.
fn write_atomic(dir: &Dir, path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    static NONCE: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    let temp = dir.root.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NONCE.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        fs::rename(&temp, path)?;
        if durable { dir.sync() } else { Ok(()) }
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    Ok(written?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: u64) -> Record {
        Record {
            instance_id: "a".into(),
            pid: 7,
            epoch,
            heartbeat: SystemTime::now(),
            sequence: 1,
        }
    }

    #[test]
    fn epoch_and_record_round_trip() {
        let root = tempfile::tempdir().unwrap();
        let dir = Dir::create(root.path()).unwrap();
        assert_eq!(dir.epoch().unwrap(), 0);
        assert_eq!(dir.record().unwrap(), None);
        dir.write_epoch(41).unwrap();
        dir.write_record(&record(41)).unwrap();
        assert_eq!(dir.epoch().unwrap(), 41);
        let read = dir.record().unwrap().unwrap();
        assert_eq!(
            (read.instance_id.as_str(), read.pid, read.epoch),
            ("a", 7, 41)
        );
        dir.remove_record(40);
        assert!(
            dir.record().unwrap().is_some(),
            "another epoch's record stays"
        );
        dir.remove_record(41);
        assert_eq!(dir.record().unwrap(), None);
        let leftovers: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn damaged_files_are_errors_not_values() {
        let root = tempfile::tempdir().unwrap();
        let dir = Dir::create(root.path()).unwrap();
        let good = encode(&RECORD_MAGIC, &record(3)).unwrap();
        for len in 0..good.len() {
            assert!(
                decode::<Record>(&RECORD_MAGIC, &good[..len]).is_err(),
                "{len}"
            );
        }
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(decode::<Record>(&RECORD_MAGIC, &flipped).is_err());
        assert!(
            decode::<u64>(&EPOCH_MAGIC, &good).is_err(),
            "a record is not an epoch"
        );

        fs::write(dir.epoch_file(), b"garbage").unwrap();
        assert!(dir.epoch().is_err(), "no record to fall back on");
        fs::write(dir.record_file(), &good).unwrap();
        assert_eq!(dir.epoch().unwrap(), 3, "falls back on the record");
        fs::write(dir.record_file(), b"\0\0\0").unwrap();
        assert!(dir.record().unwrap_err().to_string().contains("damaged"));
    }
}
