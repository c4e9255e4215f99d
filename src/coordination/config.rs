//! Configuration of health monitoring, recovery and auto-scaling.

use std::time::Duration;

/// How agents are watched and replaced; given to
/// [`OrchestratorBuilder::health`](crate::OrchestratorBuilder::health).
///
/// ```
/// use agentry::HealthConfig;
/// use std::time::Duration;
///
/// let health = HealthConfig::default()
///     .check_interval(Duration::from_millis(50))
///     .hang_timeout(Duration::from_secs(5))
///     .max_restarts(3, Duration::from_secs(60));
/// assert_eq!(health.restart_limit(), (3, Duration::from_secs(60)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    pub(crate) check_interval: Duration,
    pub(crate) hang_timeout: Duration,
    pub(crate) max_restarts: u32,
    pub(crate) restart_window: Duration,
}

/// Default interval between health checks.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Default time a busy agent may go without a heartbeat before it is hung.
pub const DEFAULT_HANG_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            check_interval: DEFAULT_CHECK_INTERVAL,
            hang_timeout: DEFAULT_HANG_TIMEOUT,
            max_restarts: 10,
            restart_window: Duration::from_secs(10),
        }
    }
}

impl HealthConfig {
    /// How often every agent's heartbeat and state are checked (default
    /// 100 ms). Failures an agent reports itself (a panic, its thread
    /// ending) are acted on at once, not at the next check.
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// How long an agent may run a task (or handle a message in
    /// [`Agent::on_message`](crate::Agent::on_message)) without a heartbeat
    /// before it is taken for hung (default 30 s). A long task calls
    /// [`AgentContext::heartbeat`](crate::AgentContext::heartbeat) to show
    /// progress; a task with its own timeout is governed by that timeout
    /// instead.
    pub fn hang_timeout(mut self, timeout: Duration) -> Self {
        self.hang_timeout = timeout;
        self
    }

    /// Restart intensity, as an OTP supervisor has it: at most `restarts`
    /// replacements within `within` per agent spec (default 10 within 10 s).
    /// Past it the spec is failed for the rest of the orchestrator's life.
    pub fn max_restarts(mut self, restarts: u32, within: Duration) -> Self {
        self.max_restarts = restarts;
        self.restart_window = within;
        self
    }

    /// The check interval.
    pub fn interval(&self) -> Duration {
        self.check_interval
    }

    /// The hang timeout.
    pub fn hang_limit(&self) -> Duration {
        self.hang_timeout
    }

    /// The restart limit: replacements, within this long.
    pub fn restart_limit(&self) -> (u32, Duration) {
        (self.max_restarts, self.restart_window)
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.check_interval.is_zero() {
            return Err("the health check interval must be greater than zero".into());
        }
        if self.hang_timeout.is_zero() {
            return Err("the hang timeout must be greater than zero".into());
        }
        if self.restart_window.is_zero() {
            return Err("the restart window must be greater than zero".into());
        }
        Ok(())
    }
}

/// When agent pools grow and shrink; given to
/// [`OrchestratorBuilder::autoscale`](crate::OrchestratorBuilder::autoscale).
///
/// The default is the seed's policy, applied to each agent spec on its own:
/// spawn one agent when the queue the spec serves holds more than 10 tasks,
/// none of its agents is idle and the pool is below
/// [`max_agents`](crate::OrchestratorBuilder::max_agents); remove one idle
/// agent when more than 3 are idle and the pool is above
/// [`min_agents`](crate::OrchestratorBuilder::min_agents) (a pool that
/// started below min is never shrunk below its start).
///
/// ```
/// use agentry::AutoscalePolicy;
/// use std::time::Duration;
///
/// let eager = AutoscalePolicy::default()
///     .scale_up_when_queue_exceeds(2)
///     .scale_down_when_idle_exceeds(1)
///     .cooldown(Duration::from_millis(10));
/// let fixed = AutoscalePolicy::disabled();
/// assert!(eager.is_enabled() && !fixed.is_enabled());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoscalePolicy {
    pub(crate) enabled: bool,
    pub(crate) up_queue: usize,
    pub(crate) down_idle: usize,
    pub(crate) cooldown: Duration,
}

impl Default for AutoscalePolicy {
    fn default() -> Self {
        AutoscalePolicy {
            enabled: true,
            up_queue: 10,
            down_idle: 3,
            cooldown: Duration::from_millis(100),
        }
    }
}

impl AutoscalePolicy {
    /// No scaling: every pool keeps the size it started with (failed agents
    /// are still replaced).
    pub fn disabled() -> AutoscalePolicy {
        AutoscalePolicy {
            enabled: false,
            ..AutoscalePolicy::default()
        }
    }

    /// Spawn an agent when more than `n` tasks wait for the spec and none of
    /// its agents is idle (default 10).
    pub fn scale_up_when_queue_exceeds(mut self, n: usize) -> Self {
        self.up_queue = n;
        self
    }

    /// Remove an idle agent when more than `n` of the spec's agents are idle
    /// (default 3).
    pub fn scale_down_when_idle_exceeds(mut self, n: usize) -> Self {
        self.down_idle = n;
        self
    }

    /// The least time between two scaling actions on one spec, against
    /// flapping (default 100 ms).
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Whether pools scale at all.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
}
