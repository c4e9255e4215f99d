//! Polling before sleeping, for as long as polling pays off.
//!
//! Waking a parked thread costs 5–30 µs, more than most tasks take, so a
//! thread about to wait for something that usually comes within
//! microseconds (a result, the next task) polls first. When what it waits
//! for takes longer (1 ms tasks), every poll is a processor taken from the
//! threads doing the work, and with more threads than cores that delays
//! them. So the poll adapts, as an adaptive mutex does: a poll that was
//! answered doubles the next one (up to the longest), one that ran out
//! halves it (down to a thirty-second). A wait that outlasted its poll but
//! that the longest poll would have covered resets the next poll to the
//! longest: the work turned quick again, and a poll of a microsecond or two
//! would never be answered, so never grow, by itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The floor of a poll, as a fraction of the longest.
const FLOOR_DIVISOR: u64 = 32;

/// The length of the next poll of one kind of wait.
pub(crate) struct AdaptiveSpin {
    next_nanos: AtomicU64,
    longest_nanos: u64,
}

impl AdaptiveSpin {
    /// Polls start at, and never exceed, `longest`.
    pub(crate) fn new(longest: Duration) -> AdaptiveSpin {
        let longest_nanos = u64::try_from(longest.as_nanos()).unwrap_or(u64::MAX);
        AdaptiveSpin {
            next_nanos: AtomicU64::new(longest_nanos),
            longest_nanos,
        }
    }

    /// Calls `ready` until it returns `true` (then returns `true`) or the
    /// poll's length, cut at `deadline` if any, has passed (then `false`).
    pub(crate) fn poll(&self, deadline: Option<Instant>, mut ready: impl FnMut() -> bool) -> bool {
        let length = self.next_nanos.load(Ordering::Relaxed);
        let full = crate::clock::deadline_after(Duration::from_nanos(length));
        let until = deadline.map_or(full, |deadline| deadline.min(full));
        loop {
            if ready() {
                self.next_nanos.store(
                    length.saturating_mul(2).min(self.longest_nanos),
                    Ordering::Relaxed,
                );
                return true;
            }
            if Instant::now() >= until {
                // A poll cut short by the caller's deadline says nothing
                // about how long the wait would have been.
                if until == full {
                    self.next_nanos.store(
                        (length / 2).max(self.longest_nanos / FLOOR_DIVISOR),
                        Ordering::Relaxed,
                    );
                }
                return false;
            }
            for _ in 0..64 {
                std::hint::spin_loop();
            }
        }
    }

    /// Once a wait whose poll ran out is over: `waited`, from the start of
    /// the poll to the answer. The next poll is the longest if that would
    /// have covered it.
    pub(crate) fn waited(&self, waited: Duration) {
        if waited.as_nanos() <= u128::from(self.longest_nanos) {
            self.next_nanos.store(self.longest_nanos, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    fn next(&self) -> Duration {
        Duration::from_nanos(self.next_nanos.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONGEST: Duration = Duration::from_micros(80);

    fn far() -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(60))
    }

    #[test]
    fn unanswered_polls_halve_down_to_the_floor() {
        let spin = AdaptiveSpin::new(LONGEST);
        assert!(!spin.poll(far(), || false));
        assert_eq!(spin.next(), LONGEST / 2);
        for _ in 0..10 {
            assert!(!spin.poll(far(), || false));
        }
        assert_eq!(spin.next(), LONGEST / 32);
    }

    #[test]
    fn a_wait_the_longest_poll_would_have_covered_resets_it() {
        let spin = AdaptiveSpin::new(LONGEST);
        for _ in 0..10 {
            spin.poll(far(), || false);
        }
        spin.waited(LONGEST * 3);
        assert_eq!(spin.next(), LONGEST / 32, "a long wait changes nothing");
        spin.waited(LONGEST / 2);
        assert_eq!(spin.next(), LONGEST);
    }

    #[test]
    fn answered_polls_double_up_to_the_longest() {
        let spin = AdaptiveSpin::new(LONGEST);
        for _ in 0..10 {
            spin.poll(far(), || false);
        }
        assert!(spin.poll(far(), || true));
        assert_eq!(spin.next(), LONGEST / 16);
        for _ in 0..10 {
            assert!(spin.poll(far(), || true));
        }
        assert_eq!(spin.next(), LONGEST);
    }

    #[test]
    fn a_poll_cut_by_the_deadline_keeps_the_length() {
        let spin = AdaptiveSpin::new(LONGEST);
        assert!(!spin.poll(Some(Instant::now()), || false));
        assert_eq!(spin.next(), LONGEST);
    }

    #[test]
    fn the_answer_is_seen_on_a_later_try() {
        let spin = AdaptiveSpin::new(Duration::from_secs(60));
        let mut tries = 0;
        assert!(spin.poll(None, || {
            tries += 1;
            tries == 3
        }));
        assert_eq!(tries, 3);
    }
}
