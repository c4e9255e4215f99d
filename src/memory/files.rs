//! Where a persisted store keeps its files, and the directory fsync that makes
//! renames and creations durable.
//!
//! For a snapshot at `dir/name`, the store uses:
//!
//! * `dir/name`: the snapshot;
//! * `dir/name.tmp`: the next snapshot while it is written (renamed over
//!   `dir/name` once complete);
//! * `dir/name.spare`: the previous snapshot's file, kept (hard-linked
//!   before the rename that replaces it) to be overwritten in place as the
//!   next `name.tmp`;
//! * `dir/name.journal.N`: journal generation `N` (Journal mode, or left over
//!   from it), replayed in increasing `N`;
//! * `dir/name.lock`: locked (`flock`) by a process for the instant it checks
//!   the fencing epoch of the snapshot on disk and renames its own over it.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The file names of one persisted store.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    snapshot: PathBuf,
    dir: PathBuf,
    name: OsString,
}

impl Files {
    /// # Errors
    ///
    /// [`Error::InvalidInput`] if `path` does not name a file (`/`, `..`).
    pub(crate) fn new(path: &Path) -> Result<Files> {
        let name = path
            .file_name()
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "snapshot path {} does not name a file",
                    path.display()
                ))
            })?
            .to_os_string();
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(Files {
            snapshot: path.to_path_buf(),
            dir,
            name,
        })
    }

    pub(crate) fn snapshot(&self) -> &Path {
        &self.snapshot
    }

    pub(crate) fn temp(&self) -> PathBuf {
        self.sibling(".tmp")
    }

    pub(crate) fn spare(&self) -> PathBuf {
        self.sibling(".spare")
    }

    pub(crate) fn lock(&self) -> PathBuf {
        self.sibling(".lock")
    }

    pub(crate) fn journal(&self, generation: u64) -> PathBuf {
        self.sibling(&format!(".journal.{generation}"))
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.name.clone();
        name.push(suffix);
        self.dir.join(name)
    }

    /// The journal generations present on disk, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the directory cannot be listed (a missing directory is
    /// not an error: it holds no journal).
    pub(crate) fn journals(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut prefix = self.name.clone();
        prefix.push(".journal.");
        let prefix = prefix.to_string_lossy().into_owned();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let generation = name
                .to_str()
                .and_then(|name| name.strip_prefix(prefix.as_str()))
                .and_then(|number| number.parse::<u64>().ok());
            if let Some(generation) = generation {
                found.push((generation, entry.path()));
            }
        }
        found.sort_unstable_by_key(|(generation, _)| *generation);
        Ok(found)
    }

    /// Makes the directory's entries (created, renamed, removed files) durable.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the directory cannot be opened or synced.
    pub(crate) fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_sit_beside_the_snapshot() {
        let files = Files::new(Path::new("state/mem.snap")).unwrap();
        assert_eq!(files.temp(), Path::new("state/mem.snap.tmp"));
        assert_eq!(files.spare(), Path::new("state/mem.snap.spare"));
        assert_eq!(files.journal(3), Path::new("state/mem.snap.journal.3"));
        assert_eq!(files.lock(), Path::new("state/mem.snap.lock"));
        let bare = Files::new(Path::new("mem.snap")).unwrap();
        assert_eq!(bare.journal(0), Path::new("./mem.snap.journal.0"));
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        assert!(matches!(
            Files::new(Path::new("/")),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn journals_are_listed_oldest_first_and_strangers_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(&dir.path().join("m")).unwrap();
        for name in [
            "m.journal.10",
            "m.journal.2",
            "m.journal.x",
            "other.journal.1",
        ] {
            File::create(dir.path().join(name)).unwrap();
        }
        let generations: Vec<u64> = files
            .journals()
            .unwrap()
            .into_iter()
            .map(|(g, _)| g)
            .collect();
        assert_eq!(generations, [2, 10]);
    }
}
