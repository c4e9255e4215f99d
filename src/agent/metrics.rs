//! Per-agent metrics: counts and an execution-time histogram, updated by the
//! agent's own thread without locks or allocation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets of the execution-time histogram: bucket `b` counts runs of
/// `[2^(b-1), 2^b)` nanoseconds (bucket 0: under 1 ns), so 64 buckets span
/// every `u64` duration with a relative error under 2x; p99 is read from them.
const BUCKETS: usize = 64;

/// Only the agent's thread writes these, so a load and a store replace a
/// locked read-modify-write; readers on other threads see a recent value.
pub(crate) struct Metrics {
    executed: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    total_nanos: AtomicU64,
    histogram: [AtomicU64; BUCKETS],
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            executed: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            total_nanos: AtomicU64::new(0),
            histogram: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Records one attempt. Called by the agent's thread only.
    pub(crate) fn record(&self, elapsed: Duration, success: bool) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        bump(&self.executed, 1);
        bump(
            if success {
                &self.succeeded
            } else {
                &self.failed
            },
            1,
        );
        bump(&self.total_nanos, nanos);
        let bucket = (u64::BITS - nanos.leading_zeros()) as usize;
        bump(&self.histogram[bucket.min(BUCKETS - 1)], 1);
    }

    pub(crate) fn executed(&self) -> u64 {
        self.executed.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let executed = self.executed();
        let total = self.total_nanos.load(Ordering::Relaxed);
        MetricsSnapshot {
            executed,
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            mean: Duration::from_nanos(total.checked_div(executed).unwrap_or(0)),
            p99: self.percentile(0.99),
        }
    }

    /// The upper bound of the bucket holding the given quantile.
    fn percentile(&self, quantile: f64) -> Duration {
        let counts: Vec<u64> = self
            .histogram
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((total as f64) * quantile).ceil() as u64;
        let mut seen = 0;
        for (bucket, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let upper = if bucket >= 63 {
                    u64::MAX
                } else {
                    (1u64 << bucket).saturating_sub(1)
                };
                return Duration::from_nanos(upper);
            }
        }
        Duration::ZERO
    }
}

/// A consistent-enough copy of one agent's metrics.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MetricsSnapshot {
    pub(crate) executed: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) mean: Duration,
    pub(crate) p99: Duration,
}

impl MetricsSnapshot {
    pub(crate) fn success_rate(&self) -> f64 {
        if self.executed == 0 {
            1.0
        } else {
            self.succeeded as f64 / self.executed as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_mean_and_p99() {
        let metrics = Metrics::new();
        for _ in 0..99 {
            metrics.record(Duration::from_micros(10), true);
        }
        metrics.record(Duration::from_millis(50), false);
        let s = metrics.snapshot();
        assert_eq!((s.executed, s.succeeded, s.failed), (100, 99, 1));
        assert!((s.success_rate() - 0.99).abs() < 1e-9);
        let mean = Duration::from_micros(10) * 99 + Duration::from_millis(50);
        assert_eq!(s.mean, mean / 100);
        // 99 of 100 runs took 10 µs: p99 is the bucket above 10 µs (< 2x).
        assert!(s.p99 >= Duration::from_micros(10) && s.p99 < Duration::from_micros(20));
    }

    #[test]
    fn empty_metrics_are_zero() {
        let s = Metrics::new().snapshot();
        assert_eq!(s.executed, 0);
        assert_eq!(s.p99, Duration::ZERO);
        assert_eq!(s.success_rate(), 1.0);
    }
}
