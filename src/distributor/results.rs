//! Finished results: kept for `result` and `wait`, evicted oldest first.
//!
//! The store has its own lock, so an application waiting on results does
//! not contend with agents taking work. The distributor publishes results
//! while it still holds its own lock: at every moment a submitted task is
//! either live in the distributor or present in this store (or evicted).
//! The lock order is distributor, then results.

use std::collections::VecDeque;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::IdMap;
use super::task::{TaskResult, TaskStatus};
use crate::ids::TaskId;

pub(crate) struct Results {
    store: Mutex<Store>,
    ready: Condvar,
}

struct Store {
    map: IdMap<TaskId, TaskResult>,
    order: VecDeque<TaskId>,
    retention: usize,
    waiters: usize,
}

/// What [`Results::wait`] found.
pub(crate) enum Waited {
    Finished(TaskResult),
    TimedOut,
}

impl Results {
    pub(crate) fn new(retention: usize) -> Results {
        Results {
            store: Mutex::new(Store {
                map: IdMap::default(),
                order: VecDeque::new(),
                retention,
                waiters: 0,
            }),
            ready: Condvar::new(),
        }
    }

    pub(crate) fn get(&self, id: TaskId) -> Option<TaskResult> {
        self.store.lock().map.get(&id).cloned()
    }

    /// The status and error of a finished task still retained.
    pub(crate) fn outcome(&self, id: TaskId) -> Option<(TaskStatus, Option<String>)> {
        self.store
            .lock()
            .map
            .get(&id)
            .map(|r| (r.status, r.error().map(str::to_owned)))
    }

    /// Stores `results` and wakes waiters, under one round of the lock.
    pub(crate) fn publish(&self, results: &mut Vec<TaskResult>) {
        if results.is_empty() {
            return;
        }
        let mut store = self.store.lock();
        for result in results.drain(..) {
            store.order.push_back(result.id);
            store.map.insert(result.id, result);
        }
        while store.map.len() > store.retention {
            match store.order.pop_front() {
                Some(oldest) => {
                    store.map.remove(&oldest);
                }
                None => break,
            }
        }
        if store.waiters > 0 {
            self.ready.notify_all();
        }
    }

    /// Waits until `id` has a result or `deadline` passes. The caller has
    /// checked that the task is live; the check below under the store's lock
    /// closes the gap in which it may have finished.
    pub(crate) fn wait(&self, id: TaskId, deadline: Instant) -> Waited {
        let mut store = self.store.lock();
        loop {
            if let Some(result) = store.map.get(&id) {
                return Waited::Finished(result.clone());
            }
            store.waiters += 1;
            let timed_out = self.ready.wait_until(&mut store, deadline).timed_out();
            store.waiters -= 1;
            if timed_out {
                return match store.map.get(&id) {
                    Some(result) => Waited::Finished(result.clone()),
                    None => Waited::TimedOut,
                };
            }
        }
    }
}
