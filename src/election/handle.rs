//! [`ElectionHandle`]: the application's view of a started election.

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex, MutexGuard};

use super::runner::Command;
use super::{ElectionEvent, LeaderInfo, Place};
use crate::error::{Error, Result};

/// What the election thread publishes to the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Clone)]
pub(crate) struct State {
    /// The epoch while leader.
    pub(crate) epoch: Option<u64>,
    /// When the leader last renewed its heartbeat (or was elected).
    pub(crate) renewed: Instant,
    /// The leader as last seen (this instance, while it leads).
    pub(crate) leader: Option<LeaderInfo>,
    /// The election thread has ended.
    pub(crate) stopped: bool,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            state: Mutex::new(State {
                epoch: None,
                renewed: Instant::now(),
                leader: None,
                stopped: false,
            }),
            changed: Condvar::new(),
        }
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock());
        self.changed.notify_all();
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }
}

/// A running election: a background thread (`agentry-election`) that stands
/// for election, renews the heartbeat while leader, and takes over when the
/// leader dies, resigns or freezes. Returned by
/// [`LeaderElection::start`](crate::LeaderElection::start).
///
/// The application learns what happens through [`events`](Self::events) and
/// queries ([`is_leader`](Self::is_leader), [`epoch`](Self::epoch),
/// [`leader`](Self::leader)). Dropping the handle resigns, like
/// [`resign`](Self::resign), ignoring errors.
///
/// ```
/// use agentry::{ElectionConfig, ElectionEvent, LeaderElection};
/// use std::time::Duration;
///
/// let dir = tempfile::tempdir()?;
/// let config = |name: &str| {
///     ElectionConfig::new(name)
///         .heartbeat_interval(Duration::from_millis(20))
///         .lease_timeout(Duration::from_millis(100))
///         .retry_interval(Duration::from_millis(5))
/// };
/// let first = LeaderElection::new(dir.path(), config("first"))?.start()?;
/// assert!(first.wait_until_leader(Duration::from_secs(10)));
/// let epoch = first.epoch().expect("leading");
///
/// // A second candidate follows until the first resigns, then leads under
/// // a greater epoch: the fencing token of its writes.
/// let second = LeaderElection::new(dir.path(), config("second"))?.start()?;
/// assert!(!second.is_leader());
/// first.resign()?;
/// assert!(second.wait_until_leader(Duration::from_secs(10)));
/// assert!(second.epoch() > Some(epoch));
/// assert!(first.events().iter().any(|e| e == ElectionEvent::Demoted { epoch }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ElectionHandle {
    place: Place,
    instance_id: String,
    renew_deadline: Duration,
    shared: Arc<Shared>,
    events: Receiver<ElectionEvent>,
    commands: Sender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ElectionHandle {
    pub(crate) fn new(
        place: Place,
        instance_id: String,
        renew_deadline: Duration,
        shared: Arc<Shared>,
        events: Receiver<ElectionEvent>,
        commands: Sender<Command>,
        thread: JoinHandle<()>,
    ) -> ElectionHandle {
        ElectionHandle {
            place,
            instance_id,
            renew_deadline,
            shared,
            events,
            commands,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Whether this instance leads now.
    ///
    /// Besides the election thread's view, this checks that the last
    /// heartbeat is recent (within the lease timeout minus one heartbeat
    /// interval), so a process that was frozen answers `false` as soon as it
    /// runs again, before its election thread has noticed it was deposed.
    pub fn is_leader(&self) -> bool {
        self.epoch().is_some()
    }

    /// The fencing token while this instance leads: the epoch it was
    /// elected with. `None` when it does not lead (see
    /// [`is_leader`](Self::is_leader)).
    pub fn epoch(&self) -> Option<u64> {
        let state = self.shared.state();
        state
            .epoch
            .filter(|_| state.renewed.elapsed() < self.renew_deadline)
    }

    /// Re-reads the persisted epoch and returns this leader's epoch if no
    /// later election happened: the check to make right before acting as
    /// leader. Costs one small file read (one round trip on Redis).
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`] if this instance does not lead (`epoch: None`) or
    /// a later epoch exists (`current` names it; the election thread steps
    /// down at its next tick); [`Error::Io`] if the epoch file cannot be read,
    /// [`Error::Backend`] if Redis cannot be reached.
    pub fn confirm(&self) -> Result<u64> {
        let Some(epoch) = self.epoch() else {
            return Err(Error::NotLeader {
                epoch: None,
                current: self.place.epoch().ok(),
                leader: None,
            });
        };
        let current = self.place.epoch()?;
        if current == epoch {
            Ok(epoch)
        } else {
            Err(Error::NotLeader {
                epoch: Some(epoch),
                current: Some(current),
                leader: None,
            })
        }
    }

    /// The leader as last seen: this instance while it leads, else the one
    /// named by the heartbeat record the last time the election thread
    /// looked (every retry interval). `None` if no leader is known.
    pub fn leader(&self) -> Option<LeaderInfo> {
        self.shared.state().leader.clone()
    }

    /// This candidate's instance id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The election's events, in the order they happened:
    /// [`ElectionEvent::Elected`], [`ElectionEvent::Demoted`] and
    /// [`ElectionEvent::LeaderChanged`]. The channel is unbounded (events
    /// are rare); it disconnects once the election has stopped and every
    /// event was received.
    pub fn events(&self) -> &Receiver<ElectionEvent> {
        &self.events
    }

    /// Waits until this instance leads, at most `timeout`; returns whether
    /// it does. Returns `false` at once after [`resign`](Self::resign).
    pub fn wait_until_leader(&self, timeout: Duration) -> bool {
        let deadline = crate::clock::deadline_after(timeout);
        let mut state = self.shared.state();
        while state.epoch.is_none() && !state.stopped {
            if self.shared_wait(&mut state, deadline) {
                break;
            }
        }
        drop(state);
        self.is_leader()
    }

    /// Steps down if leading (removing the heartbeat record and releasing
    /// the lock, so a follower takes over at once; emits
    /// [`ElectionEvent::Demoted`]) and stops being a candidate. Returns once
    /// the election thread has ended. Later calls do nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if releasing the lock failed (the lock is released
    /// anyway when its file closes, which happens here too).
    pub fn resign(&self) -> Result<()> {
        let Some(thread) = self.thread.lock().take() else {
            return Ok(());
        };
        let (reply, outcome) = crossbeam_channel::bounded(1);
        let sent = self.commands.send(Command::Resign(reply)).is_ok();
        let outcome = if sent { outcome.recv().ok() } else { None };
        // The thread only ends on a command, so it cannot have panicked
        // silently unless there is a bug; report that rather than hide it.
        if thread.join().is_err() {
            tracing::error!("the election thread panicked");
        }
        outcome.unwrap_or(Ok(()))
    }

    /// Waits on the condition variable until `deadline`; true once past it.
    fn shared_wait(&self, state: &mut MutexGuard<'_, State>, deadline: Instant) -> bool {
        self.shared.changed.wait_until(state, deadline).timed_out()
    }
}

impl Drop for ElectionHandle {
    fn drop(&mut self) {
        if let Err(e) = self.resign() {
            tracing::warn!(error = %e, "resigning on drop failed");
        }
    }
}

impl fmt::Debug for ElectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElectionHandle")
            .field("place", &self.place)
            .field("instance_id", &self.instance_id)
            .field("epoch", &self.epoch())
            .field("leader", &self.leader())
            .finish()
    }
}
