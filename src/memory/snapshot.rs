//! The snapshot file: the whole store, postcard-encoded behind a checked
//! header, written and read through a memory map.
//!
//! # Layout (all integers little-endian)
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | magic `AGNTSNAP` |
//! | 8..12 | format version, `u32` (this build writes and reads 1) |
//! | 12..16 | reserved, `u32`, zero |
//! | 16..24 | global version `u64`: every write numbered up to it is in the snapshot |
//! | 24..32 | fencing epoch of the writer, `u64` (0 = no election) |
//! | 32..40 | payload length in bytes, `u64` |
//! | 40..44 | CRC-32 of the payload, `u32` |
//! | 44..48 | CRC-32 of bytes 0..44, `u32` |
//! | 48.. | payload |
//!
//! The payload is the postcard encoding of a `Vec<(String, u64, bytes)>`: a
//! varint count, then per key its string, its version and its encoded value.
//! Shards are captured one after the other while writers carry on, so an
//! entry may be newer than the global version; the global version is the
//! cut for journal replay, not the greatest version in the file.
//!
//! # Crash safety
//!
//! A snapshot is written to `name.tmp`, flushed through the map, fsynced,
//! renamed over `name`, and the directory is fsynced. Until the rename the old
//! snapshot is untouched; the rename is atomic; so a crash at any point leaves
//! either the complete old file or the complete new one under `name`. A stray
//! `name.tmp` is simply overwritten by the next snapshot.

use std::fs::{File, OpenOptions};
use std::io;

use memmap2::{Mmap, MmapMut};

use super::Version;
use super::codec::Bytes;
use super::files::Files;
use super::shard::{Entry, Shards};
use crate::error::{Error, Result};

const MAGIC: [u8; 8] = *b"AGNTSNAP";
const FORMAT: u32 = 1;
const HEADER_LEN: usize = 48;

/// The encoded content of a snapshot, captured from the live store.
#[derive(Debug)]
pub(crate) struct Payload {
    /// Varint count of the entries, then `body`: kept apart so the entries
    /// can be encoded shard by shard without knowing the count in advance.
    count: Vec<u8>,
    body: Vec<u8>,
}

impl Payload {
    /// Encodes every key of `shards`, one shard's read lock at a time, so
    /// writers elsewhere carry on while the snapshot is taken.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] only if postcard refuses an entry, which it does not
    /// for strings, integers and byte strings.
    pub(crate) fn capture(shards: &Shards) -> Result<Payload> {
        let mut body = Vec::new();
        let mut count: u64 = 0;
        for shard in shards.iter() {
            let map = shard.read();
            body.reserve(map.iter().map(|(k, e)| k.len() + e.bytes.len() + 12).sum());
            for (key, entry) in map.iter() {
                body = postcard::to_extend(
                    &(key.as_str(), entry.version.get(), Bytes(&entry.bytes)),
                    body,
                )?;
            }
            count += map.len() as u64;
        }
        Ok(Payload {
            count: postcard::to_stdvec(&count)?,
            body,
        })
    }

    fn len(&self) -> usize {
        self.count.len() + self.body.len()
    }

    fn crc(&self) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.count);
        hasher.update(&self.body);
        hasher.finalize()
    }
}

/// What a loaded snapshot said about the store beyond its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loaded {
    /// The write counter the snapshot covers: journal records at or below it
    /// are already in the snapshot.
    pub(crate) global: Version,
    /// The fencing epoch the snapshot was written under.
    pub(crate) epoch: u64,
    /// The greatest version in the file: the global version or a newer
    /// entry's.
    pub(crate) newest: Version,
}

/// Writes `payload` as the snapshot at `files.snapshot()`, crash-safely.
///
/// # Errors
///
/// [`Error::Io`] if any step fails; the previous snapshot is then intact.
pub(crate) fn write(files: &Files, global: Version, epoch: u64, payload: &Payload) -> Result<()> {
    let temp = files.temp();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    let total = HEADER_LEN + payload.len();
    file.set_len(total as u64)?;
    // SAFETY: `temp` was just created (or truncated) by this process and its
    // name belongs to this store; snapshots of one store are serialised by the
    // store's persist lock, so no one else maps, writes or truncates the file
    // while this map lives, and `set_len` above made it exactly `total` bytes.
    let mut map = unsafe { MmapMut::map_mut(&file)? };
    let (header, rest) = map.split_at_mut(HEADER_LEN);
    header.copy_from_slice(&encode_header(global, epoch, payload));
    let (count, body) = rest.split_at_mut(payload.count.len());
    count.copy_from_slice(&payload.count);
    body.copy_from_slice(&payload.body);
    map.flush()?;
    drop(map);
    // The map flush wrote the data; this also makes the file's size durable.
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, files.snapshot())?;
    files.sync_dir()
}

fn encode_header(global: Version, epoch: u64, payload: &Payload) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        header[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&MAGIC);
    put(&FORMAT.to_le_bytes());
    put(&0u32.to_le_bytes());
    put(&global.get().to_le_bytes());
    put(&epoch.to_le_bytes());
    put(&(payload.len() as u64).to_le_bytes());
    put(&payload.crc().to_le_bytes());
    let header_crc = crc32fast::hash(&header[..HEADER_LEN - 4]);
    header[HEADER_LEN - 4..].copy_from_slice(&header_crc.to_le_bytes());
    header
}

/// Loads the snapshot at `files.snapshot()` into the empty `shards`.
///
/// Returns `None` if there is no snapshot file (a new store).
///
/// # Errors
///
/// [`Error::CorruptSnapshot`] if the file is not a complete, intact snapshot
/// of this format; [`Error::Io`] if it cannot be read.
pub(crate) fn load(files: &Files, shards: &Shards) -> Result<Option<Loaded>> {
    let path = files.snapshot();
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |reason: String| Error::CorruptSnapshot {
        path: path.to_path_buf(),
        reason,
    };
    // An empty file cannot be mapped on every platform; it is corrupt anyway.
    if file.metadata()?.len() == 0 {
        return Err(corrupt("empty file (no header)".into()));
    }
    // SAFETY: agentry never writes a snapshot in place: new snapshots are
    // renamed over this name, which leaves an open map on the old file intact.
    // The map is read-only and dropped before this function returns; another
    // program truncating the file meanwhile is outside our contract.
    let map = unsafe { Mmap::map(&file)? };
    let mut loaded = parse_header(&map).map_err(corrupt)?;
    let payload = map.get(HEADER_LEN..).unwrap_or_default();
    let newest = decode_payload(payload, shards).map_err(corrupt)?;
    loaded.newest = loaded.newest.max(newest);
    Ok(Some(loaded))
}

fn parse_header(bytes: &[u8]) -> Result<Loaded, String> {
    let magic_seen = bytes.get(..MAGIC.len()).unwrap_or(bytes);
    if !MAGIC.starts_with(magic_seen) || magic_seen.is_empty() {
        return Err("not an agentry snapshot (bad magic bytes)".into());
    }
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Err(format!(
            "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        ));
    };
    let format = read_u32(header, 8);
    if format != FORMAT {
        return Err(format!(
            "format version {format} is not supported (this build reads version {FORMAT})"
        ));
    }
    let stored_header_crc = read_u32(header, 44);
    let header_crc = crc32fast::hash(header.get(..44).unwrap_or_default());
    if stored_header_crc != header_crc {
        return Err(format!(
            "header checksum mismatch (stored {stored_header_crc:#010x}, computed {header_crc:#010x})"
        ));
    }
    let global = Version::new(read_u64(header, 16));
    let epoch = read_u64(header, 24);
    let declared = read_u64(header, 32);
    let payload = bytes.get(HEADER_LEN..).unwrap_or_default();
    if (payload.len() as u64) < declared {
        return Err(format!(
            "truncated: the header declares {declared} payload bytes, the file holds {}",
            payload.len()
        ));
    }
    if (payload.len() as u64) > declared {
        return Err(format!(
            "{} trailing bytes after the {declared}-byte payload",
            payload.len() as u64 - declared
        ));
    }
    let stored_crc = read_u32(header, 40);
    let crc = crc32fast::hash(payload);
    if stored_crc != crc {
        return Err(format!(
            "payload checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x})"
        ));
    }
    Ok(Loaded {
        global,
        epoch,
        newest: global,
    })
}

/// Inserts the payload's entries into `shards`; returns the greatest version.
fn decode_payload(payload: &[u8], shards: &Shards) -> Result<Version, String> {
    let bad = |e: postcard::Error| format!("payload does not decode: {e}");
    let (count, mut rest) = postcard::take_from_bytes::<u64>(payload).map_err(bad)?;
    let mut newest = Version::NONE;
    for _ in 0..count {
        let ((key, version, bytes), tail) =
            postcard::take_from_bytes::<(&str, u64, &[u8])>(rest).map_err(bad)?;
        rest = tail;
        let version = Version::new(version);
        if version.is_none() {
            return Err(format!("key {key:?} has no version"));
        }
        newest = newest.max(version);
        let entry = Entry {
            version,
            bytes: bytes.to_vec(),
        };
        if shards
            .for_key(key)
            .write()
            .insert(key.to_owned(), entry)
            .is_some()
        {
            return Err(format!("key {key:?} appears twice"));
        }
    }
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes left after the {count} entries",
            rest.len()
        ));
    }
    Ok(newest)
}

/// Reads a little-endian `u32` at `at` of a slice already checked to hold the
/// whole header.
fn read_u32(header: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    if let Some(bytes) = header.get(at..at + 4) {
        raw.copy_from_slice(bytes);
    }
    u32::from_le_bytes(raw)
}

fn read_u64(header: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    if let Some(bytes) = header.get(at..at + 8) {
        raw.copy_from_slice(bytes);
    }
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (tempfile::TempDir, Files, Shards) {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(&dir.path().join("mem.snap")).unwrap();
        let shards = Shards::new();
        for i in 1..=10u64 {
            shards.for_key(&format!("k{i}")).write().insert(
                format!("k{i}"),
                Entry {
                    version: Version::new(i),
                    bytes: vec![i as u8; i as usize],
                },
            );
        }
        (dir, files, shards)
    }

    #[test]
    fn round_trip_keeps_keys_versions_and_header() {
        let (_dir, files, shards) = sample();
        let payload = Payload::capture(&shards).unwrap();
        write(&files, Version::new(12), 7, &payload).unwrap();
        let loaded_into = Shards::new();
        let loaded = load(&files, &loaded_into).unwrap().unwrap();
        assert_eq!(
            loaded,
            Loaded {
                global: Version::new(12),
                epoch: 7,
                newest: Version::new(12)
            }
        );
        let map = loaded_into.for_key("k4").read();
        let entry = map.get("k4").unwrap();
        assert_eq!(entry.version, Version::new(4));
        assert_eq!(entry.bytes, [4u8; 4]);
        assert!(!files.temp().exists());
    }

    #[test]
    fn absent_file_is_a_new_store() {
        let (_dir, files, _) = sample();
        assert_eq!(load(&files, &Shards::new()).unwrap(), None);
    }

    #[test]
    fn every_truncation_is_reported_not_loaded() {
        let (_dir, files, shards) = sample();
        write(
            &files,
            Version::new(10),
            0,
            &Payload::capture(&shards).unwrap(),
        )
        .unwrap();
        let full = std::fs::read(files.snapshot()).unwrap();
        for len in 0..full.len() {
            std::fs::write(files.snapshot(), &full[..len]).unwrap();
            match load(&files, &Shards::new()) {
                Err(Error::CorruptSnapshot { .. }) => {}
                other => panic!("length {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn entries_newer_than_the_global_version_raise_newest() {
        let (_dir, files, shards) = sample();
        write(
            &files,
            Version::new(5),
            0,
            &Payload::capture(&shards).unwrap(),
        )
        .unwrap();
        let loaded = load(&files, &Shards::new()).unwrap().unwrap();
        assert_eq!(
            (loaded.global, loaded.newest),
            (Version::new(5), Version::new(10))
        );
    }
}
