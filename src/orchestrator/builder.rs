//! Configuration of an orchestrator.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Orchestrator;
use crate::agent::{Agent, AgentSpec};
use crate::broker::DEFAULT_MAILBOX_CAPACITY;
use crate::coordination::{AutoscalePolicy, HealthConfig};
use crate::election::ElectionConfig;
use crate::error::{Error, Result};
use crate::ids::Role;
use crate::memory::SharedMemory;
use crate::tabs::TabPool;

/// Makes a fresh agent of one spec: at start, and later for replacements.
pub(crate) type Factory = Arc<dyn Fn() -> Box<dyn Agent> + Send + Sync>;

/// Default number of finished results kept.
pub const DEFAULT_RESULT_RETENTION: usize = 1_000_000;
/// Default lower bound of every spec's pool.
pub const DEFAULT_MIN_AGENTS: usize = 2;
/// Default upper bound of every spec's pool.
pub const DEFAULT_MAX_AGENTS: usize = 20;
/// Default time [`Orchestrator::shutdown`] waits for running tasks.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Configures and starts an [`Orchestrator`]; from
/// [`Orchestrator::builder`].
///
/// Every [`agents`](Self::agents) or [`agents_with`](Self::agents_with) call
/// adds an agent spec: a pool of agents of one role and one set of
/// capabilities, made (and later remade) by its own factory.
pub struct OrchestratorBuilder {
    pub(crate) specs: Vec<(AgentSpec, Factory)>,
    pub(crate) result_retention: usize,
    pub(crate) min_agents: usize,
    pub(crate) max_agents: usize,
    pub(crate) mailbox_capacity: usize,
    pub(crate) memory: Option<SharedMemory>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) autoscale: AutoscalePolicy,
    pub(crate) health: HealthConfig,
    pub(crate) parallelism: usize,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) election: Option<ElectionConfig>,
    pub(crate) priority_aging: Option<Duration>,
    pub(crate) tabs: Option<TabPool>,
    #[cfg(feature = "redis")]
    pub(crate) redis: Option<crate::RedisConfig>,
    #[cfg(feature = "redis")]
    pub(crate) node: Option<String>,
    #[cfg(feature = "redis")]
    pub(crate) visibility_timeout: Duration,
    #[cfg(feature = "redis")]
    pub(crate) relay_capacity: usize,
}

impl Default for OrchestratorBuilder {
    fn default() -> Self {
        OrchestratorBuilder {
            specs: Vec::new(),
            result_retention: DEFAULT_RESULT_RETENTION,
            min_agents: DEFAULT_MIN_AGENTS,
            max_agents: DEFAULT_MAX_AGENTS,
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            memory: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            autoscale: AutoscalePolicy::default(),
            health: HealthConfig::default(),
            parallelism: 0,
            state_dir: None,
            election: None,
            priority_aging: None,
            tabs: None,
            #[cfg(feature = "redis")]
            redis: None,
            #[cfg(feature = "redis")]
            node: None,
            #[cfg(feature = "redis")]
            visibility_timeout: super::redis_queue::DEFAULT_VISIBILITY_TIMEOUT,
            #[cfg(feature = "redis")]
            relay_capacity: crate::broker::redis_relay::DEFAULT_RELAY_CAPACITY,
        }
    }
}

impl OrchestratorBuilder {
    /// Adds a pool of `count` agents of `role`, without capabilities, each
    /// made by `factory`.
    pub fn agents<A, F>(self, role: Role, count: usize, factory: F) -> Self
    where
        A: Agent,
        F: Fn() -> A + Send + Sync + 'static,
    {
        self.agents_with(AgentSpec::new(role).count(count), factory)
    }

    /// Adds a pool of agents as `spec` describes (role, count,
    /// capabilities), each made by `factory`. Two specs of one role with
    /// different capabilities are distinct pools.
    pub fn agents_with<A, F>(mut self, spec: AgentSpec, factory: F) -> Self
    where
        A: Agent,
        F: Fn() -> A + Send + Sync + 'static,
    {
        let factory: Factory = Arc::new(move || Box::new(factory()) as Box<dyn Agent>);
        self.specs.push((spec, factory));
        self
    }

    /// How many finished results are kept for [`Orchestrator::result`] and
    /// [`Orchestrator::wait`]; the oldest are evicted first. Default
    /// 1,000,000; must be at least 1.
    pub fn result_retention(mut self, finished_results: usize) -> Self {
        self.result_retention = finished_results;
        self
    }

    /// The lower bound of every spec's pool (default 2). Auto-scaling never
    /// shrinks a pool below it, nor below the pool's starting size.
    pub fn min_agents(mut self, n: usize) -> Self {
        self.min_agents = n;
        self
    }

    /// The upper bound of every spec's pool (default 20): auto-scaling never
    /// grows a pool past it (a spec may start with more; it is then never
    /// grown).
    pub fn max_agents(mut self, n: usize) -> Self {
        self.max_agents = n;
        self
    }

    /// The depth of every agent's mailbox (default 1,000; at least 1).
    pub fn mailbox_capacity(mut self, n: usize) -> Self {
        self.mailbox_capacity = n;
        self
    }

    /// The shared memory the agents use (default: a new in-memory store).
    pub fn memory(mut self, memory: SharedMemory) -> Self {
        self.memory = Some(memory);
        self
    }

    /// Runs the orchestrator as one of several instances (processes) over
    /// the state directory `dir` (created if absent), as `docs/RELIABILITY.md`
    /// describes: the instances elect a leader in `dir/election/`; only the
    /// leader accepts and dispatches tasks, every accepted task is recorded
    /// in `dir/tasks.snapshot` before `submit` returns, and a new leader
    /// re-queues every accepted task that has not finished (at least once:
    /// a task that was running when its leader died runs again, with
    /// [`Task::attempt`](crate::Task::attempt) counting the takeover).
    ///
    /// The orchestrator then owns its shared memory, `dir/memory.snapshot`
    /// in [`Durability::Journal`](crate::Durability::Journal) mode, so what
    /// a finished task wrote is durable before its result is recorded. It is
    /// loaded when this instance becomes leader; on a follower
    /// [`Orchestrator::memory`] is an empty in-memory store whose writes are
    /// not kept.
    ///
    /// Default: none (one instance, in memory). The election's default
    /// configuration is `ElectionConfig::new(format!("pid-{pid}"))`; see
    /// [`election`](Self::election).
    pub fn state_dir(mut self, dir: impl AsRef<std::path::Path>) -> Self {
        self.state_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The leader election's configuration, with
    /// [`state_dir`](Self::state_dir) (default:
    /// `ElectionConfig::new(format!("pid-{}", std::process::id()))`, a 10 s
    /// heartbeat and a 30 s lease). On a Redis cluster node (with the `redis`
    /// feature), the nodes elect a leader on Redis, in the cluster's
    /// namespace, only when this is given: [`Orchestrator::is_leader`] then
    /// tells the one node that should do what only one must; every node
    /// still pulls tasks. The leader watches the nodes' heartbeats and
    /// declares dead a node silent for a quarter of its
    /// visibility timeout (`visibility_timeout`) plus one Redis command
    /// timeout (by the leader's timeouts or the node's, whichever is
    /// longer), putting that node's
    /// tasks back for the others at once (a thousand per heartbeat pass at
    /// least, for a node holding more; [`Event::NodeDead`](crate::Event::NodeDead)
    /// once all are back).
    pub fn election(mut self, config: ElectionConfig) -> Self {
        self.election = Some(config);
        self
    }

    /// Makes this orchestrator one node of a cluster on the Redis server
    /// `redis` names (a URL or a [`RedisConfig`](crate::RedisConfig); nodes
    /// of one cluster share server and namespace), as `docs/SCALING.md`
    /// describes. [`Orchestrator::submit`] on any node appends the task to
    /// the cluster's queue in Redis (one stream per priority) under a
    /// cluster-wide id; every node's agents pull the tasks their specs
    /// serve (role and capabilities), critical first; a
    /// task held by a node that stops answering is taken over by another
    /// after the [visibility timeout](Self::visibility_timeout) and runs
    /// again ([`Task::attempt`](crate::Task::attempt) counts the takeover);
    /// results are stored in Redis, the oldest evicted past the
    /// [retention](Self::result_retention), and
    /// [`Orchestrator::result`]/[`Orchestrator::wait`] on any node read
    /// them.
    ///
    /// Nodes need not serve the same roles: a node pulls only tasks some
    /// spec of its own serves, and `submit` on any node accepts a task some
    /// live node serves.
    ///
    /// The node takes a node number from Redis, which its agent ids carry
    /// ([`AgentId::node`](crate::AgentId::node)), and its broker reaches the
    /// other nodes' agents: a direct message, a broadcast or a publication
    /// goes through each node's relay stream in Redis (bounded by
    /// [`relay_capacity`](Self::relay_capacity)), as
    /// [`MessageBroker::send`](crate::MessageBroker::send) describes.
    ///
    /// Not yet supported on Redis: a state directory. The nodes need no
    /// leader to share the queue (any node takes over a dead node's tasks
    /// after the visibility timeout); with [`election`](Self::election) the
    /// leader also puts a dead node's tasks back sooner. Default: none.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, redis: impl Into<crate::RedisConfig>) -> Self {
        self.redis = Some(redis.into());
        self
    }

    /// This node's name in a [Redis cluster](Self::redis): its consumer
    /// name in the task streams and its row in
    /// [`Orchestrator::cluster_nodes`]. Must be unique in the cluster and
    /// stable across restarts of the node (a restarted node finds the tasks
    /// it held). Default: `<host>-pid-<process id>-<random>`, unique but new
    /// at each start (a restarted node's tasks are then taken over after the
    /// visibility timeout).
    #[cfg(feature = "redis")]
    pub fn node(mut self, name: impl Into<String>) -> Self {
        self.node = Some(name.into());
        self
    }

    /// How long a task held by a [Redis cluster](Self::redis) node may go
    /// without that node answering before another node takes it over
    /// (default 30 s; nodes look for such tasks every third of it). A live
    /// node refreshes what it holds every third of this, however long its
    /// tasks run, and writes its heartbeat every twelfth; with an
    /// [election](Self::election), the leader declares a node dead when its
    /// heartbeat is a quarter of this plus one command timeout old. At
    /// least 100 ms: an idle pump pass alone takes 20 ms.
    #[cfg(feature = "redis")]
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// How many messages from other nodes a [Redis cluster](Self::redis)
    /// node's relay stream holds before it has delivered them into its
    /// mailboxes (default 10,000, must be at least 1): past it, a `send`
    /// from another node to one of this node's agents fails at once with
    /// [`Error::Full`](crate::Error::Full), and a broadcast or publication
    /// lists this node in [`Delivery::relay_full`](crate::Delivery::relay_full).
    /// Each mailbox stays bounded by [`mailbox_capacity`](Self::mailbox_capacity)
    /// too. See `docs/SCALING.md`, "Messages between nodes".
    #[cfg(feature = "redis")]
    pub fn relay_capacity(mut self, messages: usize) -> Self {
        self.relay_capacity = messages;
        self
    }

    /// When pools grow and shrink (default: the seed's policy, see
    /// [`AutoscalePolicy`]; [`AutoscalePolicy::disabled`] keeps every pool
    /// at its starting size).
    pub fn autoscale(mut self, policy: AutoscalePolicy) -> Self {
        self.autoscale = policy;
        self
    }

    /// How agents are watched and replaced (default: see [`HealthConfig`]).
    pub fn health(mut self, config: HealthConfig) -> Self {
        self.health = config;
        self
    }

    /// How long [`Orchestrator::shutdown`] waits for running tasks to finish
    /// (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Turns on priority aging (default: off, so priorities are strict): a
    /// task that has waited `interval` in its priority's queue moves to the
    /// back of the next higher priority's queue (and its
    /// [`Task::priority`](crate::Task::priority) says so), checked four times
    /// per interval. A low task thus becomes critical after about three
    /// intervals of waiting, and no stream of higher-priority work can
    /// starve it forever. Tasks waiting for dependencies, or running, do not
    /// age.
    ///
    /// ```
    /// use std::time::Duration;
    /// use agentry::{AgentContext, Orchestrator, Output, Role, Task, TaskError};
    ///
    /// let orchestrator = Orchestrator::builder()
    ///     .agents(Role::Researcher, 2, || |_: &Task, _: &AgentContext| {
    ///         Ok::<_, TaskError>(Output::empty())
    ///     })
    ///     .priority_aging(Duration::from_secs(5))
    ///     .build()?;
    /// # orchestrator.shutdown()?;
    /// # Ok::<(), agentry::Error>(())
    /// ```
    pub fn priority_aging(mut self, interval: Duration) -> Self {
        self.priority_aging = Some(interval);
        self
    }

    /// How many threads the data-parallel pool shared by all agents runs
    /// ([`AgentContext::parallel`](crate::AgentContext::parallel)); default
    /// 0, meaning one per core. The threads start when an agent first uses
    /// the pool.
    pub fn parallelism(mut self, threads: usize) -> Self {
        self.parallelism = threads;
        self
    }

    /// The browser tabs the agents share
    /// ([`AgentContext::tabs`](crate::AgentContext::tabs)); its figures
    /// appear in [`StatusReport::tabs`](crate::StatusReport::tabs). Default:
    /// none.
    pub fn tab_pool(mut self, pool: TabPool) -> Self {
        self.tabs = Some(pool);
        self
    }

    /// Starts the orchestrator: spawns every agent thread.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when no agent spec was added, a spec has 0
    /// agents, `min_agents > max_agents`, the
    /// retention or mailbox capacity is 0, the
    /// [`priority_aging`](Self::priority_aging) interval is under 1 ms, both
    /// [`memory`](Self::memory) and
    /// [`state_dir`](Self::state_dir) were given,
    /// [`election`](Self::election) was given without a state directory
    /// (or Redis), or
    /// the election configuration is unsafe (see
    /// [`LeaderElection::new`](crate::LeaderElection::new)); [`Error::Io`]
    /// when a thread cannot be spawned or the state directory cannot be
    /// created. With `redis`: [`Error::InvalidConfig`] also with a state
    /// directory, an empty node name or a visibility timeout under 100 ms,
    /// and [`Error::Backend`] when the server cannot be reached.
    pub fn build(self) -> Result<Orchestrator> {
        self.validate()?;
        Orchestrator::start(self)
    }

    fn validate(&self) -> Result<()> {
        let invalid = |why: String| Err(Error::InvalidConfig(why));
        if self.specs.is_empty() {
            return invalid(
                "no agents: add at least one spec with `agents` or `agents_with`".into(),
            );
        }
        if self.min_agents > self.max_agents {
            return invalid(format!(
                "min_agents ({}) is greater than max_agents ({})",
                self.min_agents, self.max_agents
            ));
        }
        if self
            .priority_aging
            .is_some_and(|i| i < Duration::from_millis(1))
        {
            return invalid("priority_aging interval must be at least 1 ms".into());
        }
        if self.result_retention == 0 {
            return invalid("result_retention must be at least 1".into());
        }
        self.health.validate().map_err(Error::InvalidConfig)?;
        if self.mailbox_capacity == 0 {
            return invalid("mailbox_capacity must be at least 1".into());
        }
        if self.state_dir.is_some() && self.memory.is_some() {
            return invalid(
                "`memory` with `state_dir`: over a state directory the orchestrator owns its memory"
                    .into(),
            );
        }
        #[cfg(feature = "redis")]
        let holder = self.state_dir.is_some() || self.redis.is_some();
        #[cfg(not(feature = "redis"))]
        let holder = self.state_dir.is_some();
        if !holder && self.election.is_some() {
            return invalid(
                "`election` needs a `state_dir` (or `redis`) to hold the election".into(),
            );
        }
        #[cfg(feature = "redis")]
        if self.redis.is_some() {
            if self.state_dir.is_some() {
                return invalid("`redis` with `state_dir`: a node's tasks live in redis".into());
            }
            if self.visibility_timeout < Duration::from_millis(100) {
                return invalid(format!(
                    "visibility_timeout {:?} is below 100 ms",
                    self.visibility_timeout
                ));
            }
            if self.node.as_deref() == Some("") {
                return invalid("the node name must not be empty".into());
            }
            if self.relay_capacity == 0 {
                return invalid("the relay capacity must be at least 1".into());
            }
        } else if self.node.is_some() {
            return invalid("`node` needs `redis`".into());
        }
        for (spec, _) in &self.specs {
            if spec.count == 0 {
                return invalid(format!("the {} spec has 0 agents", spec.role));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for OrchestratorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrchestratorBuilder")
            .field(
                "specs",
                &self.specs.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            )
            .field("result_retention", &self.result_retention)
            .field("min_agents", &self.min_agents)
            .field("max_agents", &self.max_agents)
            .field("mailbox_capacity", &self.mailbox_capacity)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("autoscale", &self.autoscale)
            .field("health", &self.health)
            .field("parallelism", &self.parallelism)
            .field("state_dir", &self.state_dir)
            .field("election", &self.election)
            .field("priority_aging", &self.priority_aging)
            .field("tabs", &self.tabs)
            .finish_non_exhaustive()
    }
}
