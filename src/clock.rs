//! Deadlines from durations users give, which may be as long as
//! `Duration::MAX`: `Instant + Duration` would panic on overflow.

use std::time::{Duration, Instant};

/// Far enough never to come, near enough to fit in an `Instant`.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `timeout` from now, or a hundred years from now if that overflows.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    deadline_from(Instant::now(), timeout)
}

/// `timeout` after `start`, or a hundred years after it if that overflows.
pub(crate) fn deadline_from(start: Instant, timeout: Duration) -> Instant {
    start
        .checked_add(timeout)
        .or_else(|| start.checked_add(FAR_FUTURE))
        .unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overflowing_timeout_is_a_far_deadline_not_a_panic() {
        let now = Instant::now();
        assert_eq!(
            deadline_from(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert!(deadline_from(now, Duration::MAX) >= now + FAR_FUTURE);
    }
}
