//! How much of the store survives a crash, and the background thread of the
//! periodic mode.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::store::Store;
use crate::error::{Error, Result};

/// When a persisted [`SharedMemory`](crate::SharedMemory) writes to disk, and
/// so what a crash (power loss, `kill -9`) can lose.
///
/// Whatever the mode, a crash never leaves a half-written store: the
/// snapshot is replaced atomically and a torn journal record is dropped at
/// open. A clean drop of the last handle writes a final snapshot in every mode.
///
/// The default, used by [`SharedMemory::open`](crate::SharedMemory::open),
/// is `Periodic(1 s)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Only [`persist`](crate::SharedMemory::persist) and a clean drop of the
    /// last handle write a snapshot. A crash loses every write since the last
    /// of those. The fastest writes; for state that can be rebuilt.
    OnPersist,
    /// As `OnPersist`, plus a background thread that writes a snapshot every
    /// interval if anything changed. A crash loses at most the writes of the
    /// last interval (plus the time one snapshot takes to write). The interval
    /// must not be zero.
    Periodic(Duration),
    /// Every write is appended to a journal file beside the snapshot and
    /// fsynced before the call returns, so a write that returned `Ok` survives
    /// any crash. Concurrent writers share one fsync (group commit), so the
    /// cost per write falls as writers are added. `persist` (and open) fold the
    /// journal into a new snapshot and start an empty one.
    ///
    /// Other threads may read a write a moment before its fsync finishes; if
    /// the process crashes in that moment the write is lost although it was
    /// read (its writer never saw `Ok`). Writes that depend on it, such as a
    /// `set` with its version, are journaled after it and so cannot survive
    /// without it.
    Journal,
}

impl Default for Durability {
    fn default() -> Self {
        Durability::Periodic(Duration::from_secs(1))
    }
}

impl Durability {
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a zero period, which would snapshot in a
    /// busy loop.
    pub(crate) fn validate(self) -> Result<Self> {
        match self {
            Durability::Periodic(period) if period.is_zero() => Err(Error::InvalidConfig(
                "Durability::Periodic needs a period above zero".into(),
            )),
            valid => Ok(valid),
        }
    }
}

/// The background snapshot thread of `Periodic` mode. Dropping the sender
/// wakes it at once, and [`Periodic::stop`] waits for it to finish.
#[derive(Debug)]
pub(crate) struct Periodic {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Periodic {
    /// Starts the thread. It holds the store (not the handle), so the last
    /// handle's drop can stop it and then write the final snapshot itself.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the thread cannot be spawned.
    pub(crate) fn start(store: Arc<Store>, period: Duration) -> Result<Periodic> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = thread::Builder::new()
            .name("agentry-memory-snapshot".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    if store.changed_since_persist() {
                        if let Err(e) = store.persist() {
                            tracing::warn!(error = %e, "periodic snapshot failed; retrying next period");
                        }
                    }
                }
            })?;
        Ok(Periodic { stop, thread })
    }

    /// Stops the thread and waits for it (at most one snapshot in progress).
    pub(crate) fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::warn!("the periodic snapshot thread panicked");
        }
    }
}
