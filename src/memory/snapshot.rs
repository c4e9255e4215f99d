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
//!
//! # Recycling the previous file
//!
//! Writing a fresh 8 MB file costs more than the disk write: every page of
//! the new file is a zero-filled page fault and a block allocation, and the
//! rename frees the old file's blocks (a discard on SSD-backed file
//! systems). So just before the rename the current snapshot is hard-linked
//! as `name.spare`, which keeps its file alive once replaced, and the next
//! snapshot renames `name.spare` to `name.tmp` and overwrites it in place.
//! This is safe because the spare is never the current snapshot: should a
//! crash fall between the link and the rename, both names are the same file,
//! which the next snapshot detects (same inode) and then starts a fresh
//! file. The cost is disk space: two snapshots' worth. A process that maps
//! an old snapshot while the store writes two more may read the overwritten
//! file; its checksum makes that an [`Error::CorruptSnapshot`], never wrong
//! data (a follower keeps no store open, see the orchestrator's state
//! directory).
//!
//! # Fencing
//!
//! Right before the rename, the writer reads the header of the snapshot it
//! is about to replace: if that one carries a greater fencing epoch, a newer
//! leader owns the store and the write is refused with
//! [`Error::NotLeader`]. The check and the rename happen under an `flock` on
//! `name.lock`, so two processes cannot both pass the check and then rename
//! in the wrong order. The lock is held for microseconds (one header read
//! and a rename; the directory fsync comes after), and the kernel releases
//! it if its holder dies.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use memmap2::{Mmap, MmapMut};
use rayon::prelude::*;

use super::Version;
use super::files::Files;
use super::shard::{Entry, Shards};
use crate::error::{Error, Result};

const MAGIC: [u8; 8] = *b"AGNTSNAP";
const FORMAT: u32 = 1;
const HEADER_LEN: usize = 48;

/// The encoded content of a snapshot, captured from the live store.
#[derive(Debug)]
pub(crate) struct Payload {
    /// Varint count of the entries, then one encoded part per shard: the
    /// parts are encoded in parallel, so the count is only known at the end.
    count: Vec<u8>,
    parts: Vec<Vec<u8>>,
    crc: u32,
}

impl Payload {
    /// Encodes every key of `shards`, each shard under its read lock only
    /// while it is encoded, so writers elsewhere carry on. Shards are encoded
    /// in parallel on rayon's pool: a snapshot is bound by walking the maps
    /// (cache misses), which spreads well over cores.
    ///
    /// `spare` are the buffers of the previous snapshot (see
    /// [`Payload::into_buffers`]): encoding into memory that is already
    /// mapped saves a page fault every 4 KiB, a good part of a snapshot's time.
    pub(crate) fn capture(shards: &Shards, mut spare: Vec<Vec<u8>>) -> Payload {
        spare.resize_with(shards.iter().count(), Vec::new);
        let encoded: Vec<(u64, Vec<u8>, crc32fast::Hasher)> = shards
            .par_iter()
            .zip(spare)
            .map(|(shard, mut part)| {
                part.clear();
                let map = shard.read();
                let size = map.iter().map(|(k, e)| k.len() + e.bytes.len() + 15).sum();
                part.reserve(size);
                for (key, entry) in map.iter() {
                    encode_entry(&mut part, key, entry);
                }
                let count = map.len() as u64;
                drop(map);
                let mut crc = crc32fast::Hasher::new();
                crc.update(&part);
                (count, part, crc)
            })
            .collect();
        let mut count_prefix = Vec::with_capacity(10);
        push_varint(
            &mut count_prefix,
            encoded.iter().map(|(count, _, _)| count).sum(),
        );
        let mut crc = crc32fast::Hasher::new();
        crc.update(&count_prefix);
        let mut parts = Vec::with_capacity(encoded.len());
        for (_, part, part_crc) in encoded {
            crc.combine(&part_crc);
            parts.push(part);
        }
        Payload {
            count: count_prefix,
            parts,
            crc: crc.finalize(),
        }
    }

    /// The encoding buffers, to hand to the next [`Payload::capture`].
    pub(crate) fn into_buffers(self) -> Vec<Vec<u8>> {
        self.parts
    }

    fn len(&self) -> usize {
        self.count.len() + self.parts.iter().map(Vec::len).sum::<usize>()
    }
}

/// Appends one entry, byte for byte the postcard encoding of
/// `(&str, u64, bytes)` (varint lengths and version). Written by hand because
/// it is the inner loop of a snapshot, where serde's per-call setup showed;
/// the loader decodes it with postcard, and a test checks the two agree.
fn encode_entry(out: &mut Vec<u8>, key: &str, entry: &Entry) {
    push_varint(out, key.len() as u64);
    out.extend_from_slice(key.as_bytes());
    push_varint(out, entry.version.get());
    push_varint(out, entry.bytes.len() as u64);
    out.extend_from_slice(&entry.bytes);
}

/// LEB128, as postcard encodes `u64` and lengths.
fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
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
    let file = open_temp(files, &temp)?;
    let total = HEADER_LEN + payload.len();
    file.set_len(total as u64)?;
    // SAFETY: `temp` is a file of this store's own (fresh, or the spare this
    // process renamed to `temp`, which no other name of the store refers to);
    // snapshots of one store are serialised by the store's persist lock, so
    // no one else maps, writes or truncates it while this map lives, and
    // `set_len` above made it exactly `total` bytes.
    let mut map = unsafe { MmapMut::map_mut(&file)? };
    let (header, mut rest) = map.split_at_mut(HEADER_LEN);
    header.copy_from_slice(&encode_header(global, epoch, payload));
    let mut pieces = Vec::with_capacity(payload.parts.len() + 1);
    for piece in std::iter::once(&payload.count).chain(&payload.parts) {
        let (into, tail) = rest.split_at_mut(piece.len());
        pieces.push((into, piece));
        rest = tail;
    }
    // Copying in parallel spreads the page faults of the fresh file, which
    // cost more than the copy itself, over the cores.
    pieces
        .into_par_iter()
        .for_each(|(into, piece)| into.copy_from_slice(piece));
    // On Linux the map's pages are the file's pages in the one page cache,
    // so the `fsync` below writes them: a synchronous `msync` first would
    // wait for the same writeback twice. The asynchronous flush starts the
    // writeback early and keeps the code right where caches are not unified.
    map.flush_async()?;
    drop(map);
    // Writes the data and makes the file's size durable.
    file.sync_all()?;
    drop(file);
    let mut lock = fslock::LockFile::open(&files.lock())?;
    lock.lock()?;
    if let Some(current) = epoch_on_disk(files)? {
        if current > epoch {
            drop(lock);
            let _ = std::fs::remove_file(&temp);
            return Err(Error::NotLeader {
                epoch: Some(epoch),
                current: Some(current),
                leader: None,
            });
        }
    }
    keep_as_spare(files);
    std::fs::rename(&temp, files.snapshot())?;
    drop(lock);
    files.sync_dir()
}

/// Opens `temp` for the next snapshot: the spare file when there is one
/// that is not the current snapshot, else a fresh file. The file is opened
/// before it is renamed, and a fresh one is created after removing the old
/// name, so the handle is never a file another process is writing.
fn open_temp(files: &Files, temp: &Path) -> Result<File> {
    let spare = files.spare();
    if let Ok(file) = OpenOptions::new().read(true).write(true).open(&spare) {
        if !is_current_snapshot(&file, files.snapshot()) && std::fs::rename(&spare, temp).is_ok() {
            return Ok(file);
        }
    }
    // Absent, or a second name of the current snapshot (left by a crash
    // between link and rename): truncating that would destroy the snapshot.
    let _ = std::fs::remove_file(&spare);
    let _ = std::fs::remove_file(temp);
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(temp)?)
}

/// Whether `file` is the snapshot at `snapshot` (true when that cannot be
/// told, so that it is never overwritten).
fn is_current_snapshot(file: &File, snapshot: &Path) -> bool {
    let (Ok(file), current) = (file.metadata(), std::fs::metadata(snapshot)) else {
        return true;
    };
    let Ok(current) = current else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (file.dev(), file.ino()) == (current.dev(), current.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = (file, current);
        true
    }
}

/// Links the current snapshot as the spare, so the rename that replaces it
/// leaves its file for the next snapshot to overwrite. Best effort: without
/// a spare the next snapshot starts a fresh file.
fn keep_as_spare(files: &Files) {
    let spare = files.spare();
    let _ = std::fs::remove_file(&spare);
    if let Err(error) = std::fs::hard_link(files.snapshot(), &spare) {
        if error.kind() != io::ErrorKind::NotFound {
            tracing::debug!(%error, "cannot keep the snapshot file for reuse");
        }
    }
}

/// The fencing epoch in the header of the snapshot on disk; `None` if there
/// is no snapshot, or its header is damaged (it is about to be replaced by
/// an intact one, which is no fencing question).
///
/// # Errors
///
/// [`Error::Io`] if the file exists but cannot be read.
pub(crate) fn epoch_on_disk(files: &Files) -> Result<Option<u64>> {
    let mut header = [0u8; HEADER_LEN];
    let read = File::open(files.snapshot()).and_then(|mut file| {
        use std::io::Read;
        file.read_exact(&mut header)
    });
    match read {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    let intact = header.starts_with(&MAGIC)
        && read_u32(&header, 44) == crc32fast::hash(&header[..HEADER_LEN - 4]);
    Ok(intact.then(|| read_u64(&header, 24)))
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
    put(&payload.crc.to_le_bytes());
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
///
/// The entries are parsed in one pass and sorted into their shards, then the
/// shards are filled in parallel: allocating and inserting 100,000 keys is
/// the bulk of a reload, and it spreads over the cores.
fn decode_payload(payload: &[u8], shards: &Shards) -> Result<Version, String> {
    let mut reader = Reader(payload);
    let count = reader.varint()?;
    let mut newest = Version::NONE;
    // Every entry takes at least 3 bytes, which bounds what a forged count
    // can make us reserve.
    let per_shard = (count.min(payload.len() as u64 / 3) as usize) / shards.iter().count() + 1;
    let mut buckets: Vec<Vec<(&str, Version, &[u8])>> = shards
        .iter()
        .map(|_| Vec::with_capacity(per_shard + per_shard / 4))
        .collect();
    for _ in 0..count {
        let key = std::str::from_utf8(reader.bytes()?)
            .map_err(|e| format!("payload does not decode: a key is not UTF-8: {e}"))?;
        let version = Version::new(reader.varint()?);
        let bytes = reader.bytes()?;
        if version.is_none() {
            return Err(format!("key {key:?} has no version"));
        }
        newest = newest.max(version);
        if let Some(bucket) = buckets.get_mut(shards.index(key)) {
            bucket.push((key, version, bytes));
        }
    }
    if !reader.0.is_empty() {
        return Err(format!(
            "{} bytes left after the {count} entries",
            reader.0.len()
        ));
    }
    buckets
        .into_par_iter()
        .zip(shards.par_iter())
        .try_for_each(|(bucket, shard)| {
            let mut map = shard.write();
            map.reserve(bucket.len());
            for (key, version, bytes) in bucket {
                let entry = Entry {
                    version,
                    bytes: bytes.to_vec(),
                };
                if map.insert(key.to_owned(), entry).is_some() {
                    return Err(format!("key {key:?} appears twice"));
                }
            }
            Ok(())
        })?;
    Ok(newest)
}

/// Reads the postcard primitives of a payload, borrowing from the map. By
/// hand, like [`encode_entry`], because this is the inner loop of a reload;
/// a test decodes a payload made by postcard itself.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// A LEB128 `u64`, refusing encodings longer than ten bytes or with bits
    /// beyond 64, as postcard does.
    fn varint(&mut self) -> Result<u64, String> {
        let mut value: u64 = 0;
        for (i, &byte) in self.0.iter().take(10).enumerate() {
            let bits = u64::from(byte & 0x7f);
            if i == 9 && byte > 1 {
                break;
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                self.0 = self.0.get(i + 1..).unwrap_or_default();
                return Ok(value);
            }
        }
        Err(
            if self.0.len() < 10 && self.0.iter().all(|b| b & 0x80 != 0) {
                "payload does not decode: it ends inside a number".into()
            } else {
                "payload does not decode: a number is longer than 64 bits".into()
            },
        )
    }

    /// A length-prefixed byte string.
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.varint()?;
        let taken = usize::try_from(len)
            .ok()
            .and_then(|len| self.0.get(..len))
            .ok_or_else(|| {
                format!(
                    "payload does not decode: a {len}-byte string runs past the end ({} bytes left)",
                    self.0.len()
                )
            })?;
        self.0 = self.0.get(taken.len()..).unwrap_or_default();
        Ok(taken)
    }
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
    use super::super::codec::Bytes;
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
        let payload = Payload::capture(&shards, Vec::new());
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

    #[cfg(unix)]
    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().ino()
    }

    fn global_on_disk(files: &Files) -> Version {
        load(files, &Shards::new()).unwrap().unwrap().global
    }

    #[cfg(unix)]
    #[test]
    fn the_previous_file_is_overwritten_in_place_by_the_next_snapshot() {
        let (_dir, files, shards) = sample();
        let payload = Payload::capture(&shards, Vec::new());
        write(&files, Version::new(10), 0, &payload).unwrap();
        let first = inode(files.snapshot());
        write(&files, Version::new(11), 0, &payload).unwrap();
        assert_eq!(inode(&files.spare()), first, "kept as the spare");
        let second = inode(files.snapshot());
        assert_ne!(second, first);
        write(&files, Version::new(12), 0, &payload).unwrap();
        assert_eq!(inode(files.snapshot()), first, "the spare was reused");
        assert_eq!(inode(&files.spare()), second);
        assert_eq!(global_on_disk(&files), Version::new(12));
        assert!(!files.temp().exists());
    }

    #[test]
    fn a_spare_that_is_the_current_snapshot_is_not_overwritten() {
        // A crash between linking the spare and the rename leaves both
        // names on one file: the next snapshot must start a fresh one.
        let (_dir, files, shards) = sample();
        let payload = Payload::capture(&shards, Vec::new());
        write(&files, Version::new(10), 0, &payload).unwrap();
        std::fs::hard_link(files.snapshot(), files.spare()).unwrap();
        let before = std::fs::read(files.snapshot()).unwrap();
        let bigger = Shards::new();
        bigger.for_key("big").write().insert(
            "big".into(),
            Entry {
                version: Version::new(11),
                bytes: vec![7; 100_000],
            },
        );
        write(
            &files,
            Version::new(11),
            0,
            &Payload::capture(&bigger, Vec::new()),
        )
        .unwrap();
        // Written to a fresh file: the linked one still holds the old bytes.
        assert_eq!(global_on_disk(&files), Version::new(11));
        assert_eq!(std::fs::read(files.spare()).unwrap(), before);
    }

    #[test]
    fn hand_encoded_entries_are_postcard() {
        let entry = Entry {
            version: Version::new(300),
            bytes: vec![9; 200],
        };
        let mut ours = Vec::new();
        encode_entry(&mut ours, "clé", &entry);
        let theirs = postcard::to_stdvec(&("clé", 300u64, Bytes(&entry.bytes))).unwrap();
        assert_eq!(ours, theirs);
        for value in [0, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut ours = Vec::new();
            push_varint(&mut ours, value);
            assert_eq!(ours, postcard::to_stdvec(&value).unwrap(), "{value}");
        }
    }

    #[test]
    fn a_payload_encoded_by_postcard_is_read_back() {
        let entries = vec![
            ("a".to_owned(), 1u64, vec![1u8, 2]),
            ("ключ".to_owned(), u64::MAX, vec![0u8; 300]),
        ];
        let payload = postcard::to_stdvec(&entries).unwrap();
        let shards = Shards::new();
        assert_eq!(
            decode_payload(&payload, &shards).unwrap(),
            Version::new(u64::MAX)
        );
        let map = shards.for_key("ключ").read();
        assert_eq!(map.get("ключ").unwrap().bytes, [0u8; 300]);
    }

    #[test]
    fn varints_beyond_64_bits_or_cut_short_are_refused() {
        assert_eq!(
            Reader(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).varint(),
            Ok(u64::MAX)
        );
        assert!(
            Reader(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint()
                .is_err()
        );
        assert!(Reader(&[0x80; 11]).varint().is_err());
        assert!(Reader(&[0x80, 0x80]).varint().is_err());
        assert!(Reader(&[]).varint().is_err());
        assert!(Reader(&[5, b'a']).bytes().is_err());
    }

    #[test]
    fn a_snapshot_of_an_older_epoch_is_refused() {
        let (_dir, files, shards) = sample();
        let payload = Payload::capture(&shards, Vec::new());
        assert_eq!(epoch_on_disk(&files).unwrap(), None);
        write(&files, Version::new(10), 5, &payload).unwrap();
        assert_eq!(epoch_on_disk(&files).unwrap(), Some(5));
        match write(&files, Version::new(11), 4, &payload) {
            Err(Error::NotLeader {
                epoch: Some(4),
                current: Some(5),
                leader: None,
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(!files.temp().exists());
        let loaded = load(&files, &Shards::new()).unwrap().unwrap();
        assert_eq!((loaded.global, loaded.epoch), (Version::new(10), 5));
        write(&files, Version::new(12), 5, &payload).unwrap();
        write(&files, Version::new(13), 6, &payload).unwrap();
        assert_eq!(epoch_on_disk(&files).unwrap(), Some(6));
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
            &Payload::capture(&shards, Vec::new()),
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
            &Payload::capture(&shards, Vec::new()),
        )
        .unwrap();
        let loaded = load(&files, &Shards::new()).unwrap().unwrap();
        assert_eq!(
            (loaded.global, loaded.newest),
            (Version::new(5), Version::new(10))
        );
    }
}
