//! Where a library keeps its skills: in a [`SharedMemory`] key, or in a
//! file of its own.
//!
//! The file is written the crash-safe way: the whole library goes to
//! `<file>.tmp`, which is fsynced, renamed over the file, and the directory
//! fsynced, so after a crash the file holds either the old library or the
//! new one. It starts with a header: magic `AGSK`, a format version (u16),
//! the payload's length (u64) and its CRC-32 (u32), all little-endian, then
//! the postcard payload; anything else is refused at open as corrupt.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::skill::Skill;
use crate::error::{Error, Result};
use crate::memory::{SharedMemory, Version};

/// Every skill of a library, by name (ordered, so ties break by name).
pub(super) type Skills = BTreeMap<String, Skill>;

const MAGIC: &[u8; 4] = b"AGSK";
const FORMAT: u16 = 1;
const HEADER: usize = 4 + 2 + 8 + 4;

pub(super) enum Store {
    Memory {
        memory: SharedMemory,
        key: String,
    },
    File {
        path: PathBuf,
        skills: Mutex<Skills>,
    },
}

impl Store {
    /// Opens the file at `path`: an absent file is an empty library.
    pub(super) fn open(path: &Path) -> Result<Store> {
        let skills = match fs::read(path) {
            Ok(bytes) => decode(path, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Skills::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Store::File {
            path: path.to_path_buf(),
            skills: Mutex::new(skills),
        })
    }

    pub(super) fn load(&self) -> Result<Skills> {
        match self {
            Store::Memory { memory, key } => Ok(memory
                .get::<Skills>(key)?
                .map(|v| v.value)
                .unwrap_or_default()),
            Store::File { skills, .. } => Ok(skills.lock().clone()),
        }
    }

    /// Changes the skills atomically and durably (as durable as the memory
    /// is, for the memory backend). `f` must leave the skills as they were
    /// when it fails; nothing is written then.
    pub(super) fn modify<R>(&self, mut f: impl FnMut(&mut Skills) -> Result<R>) -> Result<R> {
        match self {
            Store::Memory { memory, key } => loop {
                // Optimistic, as agents share the key: read, change, and
                // write only if nobody wrote in between; else start again.
                let (mut skills, read) = match memory.get::<Skills>(key)? {
                    Some(found) => (found.value, found.version),
                    None => (Skills::new(), Version::NONE),
                };
                let out = f(&mut skills)?;
                match memory.set(key, &skills, read) {
                    Ok(_) => return Ok(out),
                    Err(conflict) if conflict.is_conflict() => continue,
                    Err(other) => return Err(other),
                }
            },
            Store::File { path, skills } => {
                let mut guard = skills.lock();
                // Changed on a copy, so a failed write leaves the library as
                // the file still has it.
                let mut next = guard.clone();
                let out = f(&mut next)?;
                write(path, &next)?;
                *guard = next;
                Ok(out)
            }
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Store::Memory { key, .. } => format!("shared memory key {key:?}"),
            Store::File { path, .. } => format!("file {}", path.display()),
        }
    }
}

fn encode(skills: &Skills) -> Result<Vec<u8>> {
    let payload = postcard::to_allocvec(skills)?;
    let mut bytes = Vec::with_capacity(HEADER + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Skills> {
    let corrupt = |reason: String| Error::CorruptSnapshot {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < HEADER {
        return Err(corrupt(format!(
            "{} bytes, shorter than the header",
            bytes.len()
        )));
    }
    let (header, payload) = bytes.split_at(HEADER);
    if &header[..4] != MAGIC {
        return Err(corrupt("not a skill library (bad magic)".into()));
    }
    let format = u16::from_le_bytes([header[4], header[5]]);
    if format != FORMAT {
        return Err(corrupt(format!(
            "format version {format}, expected {FORMAT}"
        )));
    }
    let mut len = [0; 8];
    len.copy_from_slice(&header[6..14]);
    let len = u64::from_le_bytes(len);
    if len != payload.len() as u64 {
        return Err(corrupt(format!(
            "payload of {} bytes, header says {len}",
            payload.len()
        )));
    }
    let mut crc = [0; 4];
    crc.copy_from_slice(&header[14..18]);
    if crc32fast::hash(payload) != u32::from_le_bytes(crc) {
        return Err(corrupt("checksum mismatch".into()));
    }
    postcard::from_bytes(payload).map_err(|e| corrupt(format!("undecodable payload: {e}")))
}

fn write(path: &Path, skills: &Skills) -> Result<()> {
    let bytes = encode(skills)?;
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let mut file = File::create(&temp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, path)?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_damage_is_refused_with_a_reason() {
        let mut skills = Skills::new();
        skills.insert("a".into(), Skill::new("a", "k"));
        let good = encode(&skills).unwrap();
        let path = Path::new("lib.skills");
        assert_eq!(decode(path, &good).unwrap(), skills);
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        for (bytes, why) in [
            (&good[..3], "shorter than the header"),
            (&b"XXXX\x01\x00\0\0\0\0\0\0\0\0\0\0\0\0"[..], "bad magic"),
            (&good[..good.len() - 1], "header says"),
            (&flipped[..], "checksum"),
        ] {
            let error = decode(path, bytes).unwrap_err().to_string();
            assert!(error.contains(why), "{error}");
        }
    }
}
