//! The election's timings, checked once at construction.

use std::time::Duration;

use crate::error::{Error, Result};

/// The default [`ElectionConfig::heartbeat_interval`]: 10 s, as in the seed.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// The default [`ElectionConfig::lease_timeout`]: 30 s.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(30);
/// The default [`ElectionConfig::retry_interval`]: 1 s.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The lease must outlast this many heartbeat intervals, so that one or two
/// late heartbeats (a busy machine, a slow fsync) never depose a healthy
/// leader. Kubernetes' leader election uses the same margin (15 s lease, 10 s
/// renew deadline, 2 s retry).
const LEASE_FACTOR: u32 = 3;

/// How one candidate takes part in a [`LeaderElection`](crate::LeaderElection):
/// its name and its timings.
///
/// ```
/// use agentry::ElectionConfig;
/// use std::time::Duration;
///
/// let config = ElectionConfig::new("scheduler-a")
///     .heartbeat_interval(Duration::from_millis(200))
///     .lease_timeout(Duration::from_millis(1_000))
///     .retry_interval(Duration::from_millis(50));
/// assert_eq!(config.instance_id(), "scheduler-a");
/// ```
///
/// [`LeaderElection::new`](crate::LeaderElection::new) refuses timings that
/// cannot be safe: the lease timeout must be at least three heartbeat
/// intervals, and the retry interval shorter than the heartbeat interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    instance_id: String,
    heartbeat: Duration,
    lease: Duration,
    retry: Duration,
}

impl ElectionConfig {
    /// A configuration for the candidate named `instance_id` (shown in
    /// [`LeaderInfo::instance_id`](crate::LeaderInfo::instance_id)), with the
    /// default timings: heartbeat every 10 s, lease of 30 s, retry every 1 s.
    pub fn new(instance_id: impl Into<String>) -> ElectionConfig {
        ElectionConfig {
            instance_id: instance_id.into(),
            heartbeat: DEFAULT_HEARTBEAT_INTERVAL,
            lease: DEFAULT_LEASE_TIMEOUT,
            retry: DEFAULT_RETRY_INTERVAL,
        }
    }

    /// How often the leader rewrites its heartbeat record (default 10 s).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// How long a heartbeat stays valid (default 30 s): a follower that sees
    /// no new heartbeat for this long takes over from a leader that still
    /// holds the lock (frozen), and a leader that could not renew for
    /// `lease_timeout - heartbeat_interval` steps down by itself. At least
    /// three heartbeat intervals.
    pub fn lease_timeout(mut self, timeout: Duration) -> Self {
        self.lease = timeout;
        self
    }

    /// How often a follower looks at the leader's heartbeat, and how soon a
    /// leader retries a failed heartbeat (default 1 s). Shorter than the
    /// heartbeat interval. A leader that dies is replaced at once, whatever
    /// this interval: followers wait on the lock itself.
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry = interval;
        self
    }

    /// The candidate's name.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// The lease timeout.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The retry interval.
    pub fn retry(&self) -> Duration {
        self.retry
    }

    /// How long a leader may go without a successful heartbeat before it
    /// steps down: one heartbeat interval less than the lease, so it is gone
    /// before any follower can count the lease as expired.
    pub(crate) fn renew_deadline(&self) -> Duration {
        self.lease.saturating_sub(self.heartbeat)
    }

    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the offending values.
    pub(crate) fn validate(&self) -> Result<()> {
        let refuse = |why: String| Err(Error::InvalidConfig(why));
        if self.heartbeat.is_zero() || self.lease.is_zero() || self.retry.is_zero() {
            return refuse(format!(
                "election intervals must be positive (heartbeat {:?}, lease {:?}, retry {:?})",
                self.heartbeat, self.lease, self.retry
            ));
        }
        if self.lease < self.heartbeat.saturating_mul(LEASE_FACTOR) {
            return refuse(format!(
                "lease timeout {:?} must be at least {LEASE_FACTOR} x the heartbeat interval {:?}",
                self.lease, self.heartbeat
            ));
        }
        if self.retry >= self.heartbeat {
            return refuse(format!(
                "retry interval {:?} must be shorter than the heartbeat interval {:?}",
                self.retry, self.heartbeat
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn defaults_are_the_seeds_and_valid() {
        let config = ElectionConfig::new("a");
        assert_eq!(
            (config.heartbeat(), config.lease(), config.retry()),
            (
                Duration::from_secs(10),
                Duration::from_secs(30),
                Duration::from_secs(1)
            )
        );
        config.validate().unwrap();
        assert_eq!(config.renew_deadline(), Duration::from_secs(20));
    }

    #[test]
    fn unsafe_timings_are_refused() {
        let base = || ElectionConfig::new("a");
        for config in [
            base().lease_timeout(ms(29_999)),
            base().retry_interval(ms(10_000)),
            base().heartbeat_interval(Duration::ZERO),
            base().retry_interval(Duration::ZERO),
            base().lease_timeout(Duration::ZERO),
        ] {
            assert!(
                matches!(config.validate(), Err(Error::InvalidConfig(_))),
                "{config:?}"
            );
        }
        base()
            .heartbeat_interval(ms(20))
            .lease_timeout(ms(60))
            .retry_interval(ms(19))
            .validate()
            .unwrap();
    }
}
