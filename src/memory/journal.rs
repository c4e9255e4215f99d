//! The journal: every write of a Journal-mode store, appended and fsynced
//! before the write returns, with group commit.
//!
//! # Format (integers little-endian)
//!
//! A journal file starts with a 24-byte header: magic `AGNTJRNL`, format
//! version `u32` (1), a reserved zero `u32`, and the fencing epoch `u64` of the
//! process that created it. Records follow back to back, each framed as
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | payload length `n`, `u32`, never 0 |
//! | 4..8 | CRC-32 of the payload, `u32` |
//! | 8..8+n | payload: postcard `(u64 version, String key, Option<bytes> value)`; `None` is a delete |
//!
//! # Group commit
//!
//! A writer appends its record to an in-memory buffer under a mutex and gets a
//! sequence number, then waits until that number is durable. Whoever finds no
//! flush running becomes the flusher: it takes the whole buffer, releases the
//! mutex, writes the batch and calls `fdatasync`, then marks everything up to
//! the last sequence number in its batch durable and wakes all waiters. Writers
//! that appended meanwhile wait for the flush in progress and then either find
//! themselves covered or one of them leads the next flush. So N concurrent
//! writers share one fsync instead of queueing for N, and nobody returns before
//! the fsync covering its record has finished.
//!
//! A failed write or fsync poisons the journal: after an fsync error the
//! kernel may have dropped the dirty pages, so retrying could report success
//! for data that is gone. Every later write fails until the store is reopened.
//!
//! # Recovery
//!
//! The file is read front to back. A bad last record (shorter than its
//! length, failing its checksum, or zero bytes left by a crash) is a write torn
//! by the crash: it was never acknowledged, so it is dropped. A bad record with
//! intact records after it is corruption: [`Error::CorruptJournal`]. A length
//! field damaged so that it points past the end of the file is
//! indistinguishable from a torn write, and is treated as one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::Version;
use super::codec::Bytes;
use super::files::Files;
use crate::error::{Error, Result};

const MAGIC: [u8; 8] = *b"AGNTJRNL";
const FORMAT: u32 = 1;
const HEADER_LEN: usize = 24;
const FRAME_LEN: usize = 8;

/// An open journal generation accepting appends.
#[derive(Debug)]
pub(crate) struct Journal {
    state: Mutex<State>,
    flushed: Condvar,
}

#[derive(Debug)]
struct State {
    generation: u64,
    file: Arc<File>,
    /// Framed records appended but not yet handed to a flusher.
    pending: Vec<u8>,
    /// Sequence number of the last record appended.
    appended: u64,
    /// Sequence number of the last record known to be on disk.
    durable: u64,
    /// Whether some thread is writing a batch right now.
    flushing: bool,
    /// The error that poisoned the journal, if any.
    failure: Option<(io::ErrorKind, String)>,
}

/// A record's place in the journal: wait on it to know the record is durable.
#[derive(Debug, Clone, Copy)]
#[must_use = "a journal write is not durable until its ticket is waited on"]
pub(crate) struct Ticket(u64);

impl Journal {
    /// Creates journal generation `generation` (a new, empty file).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file exists already or cannot be created and
    /// synced.
    pub(crate) fn create(files: &Files, generation: u64, epoch: u64) -> Result<Journal> {
        let file = create_file(files, generation, epoch)?;
        Ok(Journal {
            state: Mutex::new(State {
                generation,
                file: Arc::new(file),
                pending: Vec::new(),
                appended: 0,
                durable: 0,
                flushing: false,
                failure: None,
            }),
            flushed: Condvar::new(),
        })
    }

    /// Queues one record. Call it while holding the key's shard lock, so the
    /// journal orders the writes of one key as the store does.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the journal is poisoned; [`Error::InvalidInput`] if
    /// the record exceeds 4 GiB.
    pub(crate) fn append(
        &self,
        version: Version,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<Ticket> {
        let payload = postcard::to_stdvec(&(version.get(), key, value.map(Bytes)))?;
        let len = u32::try_from(payload.len()).map_err(|_| {
            Error::InvalidInput(format!(
                "a journal record for key {key:?} would take {} bytes, over the 4 GiB limit",
                payload.len()
            ))
        })?;
        let crc = crc32fast::hash(&payload);
        let mut state = self.state.lock();
        state.check()?;
        state.pending.extend_from_slice(&len.to_le_bytes());
        state.pending.extend_from_slice(&crc.to_le_bytes());
        state.pending.extend_from_slice(&payload);
        state.appended += 1;
        Ok(Ticket(state.appended))
    }

    /// Returns once the record behind `ticket` is on disk, flushing it (and
    /// every record queued with it) if no other thread is doing so.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the write or fsync failed; the journal is then
    /// poisoned.
    pub(crate) fn wait(&self, ticket: Ticket) -> Result<()> {
        let mut state = self.state.lock();
        loop {
            if state.durable >= ticket.0 {
                return Ok(());
            }
            state.check()?;
            if state.flushing {
                self.flushed.wait(&mut state);
            } else {
                self.lead_flush(&mut state, || Ok(None));
            }
        }
    }

    /// Makes everything queued so far durable in the current generation, then
    /// directs later records to a new generation. Returns the generation
    /// retired: every record in it was appended before this call returned, so
    /// a snapshot whose global version is read afterwards covers all of them.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if flushing or creating the new file failed; the journal
    /// is then poisoned.
    pub(crate) fn rotate(&self, files: &Files, epoch: u64) -> Result<u64> {
        let mut state = self.state.lock();
        while state.flushing {
            self.flushed.wait(&mut state);
        }
        state.check()?;
        let retired = state.generation;
        self.lead_flush(&mut state, || {
            create_file(files, retired + 1, epoch).map(Some)
        });
        state.check()?;
        Ok(retired)
    }

    /// Writes and syncs the pending batch with the mutex released, then (still
    /// as the only flusher) runs `then`; a file it returns becomes the next
    /// generation. Errors poison the journal.
    fn lead_flush(
        &self,
        state: &mut MutexGuard<'_, State>,
        then: impl FnOnce() -> Result<Option<File>>,
    ) {
        state.flushing = true;
        let mut batch = std::mem::take(&mut state.pending);
        let covered = state.appended;
        let file = Arc::clone(&state.file);
        let outcome = MutexGuard::unlocked(state, || {
            if !batch.is_empty() {
                (&*file).write_all(&batch)?;
                file.sync_data()?;
            }
            then()
        });
        state.flushing = false;
        match outcome {
            Ok(next) => {
                state.durable = covered;
                if let Some(next) = next {
                    state.file = Arc::new(next);
                    state.generation += 1;
                }
                // Hand the emptied buffer back so its capacity is reused.
                if state.pending.is_empty() {
                    batch.clear();
                    state.pending = batch;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "journal write failed; the journal is poisoned");
                state.failure = Some(match e {
                    Error::Io(e) => (e.kind(), e.to_string()),
                    other => (io::ErrorKind::Other, other.to_string()),
                });
            }
        }
        self.flushed.notify_all();
    }
}

impl State {
    fn check(&self) -> Result<()> {
        match &self.failure {
            None => Ok(()),
            Some((kind, message)) => Err(io::Error::new(
                *kind,
                format!("the journal failed earlier and accepts no more writes: {message}"),
            )
            .into()),
        }
    }
}

fn create_file(files: &Files, generation: u64, epoch: u64) -> Result<File> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(files.journal(generation))?;
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    header[16..24].copy_from_slice(&epoch.to_le_bytes());
    file.write_all(&header)?;
    file.sync_all()?;
    files.sync_dir()?;
    Ok(file)
}

/// What replaying one journal file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// The greatest version of any intact record (applied or skipped).
    pub(crate) max_version: Version,
    /// Records applied.
    pub(crate) applied: u64,
    /// Bytes of a torn tail dropped (0 if the file ended cleanly).
    pub(crate) dropped: u64,
    /// Records skipped because the file's epoch is older than the snapshot's.
    pub(crate) fenced: u64,
}

/// Replays the journal at `path`, calling `apply(version, key, value)` for
/// every record newer than `covered` (the snapshot's global version), in file
/// order. `value` is `None` for a delete. Only the `last` file may end in a
/// torn record: earlier generations were fully synced before the next began.
/// A file whose header epoch is below `epoch` (the snapshot's) is fenced off:
/// its records are counted, not applied.
///
/// # Errors
///
/// [`Error::CorruptJournal`] for a foreign or damaged file; [`Error::Io`] if
/// it cannot be read.
pub(crate) fn replay(
    path: &Path,
    last: bool,
    covered: Version,
    epoch: u64,
    mut apply: impl FnMut(Version, &str, Option<&[u8]>),
) -> Result<Replayed> {
    let data = std::fs::read(path)?;
    let corrupt = |offset: usize, reason: String| Error::CorruptJournal {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut replayed = Replayed {
        max_version: Version::NONE,
        applied: 0,
        dropped: 0,
        fenced: 0,
    };
    let magic_seen = data.get(..MAGIC.len()).unwrap_or(&data);
    if !MAGIC.starts_with(magic_seen) {
        return Err(corrupt(
            0,
            "not an agentry journal (bad magic bytes)".into(),
        ));
    }
    let Some(header) = data.get(..HEADER_LEN) else {
        // A crash while the file was being created: it holds no record yet.
        if last {
            replayed.dropped = data.len() as u64;
            return Ok(replayed);
        }
        return Err(corrupt(0, "truncated header".into()));
    };
    let format = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if format != FORMAT {
        return Err(corrupt(
            8,
            format!("format version {format} is not supported (this build reads version {FORMAT})"),
        ));
    }
    let written_under = u64::from_le_bytes([
        header[16], header[17], header[18], header[19], header[20], header[21], header[22],
        header[23],
    ]);
    let fenced = written_under < epoch;
    if fenced {
        tracing::warn!(
            path = %path.display(),
            journal_epoch = written_under,
            snapshot_epoch = epoch,
            "skipping the journal of a deposed leader"
        );
    }
    let mut offset = HEADER_LEN;
    while let Some(rest) = data.get(offset..).filter(|rest| !rest.is_empty()) {
        let frame = match read_frame(rest) {
            Ok(frame) => frame,
            Err(reason) => {
                let torn = rest.len() <= FRAME_LEN
                    || reason.ends_with(TORN)
                    || rest.iter().all(|&b| b == 0);
                if last && torn {
                    tracing::warn!(
                        path = %path.display(),
                        offset,
                        bytes = rest.len(),
                        "dropping a torn last journal record: {reason}"
                    );
                    replayed.dropped = rest.len() as u64;
                    return Ok(replayed);
                }
                return Err(corrupt(offset, reason));
            }
        };
        let (payload, frame_len) = frame;
        let decoded = postcard::take_from_bytes::<(u64, &str, Option<&[u8]>)>(payload);
        let (version, key, value) = match decoded {
            Ok((record, tail)) if tail.is_empty() && record.0 != 0 => record,
            Ok(_) => {
                return Err(corrupt(
                    offset,
                    "record has an invalid version or trailing bytes".into(),
                ));
            }
            Err(e) => return Err(corrupt(offset, format!("record does not decode: {e}"))),
        };
        let version = Version::new(version);
        replayed.max_version = replayed.max_version.max(version);
        if fenced {
            replayed.fenced += 1;
        } else if version > covered {
            apply(version, key, value);
            replayed.applied += 1;
        }
        offset += frame_len;
    }
    Ok(replayed)
}

/// Suffix of the reasons that mean "the record reaches the end of the file",
/// the signature of a write cut short by a crash.
const TORN: &str = "at the end of the file";

/// Splits one framed record off `rest`: its payload and its framed length.
fn read_frame(rest: &[u8]) -> Result<(&[u8], usize), String> {
    let Some(frame) = rest.get(..FRAME_LEN) else {
        return Err(format!("incomplete record header {TORN}"));
    };
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if len == 0 {
        return Err("zero-length record".into());
    }
    let Some(payload) = rest.get(FRAME_LEN..FRAME_LEN + len) else {
        return Err(format!("record of {len} bytes cut short {TORN}"));
    };
    let computed = crc32fast::hash(payload);
    if computed != crc {
        let reason = format!("checksum mismatch (stored {crc:#010x}, computed {computed:#010x})");
        return Err(if rest.len() == FRAME_LEN + len {
            format!("{reason} {TORN}")
        } else {
            reason
        });
    }
    Ok((payload, FRAME_LEN + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Record = (u64, String, Option<Vec<u8>>);

    fn records(path: &Path, last: bool) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        replay(path, last, Version::NONE, 0, |v, k, val| {
            out.push((v.get(), k.to_owned(), val.map(<[u8]>::to_vec)))
        })?;
        Ok(out)
    }

    fn written(n: u64) -> (tempfile::TempDir, Files, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(&dir.path().join("m")).unwrap();
        let journal = Journal::create(&files, 1, 0).unwrap();
        for v in 1..=n {
            let value = (v % 3 != 0).then(|| vec![v as u8; 5]);
            let ticket = journal
                .append(Version::new(v), &format!("k{v}"), value.as_deref())
                .unwrap();
            journal.wait(ticket).unwrap();
        }
        let path = files.journal(1);
        (dir, files, path)
    }

    #[test]
    fn appended_records_replay_in_order() {
        let (_dir, _files, path) = written(6);
        let got = records(&path, true).unwrap();
        assert_eq!(got.len(), 6);
        assert_eq!(got[0], (1, "k1".into(), Some(vec![1; 5])));
        assert_eq!(got[2], (3, "k3".into(), None));
    }

    #[test]
    fn a_torn_last_record_is_dropped_at_every_cut() {
        let (_dir, _files, path) = written(3);
        let full = std::fs::read(&path).unwrap();
        let two = {
            std::fs::write(&path, &full).unwrap();
            let mut n = 0;
            let mut offset = HEADER_LEN;
            while n < 2 {
                offset += read_frame(&full[offset..]).unwrap().1;
                n += 1;
            }
            offset
        };
        for cut in two + 1..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            assert_eq!(records(&path, true).unwrap().len(), 2, "cut at {cut}");
            assert!(matches!(
                records(&path, false),
                Err(Error::CorruptJournal { .. })
            ));
        }
    }

    #[test]
    fn a_bad_record_before_the_end_is_corruption() {
        let (_dir, _files, path) = written(3);
        let mut data = std::fs::read(&path).unwrap();
        data[HEADER_LEN + FRAME_LEN + 1] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        match records(&path, true) {
            Err(Error::CorruptJournal { offset, reason, .. }) => {
                assert_eq!(offset, HEADER_LEN as u64);
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_journal_of_an_older_epoch_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(&dir.path().join("m")).unwrap();
        let journal = Journal::create(&files, 1, 3).unwrap();
        let ticket = journal.append(Version::new(1), "k", Some(b"v")).unwrap();
        journal.wait(ticket).unwrap();
        let mut applied = 0;
        let replayed = replay(&files.journal(1), true, Version::NONE, 4, |_, _, _| {
            applied += 1
        })
        .unwrap();
        assert_eq!((applied, replayed.fenced), (0, 1));
        let replayed = replay(&files.journal(1), true, Version::NONE, 3, |_, _, _| {
            applied += 1
        })
        .unwrap();
        assert_eq!((applied, replayed.fenced), (1, 0));
    }

    #[test]
    fn rotation_starts_a_new_generation() {
        let (_dir, files, path) = written(2);
        let journal = Journal::create(&files, 5, 0).unwrap();
        let ticket = journal.append(Version::new(9), "a", Some(b"x")).unwrap();
        assert_eq!(journal.rotate(&files, 0).unwrap(), 5);
        journal.wait(ticket).unwrap();
        let ticket = journal.append(Version::new(10), "b", None).unwrap();
        journal.wait(ticket).unwrap();
        assert_eq!(records(&files.journal(5), false).unwrap().len(), 1);
        assert_eq!(records(&files.journal(6), true).unwrap()[0].0, 10);
        assert_eq!(records(&path, false).unwrap().len(), 2);
    }
}
