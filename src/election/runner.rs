//! The background thread of a started election: stands for election, keeps
//! the heartbeat, watches the leader, and takes over.
//!
//! It waits on three things at once (`select!`): a command from the handle,
//! `leader.lock` handed over by a *locker* thread, and its next tick. The
//! locker thread does nothing but block in `flock` on `leader.lock`, so the
//! moment the kernel releases the leader's lock (the leader exited, crashed
//! or resigned) this candidate holds it, without any polling delay. A
//! blocking `flock` cannot be interrupted, so a locker whose election has
//! stopped stays parked until it gets the lock, then drops it and ends.
//!
//! On Redis there is no lock to wait on: a follower's tick tries the
//! election itself (one script, which wins only once the lease is gone).

use std::io;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, never, select};
use fslock::LockFile;

use super::config::ElectionConfig;
use super::handle::Shared;
use super::lease::{Leadership, Observed, elect};
use super::{ElectionEvent, LeaderInfo, Place};
use crate::error::{Error, Result};

/// What the handle asks of the thread.
#[derive(Debug)]
pub(crate) enum Command {
    /// Step down if leader and stop; the outcome goes back on the channel.
    Resign(Sender<Result<()>>),
}

pub(crate) struct Runner {
    place: Place,
    config: ElectionConfig,
    shared: Arc<Shared>,
    events: Sender<ElectionEvent>,
    commands: Receiver<Command>,
    leadership: Option<Leadership>,
    /// Delivers `leader.lock` once the locker thread has it.
    locker: Option<Receiver<io::Result<LockFile>>>,
    /// Not a candidate before this instant (after an error, or deposed).
    standby_until: Option<Instant>,
    /// The directory as last seen, and since when it has looked like that.
    observed: Option<(Observed, Instant)>,
    /// Who the last `LeaderChanged` named: (instance id, pid, epoch).
    announced: Option<(String, u32, u64)>,
    /// When the leader next renews its heartbeat.
    next_beat: Instant,
}

impl Runner {
    pub(crate) fn new(
        place: Place,
        config: ElectionConfig,
        shared: Arc<Shared>,
        events: Sender<ElectionEvent>,
        commands: Receiver<Command>,
    ) -> Runner {
        Runner {
            place,
            config,
            shared,
            events,
            commands,
            leadership: None,
            locker: None,
            standby_until: None,
            observed: None,
            announced: None,
            next_beat: Instant::now(),
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            self.spawn_locker();
            let now = Instant::now();
            let wake = if self.leadership.is_some() {
                self.next_beat
            } else {
                crate::clock::deadline_from(now, self.config.retry())
            };
            let locker = self.locker.clone().unwrap_or_else(never);
            select! {
                recv(self.commands) -> command => {
                    let outcome = self.step_down_voluntarily();
                    if let Ok(Command::Resign(reply)) = command {
                        let _ = reply.send(outcome);
                    }
                    self.shared.update(|state| state.stopped = true);
                    return;
                }
                recv(locker) -> lock => {
                    self.locker = None;
                    match lock {
                        Ok(Ok(lock)) => self.on_lock(lock),
                        Ok(Err(e)) => self.back_off("waiting for the leader lock failed", &e.into()),
                        Err(_) => {} // the locker died with the lock unheld: spawn another
                    }
                }
                default(wake.saturating_duration_since(now)) => {
                    if self.leadership.is_some() {
                        self.heartbeat();
                    } else {
                        self.watch();
                    }
                }
            }
        }
    }

    /// Starts a locker thread if this candidate needs `leader.lock` and has
    /// none waiting for it.
    fn spawn_locker(&mut self) {
        let Some(dir) = self.place.dir() else {
            return;
        };
        let needs_lock = self.leadership.as_ref().is_none_or(|l| !l.holds_lock());
        let standing = self
            .standby_until
            .is_none_or(|until| Instant::now() >= until);
        if self.locker.is_some() || !needs_lock || !standing {
            return;
        }
        let (send, receive) = crossbeam_channel::bounded(1);
        let path = dir.leader_lock();
        let spawned = thread::Builder::new()
            .name("agentry-election-lock".into())
            .spawn(move || {
                let locked = LockFile::open(&path).and_then(|mut lock| lock.lock().map(|()| lock));
                if locked.is_ok() {
                    // The takeover benchmark times this event.
                    tracing::debug!(leader_lock_acquired = true, "leader lock acquired");
                }
                // If the election stopped meanwhile, the send fails and the
                // lock is dropped, that is released, right here.
                let _ = send.send(locked);
            });
        match spawned {
            Ok(_) => self.locker = Some(receive),
            Err(e) => self.back_off("cannot start the lock thread", &e.into()),
        }
    }

    fn on_lock(&mut self, lock: LockFile) {
        if let Some(leadership) = &mut self.leadership {
            // A takeover leader gets the lock its frozen predecessor let go.
            leadership.adopt_lock(lock);
            return;
        }
        let Some(dir) = self.place.dir() else {
            return;
        };
        match elect(dir, &self.config, Some(lock), None, self.config.retry()) {
            Ok(Some(leadership)) => self.become_leader(leadership, Instant::now()),
            Ok(None) => {} // another election holds epoch.lock; try again
            Err(e) => self.back_off("election failed", &e),
        }
    }

    /// A follower's tick: report leader changes, and take over from a
    /// leader whose heartbeat has not changed for a whole lease.
    fn watch(&mut self) {
        let dir = match &self.place {
            Place::Dir(dir) => dir.clone(),
            #[cfg(feature = "redis")]
            Place::Redis(seat) => {
                let seat = Arc::clone(seat);
                return self.watch_redis(&seat);
            }
        };
        let now = Instant::now();
        let seen = dir.observe();
        match &self.observed {
            Some((observed, _)) if *observed == seen => {}
            _ => {
                self.announce_record();
                self.observed = Some((seen, now));
                return;
            }
        }
        let Some((observed, since)) = &self.observed else {
            return;
        };
        let standing = self.standby_until.is_none_or(|until| now >= until);
        if now.duration_since(*since) < self.config.lease() || !standing {
            return;
        }
        tracing::warn!(lease = ?self.config.lease(), "the leader's heartbeat expired; taking over");
        let observed = observed.clone();
        match elect(
            &dir,
            &self.config,
            None,
            Some(&observed),
            self.config.retry(),
        ) {
            Ok(Some(leadership)) => self.become_leader(leadership, Instant::now()),
            // Someone else changed the directory first: watch it afresh.
            Ok(None) => self.observed = None,
            Err(e) => {
                self.observed = None;
                self.back_off("takeover failed", &e);
            }
        }
    }

    /// A follower's tick on Redis: stand for election (it wins only if no
    /// lease is live), else report who leads.
    #[cfg(feature = "redis")]
    fn watch_redis(&mut self, seat: &Arc<super::redis_seat::RedisSeat>) {
        if self
            .standby_until
            .is_some_and(|until| Instant::now() < until)
        {
            self.announce_record();
            return;
        }
        let started = Instant::now();
        match super::lease::elect_on_redis(seat, &self.config) {
            Ok(Some(leadership)) => self.become_leader(leadership, started),
            Ok(None) => self.announce_record(),
            Err(e) => self.back_off("election on redis failed", &e),
        }
    }

    /// A leader's tick: confirm the epoch and renew the heartbeat; step down
    /// when deposed, or when renewing keeps failing until the renew deadline.
    fn heartbeat(&mut self) {
        let Some(leadership) = &mut self.leadership else {
            return;
        };
        // The lease runs from before the renewal was sent, never after.
        let started = Instant::now();
        match leadership.renew() {
            Ok(()) => {
                self.shared.update(|state| state.renewed = started);
                self.next_beat = crate::clock::deadline_from(started, self.config.heartbeat());
            }
            Err(Error::NotLeader { epoch, current, .. }) => {
                tracing::warn!(
                    ?epoch,
                    ?current,
                    "deposed by a later election; stepping down"
                );
                // A deposed leader was frozen or slow: it waits a lease
                // before standing again, so the new leader keeps the lead.
                self.demote(Some(crate::clock::deadline_after(self.config.lease())));
            }
            Err(e) => {
                let renewed = self.shared.state().renewed;
                if renewed.elapsed() >= self.config.renew_deadline() {
                    tracing::error!(error = %e, "heartbeat not renewed within the lease; stepping down");
                    self.demote(Some(crate::clock::deadline_after(self.config.retry())));
                } else {
                    tracing::warn!(error = %e, "heartbeat failed; retrying");
                    self.next_beat = crate::clock::deadline_after(self.config.retry());
                }
            }
        }
    }

    /// `started`: when the election began, from which its lease runs.
    fn become_leader(&mut self, leadership: Leadership, started: Instant) {
        let epoch = leadership.epoch();
        let info = leadership.info();
        self.leadership = Some(leadership);
        self.next_beat = crate::clock::deadline_from(started, self.config.heartbeat());
        self.shared.update(|state| {
            state.epoch = Some(epoch);
            state.renewed = started;
            state.leader = Some(info.clone());
        });
        let _ = self.events.send(ElectionEvent::Elected { epoch });
        self.announce(Some(info));
    }

    /// Leaves leadership involuntarily (deposed, or unable to renew).
    fn demote(&mut self, standby_until: Option<Instant>) {
        let Some(leadership) = self.leadership.take() else {
            return;
        };
        let epoch = leadership.epoch();
        drop(leadership);
        self.shared.update(|state| state.epoch = None);
        let _ = self.events.send(ElectionEvent::Demoted { epoch });
        self.standby_until = standby_until;
        self.observed = None;
    }

    fn step_down_voluntarily(&mut self) -> Result<()> {
        let Some(leadership) = self.leadership.take() else {
            return Ok(());
        };
        let epoch = leadership.epoch();
        let outcome = leadership.resign();
        self.shared.update(|state| {
            state.epoch = None;
            state.leader = None;
        });
        let _ = self.events.send(ElectionEvent::Demoted { epoch });
        tracing::info!(epoch, "resigned the leadership");
        outcome
    }

    fn back_off(&mut self, what: &str, error: &Error) {
        tracing::warn!(%error, retry = ?self.config.retry(), "{what}");
        self.standby_until = Some(crate::clock::deadline_after(self.config.retry()));
    }

    /// Announces the leader the heartbeat record names. A damaged record
    /// names nobody new: the announcement stays as it was.
    fn announce_record(&mut self) {
        match self.place.record() {
            Ok(record) => self.announce(record.map(|r| r.info())),
            Err(e) => tracing::debug!(error = %e, "unreadable heartbeat record"),
        }
    }

    fn announce(&mut self, leader: Option<LeaderInfo>) {
        let identity = leader
            .as_ref()
            .map(|l| (l.instance_id.clone(), l.pid, l.epoch));
        if identity != self.announced {
            self.announced = identity;
            if self.leadership.is_none() {
                self.shared.update(|state| state.leader = leader.clone());
            }
            let _ = self.events.send(ElectionEvent::LeaderChanged { leader });
        }
    }
}
