//! Priority aging (off by default): a task that has waited a whole aging
//! interval in its priority's queue moves to the back of the next level's
//! queue, so a steady stream of higher-priority work cannot starve it
//! forever. After three intervals a low task is critical, and critical
//! tasks are served first in, first out.
//!
//! Each queued task carries when it joined its queue. Queues are first in,
//! first out, so the oldest tasks are at the front: a sweep (run by the
//! supervisor a few times per interval) only looks at each queue's front
//! and stops at the first task too young to move.

use std::time::{Duration, Instant};

use super::{Distributor, Effects};
use crate::ids::Priority;

/// The aging interval and the clock queued tasks are stamped with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Aging {
    interval_ms: u32,
    pub(super) started: Instant,
}

impl Aging {
    pub(crate) fn new(interval: Duration) -> Aging {
        Aging {
            interval_ms: u32::try_from(interval.as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
            started: Instant::now(),
        }
    }

    /// Milliseconds since the distributor started, wrapping after 49 days
    /// (ages are compared with wrapping arithmetic).
    pub(crate) fn now(&self) -> u32 {
        self.at(Instant::now())
    }

    fn at(&self, at: Instant) -> u32 {
        at.saturating_duration_since(self.started).as_millis() as u32
    }
}

impl Distributor {
    /// How often the supervisor should call [`age`](Self::age): a quarter
    /// of the interval, so a task moves up within 1.25 intervals.
    pub(crate) fn aging_period(&self) -> Option<Duration> {
        self.aging
            .map(|a| Duration::from_millis(u64::from(a.interval_ms / 4).max(1)))
    }

    /// Moves every queued task that has waited a whole interval at its
    /// level up one level. Returns how many moved.
    pub(crate) fn age(&mut self, now: Instant, fx: &mut Effects) -> usize {
        let Some(aging) = self.aging else {
            return 0;
        };
        let now = aging.at(now);
        let mut moved = 0;
        let mut highest = None;
        for lane in 0..self.lanes.len() {
            // From high to low, so a task moves at most one level a sweep.
            for rank in 1..Priority::ALL.len() {
                let queues = &mut self.lanes[lane].queues;
                while queues[rank]
                    .front()
                    .is_some_and(|t| now.wrapping_sub(t.queued_at) >= aging.interval_ms)
                {
                    let Some(mut task) = queues[rank].pop_front() else {
                        break;
                    };
                    task.priority = Priority::ALL[rank - 1];
                    task.queued_at = now;
                    queues[rank - 1].push_back(task);
                    self.queued[rank] -= 1;
                    self.queued[rank - 1] += 1;
                    moved += 1;
                    highest = highest.max(Some(Priority::ALL[rank - 1]));
                }
            }
        }
        if let Some(priority) = highest {
            if self.batched[priority.rank() + 1..].iter().any(|&n| n > 0) {
                self.take_back_batches_below(priority, fx);
            }
        }
        moved
    }
}
