//! Finished results: kept for `result` and `wait`, evicted oldest first.
//!
//! The store has its own lock, so an application waiting on results does
//! not contend with agents taking work. The distributor publishes results
//! while it still holds its own lock: at every moment a submitted task is
//! either live in the distributor or present in this store (or evicted).
//! The lock order is distributor, then results.
//!
//! Waking a sleeping waiter is a system call after which the scheduler may
//! run the woken thread in place of the waker; a waker that holds the
//! distributor's lock would then stall every agent reporting. So a publish
//! only notes that a waiter is due, and the publisher wakes it once it has
//! released the distributor's lock ([`Results::wake_due`], called by
//! `Shared::apply`, which follows every operation that can publish).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::slab::IdSlab;
use super::task::{TaskResult, TaskStatus};
use crate::ids::TaskId;
use crate::spin::AdaptiveSpin;

/// How long [`Results::wait`] polls at most before it sleeps.
const WAIT_SPIN: Duration = Duration::from_micros(50);

/// Readers (`get`) share the store; the few writers (one publish per batch
/// of results) get it promptly because the lock is writer-fair. Waiting is
/// done on a separate mutex and condvar, see [`Results::wait`].
pub(crate) struct Results {
    store: RwLock<Store>,
    waiters: AtomicUsize,
    /// Bumped after every publish, so a waiter polls one atomic instead of
    /// taking the store's lock in a loop (which would hold off the
    /// publishers it waits for).
    publishes: AtomicU64,
    /// The ids waited for, one entry per waiting thread: a publish wakes the
    /// waiters only when one of their results arrived, not at every result
    /// of every agent.
    waited: Mutex<Vec<TaskId>>,
    ready: Condvar,
    /// A publish stored a result some sleeping waiter waits for.
    wake_due: AtomicBool,
    /// How long a waiter polls before it sleeps.
    spin: AdaptiveSpin,
}

struct Store {
    map: IdSlab<TaskResult>,
    order: VecDeque<TaskId>,
    retention: usize,
}

/// What [`Results::wait`] found.
pub(crate) enum Waited {
    Finished(TaskResult),
    TimedOut,
}

impl Results {
    pub(crate) fn new(retention: usize) -> Results {
        Results {
            store: RwLock::new(Store {
                map: IdSlab::default(),
                order: VecDeque::new(),
                retention,
            }),
            waiters: AtomicUsize::new(0),
            publishes: AtomicU64::new(0),
            waited: Mutex::new(Vec::new()),
            ready: Condvar::new(),
            wake_due: AtomicBool::new(false),
            spin: AdaptiveSpin::new(WAIT_SPIN),
        }
    }

    pub(crate) fn get(&self, id: TaskId) -> Option<TaskResult> {
        self.store.read().map.get(id.get()).cloned()
    }

    /// The status and error of a finished task still retained.
    pub(crate) fn outcome(&self, id: TaskId) -> Option<(TaskStatus, Option<String>)> {
        self.store
            .read()
            .map
            .get(id.get())
            .map(|r| (r.status, r.error().map(str::to_owned)))
    }

    /// Stores `results` under one round of the lock and notes whether a
    /// waiter is due a wake-up (see [`wake_due`](Self::wake_due)); returns
    /// the ids of the results evicted to make room.
    pub(crate) fn publish(&self, results: &mut Vec<TaskResult>) -> Vec<TaskId> {
        let mut evicted = Vec::new();
        if results.is_empty() {
            return evicted;
        }
        let mut store = self.store.write();
        for result in results.drain(..) {
            store.order.push_back(result.id);
            store.map.insert(result.id.get(), result);
        }
        while store.map.len() > store.retention {
            match store.order.pop_front() {
                Some(oldest) => {
                    if store.map.remove(oldest.get()).is_some() {
                        evicted.push(oldest);
                    }
                }
                None => break,
            }
        }
        drop(store);
        self.publishes.fetch_add(1, Ordering::Release);
        // Pairs with the fence in `wait`: either this load sees the waiter,
        // or the waiter's check sees the results just stored.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            let waited = self.waited.lock();
            let store = self.store.read();
            if waited.iter().any(|id| store.map.contains(id.get())) {
                // The waiter is asleep: it holds `waited` until it sleeps.
                self.wake_due.store(true, Ordering::Release);
            }
        }
        evicted
    }

    /// Wakes the waiters a publish found due, if any. Called with the
    /// distributor's lock released, after every operation that can publish.
    pub(crate) fn wake_due(&self) {
        if self.wake_due.load(Ordering::Relaxed) && self.wake_due.swap(false, Ordering::Acquire) {
            self.ready.notify_all();
        }
    }

    /// Forgets every result: a new leader replaces this process's view with
    /// the one on disk.
    pub(crate) fn clear(&self) {
        let mut store = self.store.write();
        store.map = IdSlab::default();
        store.order.clear();
    }

    /// Waits until `id` has a result or `deadline` passes. The caller has
    /// checked that the task is live; the check below under the store's lock
    /// closes the gap in which it may have finished.
    pub(crate) fn wait(&self, id: TaskId, deadline: Instant) -> Waited {
        // Most tasks are short: poll a moment before paying for a sleep and
        // a wake-up.
        let mut seen = self.publishes.load(Ordering::Acquire);
        let mut found = self.get(id);
        let polled = Instant::now();
        self.spin.poll(Some(deadline), || {
            let now = self.publishes.load(Ordering::Acquire);
            if found.is_none() && now != seen {
                seen = now;
                found = self.get(id);
            }
            found.is_some()
        });
        if let Some(result) = found {
            return Waited::Finished(result);
        }
        let mut waited = self.waited.lock();
        waited.push(id);
        self.waiters.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let outcome = loop {
            // A publisher that stored the result after this check looks at
            // `waited` under its lock, which this thread holds until it
            // sleeps, so the notification cannot fall in between.
            if let Some(result) = self.get(id) {
                self.spin.waited(polled.elapsed());
                break Waited::Finished(result);
            }
            if self.ready.wait_until(&mut waited, deadline).timed_out() {
                break match self.get(id) {
                    Some(result) => Waited::Finished(result),
                    None => Waited::TimedOut,
                };
            }
        };
        if let Some(position) = waited.iter().position(|w| *w == id) {
            waited.swap_remove(position);
        }
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        outcome
    }
}
