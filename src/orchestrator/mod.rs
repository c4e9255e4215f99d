//! The seed's AGENT ORCHESTRATOR: builds the agent pools, accepts tasks,
//! hands out results, reports status, shuts down cleanly.
//!
//! The orchestrator owns one [`Shared`] value that every agent thread and
//! the supervisor thread also hold: the distributor behind its mutex, the
//! broker, the shared memory, the event channel. Work is handed out as
//! described in the distributor's module; the supervisor (started on first
//! need, see `coordination`) enforces task timeouts.

mod builder;
mod durable;
mod events;
#[cfg(feature = "redis")]
mod redis_queue;
mod status;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::agent::AgentShared;
#[cfg(feature = "redis")]
use crate::broker::redis_relay::{self, RedisRelay};
use crate::broker::{Mailbox, Message, MessageBroker};
use crate::coordination::{Request, Stopping, Supervisor, SupervisorSlot, spawn_agent};
use crate::distributor::{
    Distributor, Effects, Results, Scaling, SpecPool, Task, TaskResult, Waited,
};
use crate::election::{ElectionConfig, ElectionHandle, LeaderElection};
use crate::error::{Error, Missing, Result};
use crate::ids::{AgentId, AgentState, Role, TaskId};
use crate::memory::SharedMemory;
use crate::parallel::ParallelPool;
use crate::spin::AdaptiveSpin;
use crate::tabs::TabPool;

pub(crate) use builder::Factory;
pub use builder::{
    DEFAULT_MAX_AGENTS, DEFAULT_MIN_AGENTS, DEFAULT_RESULT_RETENTION, DEFAULT_SHUTDOWN_TIMEOUT,
    OrchestratorBuilder,
};
pub(crate) use durable::Recorded;
use durable::StateDir;
pub use events::Event;
#[cfg(feature = "redis")]
pub use redis_queue::DEFAULT_VISIBILITY_TIMEOUT;
#[cfg(feature = "redis")]
use redis_queue::RedisQueue;
#[cfg(feature = "redis")]
pub use status::NodeStatus;
pub use status::{AgentStatus, PoolStatus, QueueDepths, StatusReport, TaskTotals};

/// The sender id of messages from the orchestrator itself; agents are
/// numbered from 1 (on a cluster node, from
/// [`AgentId::on_node(node, 1)`](AgentId::on_node)).
pub const ORCHESTRATOR_ID: AgentId = AgentId::new(0);

const EVENT_CAPACITY: usize = 4_096;
/// How long an agent that runs out of work polls its mailbox, at most,
/// before it blocks on it.
const IDLE_SPIN: Duration = Duration::from_micros(50);

/// What the orchestrator, its agents and its monitor share.
pub(crate) struct Shared {
    pub(crate) distributor: Mutex<Distributor>,
    results: Arc<Results>,
    pub(crate) broker: MessageBroker,
    pub(crate) memory: SharedMemory,
    /// The one data-parallel pool of all agents.
    pub(crate) parallel: ParallelPool,
    /// The browser tabs the agents share, if any.
    pub(crate) tabs: Option<TabPool>,
    events: Sender<Event>,
    events_dropped: AtomicU64,
    pub(crate) supervisor: SupervisorSlot,
    next_agent: AtomicU64,
    /// Per role, the number in the next agent thread's name.
    names: Mutex<HashMap<Role, usize>>,
    hung_threads: AtomicUsize,
    /// Whether an idle agent is polling its mailbox (see the runner).
    spinning: AtomicBool,
    /// How long that agent polls.
    idle_spin: AdaptiveSpin,
    /// When (on [`clock_at`](Self::clock_at)'s clock) a task was last
    /// handed to an idle agent with more idle agents behind it.
    last_hand_out: AtomicU64,
    started: Instant,
    /// With a state directory: its durable task store.
    state: Option<StateDir>,
    /// With a state directory: this instance's candidacy.
    election: Option<Arc<ElectionHandle>>,
    /// As a node of a cluster on Redis: the cluster's queue.
    #[cfg(feature = "redis")]
    redis: Option<Arc<RedisQueue>>,
}

impl Shared {
    /// Nanoseconds from start to `at`: the heartbeat clock.
    pub(crate) fn clock_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_nanos()).unwrap_or(u64::MAX)
    }

    pub(crate) fn submit(&self, task: Task) -> Result<TaskId> {
        let mut ids = Vec::with_capacity(1);
        self.submit_all(vec![task], &mut ids)?;
        Ok(ids[0])
    }

    pub(crate) fn submit_all(&self, tasks: Vec<Task>, ids: &mut Vec<TaskId>) -> Result<()> {
        #[cfg(feature = "redis")]
        if let Some(queue) = &self.redis {
            ids.extend(queue.enqueue(tasks)?);
            return Ok(());
        }
        let (Some(state), Some(election)) = (&self.state, &self.election) else {
            let mut fx = Effects::default();
            let submitted = self
                .distributor
                .lock()
                .submit(tasks, ids, &mut fx, |fx| self.wake_early(fx));
            self.apply(&mut fx);
            return submitted;
        };
        if !election.is_leader() {
            let leader = election.leader();
            return Err(Error::NotLeader {
                epoch: None,
                current: leader.as_ref().map(|l| l.epoch),
                leader,
            });
        }
        let reserved = self.distributor.lock().reserve(tasks, ids)?;
        // Recorded, then confirmed: once `confirm` has read our epoch as the
        // newest, any later leader opens the task store after these records
        // were fsynced, and runs them.
        let recorded = state
            .record_tasks(&reserved)
            .and_then(|()| election.confirm().map(drop));
        let admitted = recorded.and_then(|()| {
            let mut fx = Effects::default();
            let admitted = self.distributor.lock().admit_reserved(reserved, &mut fx);
            self.apply(&mut fx);
            admitted
        });
        if admitted.is_err() {
            ids.clear();
        }
        admitted
    }

    /// Carries out what the distributor decided under its lock: wakes the
    /// application threads whose results arrived and the agents handed
    /// work, emits events.
    pub(crate) fn apply(&self, fx: &mut Effects) {
        self.results.wake_due();
        for agent in fx.wake.drain(..) {
            self.wake(&agent);
        }
        // Waking a parked thread costs more than most tasks: while tasks
        // come to idle agents within two polls' length of each other, the
        // agent the next one goes to is woken now to poll for it (by the time it runs, the
        // one polling for the task just handed out has stopped). Tasks
        // coming further apart would find it asleep again, and its wake-up
        // would only slow the one just handed out.
        if let Some(next) = fx.next_in_line.take() {
            let now = self.clock_at(Instant::now());
            let previous = self.last_hand_out.swap(now, Ordering::Relaxed);
            let close = Duration::from_nanos(now.saturating_sub(previous)) <= 2 * IDLE_SPIN;
            if close && next.idle_listed.load(Ordering::Relaxed) {
                self.wake(&next);
            }
        }
        for event in fx.events.drain(..) {
            self.emit(event);
        }
        for spec in fx.scale_up.drain(..) {
            self.request(Request::ScaleUp(spec));
        }
    }

    /// Tells an agent handed work to look at its batch.
    fn wake(&self, agent: &AgentShared) {
        // A refused wake-up is harmless: a full mailbox means the agent is
        // awake and looks at its batch after every message.
        let _ = self
            .broker
            .deliver(agent.id, Message::assignment(ORCHESTRATOR_ID));
    }

    /// Wakes, the distributor's lock still held, the idle agents a large
    /// submit handed its leading tasks to, so that they start while the
    /// rest is queued. An agent whose last task was quick is left to
    /// [`apply`](Self::apply): it would be back for the lock before the
    /// submit let go of it.
    fn wake_early(&self, fx: &mut Effects) {
        fx.wake.retain(|agent| {
            if agent.quick.load(Ordering::Relaxed) {
                return true;
            }
            self.wake(agent);
            false
        });
    }

    pub(crate) fn request(&self, request: Request) {
        self.supervisor.request(request);
    }

    pub(crate) fn next_agent_id(&self) -> AgentId {
        AgentId::from(self.next_agent.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn next_name(&self, role: &Role) -> usize {
        let mut names = self.names.lock();
        let n = names.entry(role.clone()).or_insert(0);
        *n += 1;
        *n
    }

    /// Claims the one place for an idle agent to poll instead of sleeping.
    pub(crate) fn try_start_spinning(&self) -> bool {
        !self.spinning.swap(true, Ordering::Acquire)
    }

    pub(crate) fn stop_spinning(&self) {
        self.spinning.store(false, Ordering::Release);
    }

    pub(crate) fn idle_spin(&self) -> &AdaptiveSpin {
        &self.idle_spin
    }

    pub(crate) fn set_hung_threads(&self, n: usize) {
        self.hung_threads.store(n, Ordering::Relaxed);
    }

    pub(crate) fn emit(&self, event: Event) {
        // The bound is kept here rather than by a bounded channel, which
        // would allocate and initialise all its slots (300 KB) in `build`;
        // emitters racing past the check overshoot it by one event each.
        if self.events.len() >= EVENT_CAPACITY || self.events.send(event).is_err() {
            self.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn watch_deadline(
        &self,
        task: TaskId,
        agent: &Arc<AgentShared>,
        attempt: u32,
        timeout: Duration,
    ) {
        self.request(Request::Watch(crate::coordination::Deadline::new(
            task, agent, attempt, timeout,
        )));
    }
}

/// Runs agents and routes tasks to them: the front door of agentry.
///
/// Build one with [`Orchestrator::builder`], giving each pool of agents a
/// role (and capabilities) and a factory; submit [`Task`]s; read their
/// [`TaskResult`]s.
///
/// ```
/// use agentry::{AgentContext, Orchestrator, Output, Priority, Role, Task, TaskError};
/// use std::time::Duration;
///
/// let orchestrator = Orchestrator::builder()
///     .agents(Role::Extractor, 4, || {
///         |task: &Task, _ctx: &AgentContext| -> Result<Output, TaskError> {
///             let page: String = task.input()?;
///             Ok(Output::encode(&page.matches('@').count())?)
///         }
///     })
///     .build()?;
///
/// let id = orchestrator.submit(
///     Task::new("count-emails")
///         .with_role(Role::Extractor)
///         .with_priority(Priority::High)
///         .with_input(&"ann@example.org, bob@example.org")?,
/// )?;
/// let result = orchestrator.wait(id, Duration::from_secs(10))?;
/// assert_eq!(result.output::<usize>()?, 2);
/// orchestrator.shutdown()?;
/// # Ok::<(), agentry::Error>(())
/// ```
pub struct Orchestrator {
    shared: Arc<Shared>,
    events: Receiver<Event>,
    /// With a state directory: the thread recording finished results.
    recorder: Option<JoinHandle<()>>,
    recorder_tx: Option<Sender<Recorded>>,
    /// With a state directory: the thread following the election.
    /// Dropping the sender stops it.
    leadership: Option<(JoinHandle<()>, Sender<()>)>,
    /// As a Redis cluster node: the thread pulling tasks, and its controls.
    #[cfg(feature = "redis")]
    pump: Option<(JoinHandle<()>, Arc<redis_queue::PumpControl>)>,
    /// As a Redis cluster node: the thread relaying messages from the
    /// other nodes, and its stop flag.
    #[cfg(feature = "redis")]
    relay: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
    shutdown_timeout: Duration,
    shut_down: bool,
}

impl Orchestrator {
    /// A builder with every default.
    pub fn builder() -> OrchestratorBuilder {
        OrchestratorBuilder::default()
    }

    fn start(config: OrchestratorBuilder) -> Result<Orchestrator> {
        let broker = MessageBroker::builder().mailbox_capacity(config.mailbox_capacity);
        // A cluster node numbers its agents with its node number and relays
        // messages for the other nodes' agents.
        #[cfg(feature = "redis")]
        let relay = match &config.redis {
            Some(redis) => Some(Arc::new(RedisRelay::connect(
                redis.clone(),
                config.visibility_timeout,
                config.relay_capacity,
            )?)),
            None => None,
        };
        #[cfg(feature = "redis")]
        let broker = match &relay {
            Some(relay) => broker.remote(Arc::clone(relay) as Arc<dyn crate::broker::Remote>),
            None => broker,
        };
        let broker = broker.build()?;
        let first_agent = AgentId::on_node(broker.node(), 1);
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let (supervisor_tx, supervisor_inbox) = crossbeam_channel::unbounded();
        let pools = config
            .specs
            .iter()
            .map(|(spec, _)| {
                SpecPool::new(spec.role.clone(), spec.capabilities.clone(), spec.count)
            })
            .collect();
        let scaling = Scaling {
            policy: config.autoscale,
            min: config.min_agents,
            max: config.max_agents,
        };
        let results = Arc::new(Results::new(config.result_retention));
        let (state, election) = match &config.state_dir {
            Some(dir) => {
                let state = StateDir::new(dir);
                let election_config = config
                    .election
                    .clone()
                    .unwrap_or_else(|| ElectionConfig::new(format!("pid-{}", std::process::id())));
                // Started now; its events wait in their channel until the
                // leadership thread, started last, reads them.
                let election =
                    LeaderElection::new(state.election_dir(), election_config)?.start()?;
                (Some(state), Some(Arc::new(election)))
            }
            None => (None, None),
        };
        // A cluster node may also stand in an election held on Redis.
        #[cfg(feature = "redis")]
        let election = match (&config.redis, &config.election) {
            (Some(redis), Some(election_config)) => Some(Arc::new(
                LeaderElection::redis(redis.clone(), election_config.clone())?.start()?,
            )),
            _ => election,
        };
        #[cfg(feature = "redis")]
        let redis = match &config.redis {
            Some(redis) => Some(Arc::new(RedisQueue::connect(
                redis.clone(),
                config.node.clone().unwrap_or_else(default_node_name),
                config
                    .specs
                    .iter()
                    .map(|(spec, _)| (spec.role.clone(), spec.capabilities.clone()))
                    .collect(),
                config.visibility_timeout,
                config.result_retention,
            )?)),
            None => None,
        };
        #[cfg(feature = "redis")]
        let recording = state.is_some() || redis.is_some();
        #[cfg(not(feature = "redis"))]
        let recording = state.is_some();
        let (recorder_tx, recorder_inbox) = crossbeam_channel::unbounded();
        let recorder_tx = recording.then_some(recorder_tx);
        let shared = Arc::new(Shared {
            distributor: Mutex::new(Distributor::new(
                pools,
                Arc::clone(&results),
                scaling,
                recorder_tx.clone(),
                config.priority_aging,
            )),
            results,
            broker,
            // Over a state directory, the memory is loaded on takeover.
            memory: config.memory.unwrap_or_else(SharedMemory::in_memory),
            parallel: ParallelPool::new(config.parallelism),
            tabs: config.tabs.clone(),
            events: events_tx,
            events_dropped: AtomicU64::new(0),
            supervisor: SupervisorSlot::new(supervisor_tx),
            next_agent: AtomicU64::new(first_agent.get()),
            names: Mutex::new(HashMap::new()),
            hung_threads: AtomicUsize::new(0),
            spinning: AtomicBool::new(false),
            idle_spin: AdaptiveSpin::new(IDLE_SPIN),
            last_hand_out: AtomicU64::new(0),
            started: Instant::now(),
            state,
            election,
            #[cfg(feature = "redis")]
            redis,
        });
        let factories: Vec<Factory> = config.specs.iter().map(|(_, f)| Arc::clone(f)).collect();
        let mut agents = Vec::new();
        let mut orchestrator = Orchestrator {
            shared: Arc::clone(&shared),
            events: events_rx,
            recorder: None,
            recorder_tx,
            leadership: None,
            #[cfg(feature = "redis")]
            pump: None,
            #[cfg(feature = "redis")]
            relay: None,
            shutdown_timeout: config.shutdown_timeout,
            shut_down: false,
        };
        if orchestrator.shared.state.is_some() {
            orchestrator.recorder = Some(durable::spawn_recorder(
                Arc::clone(&shared),
                recorder_inbox.clone(),
            )?);
        }
        #[cfg(feature = "redis")]
        if let Some(queue) = &shared.redis {
            orchestrator.recorder = Some(redis_queue::spawn_recorder(
                Arc::clone(queue),
                recorder_inbox,
            )?);
            // A node dispatches from the start: there is no leader to wait for.
            let mut fx = Effects::default();
            shared
                .distributor
                .lock()
                .restore(Vec::new(), Vec::new(), &mut fx);
            shared.apply(&mut fx);
        }
        for (spec, (agent_spec, factory)) in config.specs.iter().enumerate() {
            for _ in 0..agent_spec.count {
                match spawn_agent(&shared, spec, factory, false) {
                    Ok(agent) => agents.push(agent),
                    Err(error) => {
                        // The agents spawned so far are stopped by the
                        // supervisor that `drop` shuts down.
                        shared.supervisor.install(Supervisor::new(
                            Arc::clone(&shared),
                            supervisor_inbox,
                            factories,
                            config.health,
                            agents,
                        ));
                        return Err(error);
                    }
                }
            }
        }
        shared.supervisor.install(Supervisor::new(
            Arc::clone(&shared),
            supervisor_inbox,
            factories,
            config.health,
            agents,
        ));
        #[cfg(feature = "redis")]
        if let Some(queue) = &shared.redis {
            let control = Arc::new(redis_queue::PumpControl::default());
            let agents = config.specs.iter().map(|(spec, _)| spec.count).sum();
            orchestrator.pump = Some((
                redis_queue::spawn_pump(
                    Arc::clone(&shared),
                    Arc::clone(queue),
                    agents,
                    Arc::clone(&control),
                )?,
                control,
            ));
        }
        #[cfg(feature = "redis")]
        if let Some(relay) = relay {
            let stop = Arc::new(AtomicBool::new(false));
            orchestrator.relay = Some((
                redis_relay::spawn_relay(relay, shared.broker.clone(), Arc::clone(&stop))?,
                stop,
            ));
        }
        if let Some(election) = &shared.election {
            let (stop, stopped) = crossbeam_channel::bounded(0);
            orchestrator.leadership = Some((
                durable::spawn_leadership(Arc::clone(&shared), Arc::clone(election), stopped)?,
                stop,
            ));
        }
        Ok(orchestrator)
    }

    /// Submits a task and returns its id.
    ///
    /// # Errors
    /// * [`Error::NoAgentForTask`] when no agent spec has the task's role and
    ///   every capability it requires.
    /// * [`Error::NotFound`] when a dependency names a task that was never
    ///   submitted (or whose result was evicted). A dependency that already
    ///   failed is not an error: the task gets a failed result.
    /// * [`Error::ShutDown`] after shutdown began.
    /// * With a [state directory](OrchestratorBuilder::state_dir):
    ///   [`Error::NotLeader`] when this instance does not lead (`leader`
    ///   and `current` name the leader and its epoch when known), or lost the lead while the
    ///   task was being recorded (a new leader may then still run it);
    ///   [`Error::Io`] when the task cannot be recorded.
    /// * On a Redis cluster node (`OrchestratorBuilder::redis`, feature `redis`):
    ///   [`Error::NoAgentForTask`] only when neither this node nor any live
    ///   node of the cluster (a heartbeat within this node's visibility
    ///   timeout) has a spec for the task; [`Error::Backend`] when Redis
    ///   cannot be reached.
    pub fn submit(&self, task: Task) -> Result<TaskId> {
        self.shared.submit(task)
    }

    /// Submits many tasks under one round of locking; returns their ids in
    /// order. All are accepted, or none.
    ///
    /// # Errors
    /// As [`Orchestrator::submit`], for the first task refused.
    pub fn submit_batch(&self, tasks: impl IntoIterator<Item = Task>) -> Result<Vec<TaskId>> {
        let tasks: Vec<Task> = tasks.into_iter().collect();
        let mut ids = Vec::with_capacity(tasks.len());
        self.shared.submit_all(tasks, &mut ids)?;
        Ok(ids)
    }

    /// The result of a finished task; `None` while it is queued or running
    /// (or when it is unknown or its result was evicted). On a
    /// Redis cluster node (`OrchestratorBuilder::redis`), the result of a
    /// task run by any node (`None` also when Redis cannot be reached; the
    /// failure is logged).
    pub fn result(&self, id: TaskId) -> Option<TaskResult> {
        // A node answers from Redis only: a result it holds locally but has
        // not stored yet would not be visible on the other nodes.
        #[cfg(feature = "redis")]
        if let Some(queue) = &self.shared.redis {
            return queue
                .result(id)
                .inspect_err(|error| tracing::warn!(%error, "reading a result from redis failed"))
                .ok()
                .flatten();
        }
        self.shared.results.get(id)
    }

    /// Waits at most `timeout` for a task to finish and returns its result.
    ///
    /// # Errors
    /// [`Error::Timeout`] when it has not finished in time;
    /// [`Error::NotFound`] when `id` was never submitted or its result was
    /// evicted. On a Redis cluster node (`OrchestratorBuilder::redis`), the
    /// result of a task run by any node, once stored in Redis: an unknown id
    /// is then [`Error::Timeout`] too, and [`Error::Backend`] when Redis
    /// cannot be reached.
    pub fn wait(&self, id: TaskId, timeout: Duration) -> Result<TaskResult> {
        let deadline = crate::clock::deadline_after(timeout);
        #[cfg(feature = "redis")]
        if let Some(queue) = &self.shared.redis {
            return wait_on_redis(queue, id, deadline);
        }
        if let Some(result) = self.shared.results.get(id) {
            return Ok(result);
        }
        {
            // A task is live in the distributor until its result is
            // published, both under the distributor's lock.
            let distributor = self.shared.distributor.lock();
            if !distributor.is_live(id) {
                return self.shared.results.get(id).ok_or(Error::NotFound {
                    what: Missing::Task(id),
                });
            }
        }
        match self.shared.results.wait(id, deadline) {
            Waited::Finished(result) => Ok(result),
            Waited::TimedOut => Err(Error::Timeout),
        }
    }

    /// Cancels a task that has not started: queued, waiting for its
    /// dependencies, or handed to an agent but not begun. Its result becomes
    /// [`TaskStatus::Cancelled`](crate::TaskStatus::Cancelled), and tasks
    /// depending on it fail. `Ok(false)` when it already started or finished.
    ///
    /// On a Redis cluster node (`OrchestratorBuilder::redis`, feature `redis`), any task of
    /// the cluster: one no node pulled yet is cancelled at once, in Redis;
    /// one another node holds is cancelled by that node unless it started,
    /// and this call waits for its answer (`Ok(true)` only when the task
    /// will not run).
    ///
    /// # Errors
    /// [`Error::NotFound`] when `id` was never submitted. On a Redis
    /// cluster node: [`Error::Timeout`] when the node holding the task gave
    /// no answer within twice the visibility timeout (the request stays: a
    /// node that takes the task over cancels it), [`Error::Backend`] when
    /// Redis cannot be reached.
    pub fn cancel(&self, id: TaskId) -> Result<bool> {
        #[cfg(feature = "redis")]
        if let Some(queue) = &self.shared.redis {
            // Always through Redis, even for a task in hand here: only the
            // group knows whether this node still holds it (another node
            // may have taken it over while this one was frozen or cut off);
            // if it does, this node's pump answers within its cancel poll.
            return queue.cancel(id);
        }
        self.cancel_here(id)
    }

    fn cancel_here(&self, id: TaskId) -> Result<bool> {
        let mut fx = Effects::default();
        let cancelled =
            self.shared
                .distributor
                .lock()
                .cancel(id, "cancelled by the application", &mut fx);
        self.shared.apply(&mut fx);
        cancelled
    }

    /// A snapshot of agents, queues, totals and throughput.
    pub fn status(&self) -> StatusReport {
        let distributor = self.shared.distributor.lock();
        let agents: Vec<AgentStatus> = distributor
            .specs
            .iter()
            .flat_map(|pool| pool.agents.iter().map(move |a| (pool, a)))
            .filter(|(_, a)| a.state() != AgentState::Stopped)
            .map(|(pool, agent)| {
                let m = agent.metrics.snapshot();
                let current = agent.current.load(Ordering::Relaxed);
                AgentStatus {
                    id: agent.id,
                    role: agent.role.clone(),
                    capabilities: pool.capabilities.clone(),
                    state: agent.state(),
                    tasks: m.executed,
                    succeeded: m.succeeded,
                    failed: m.failed,
                    success_rate: m.success_rate(),
                    mean_time: m.mean,
                    p99_time: m.p99,
                    current_task: (current != 0).then(|| TaskId::from(current)),
                }
            })
            .collect();
        let t = distributor.totals;
        let totals = TaskTotals {
            submitted: t.submitted,
            succeeded: t.succeeded,
            failed: t.failed,
            cancelled: t.cancelled,
            timed_out: t.timed_out,
            retried: t.retried,
            late_results: t.late_results,
            handed_over: t.handed_over,
        };
        let pools = distributor
            .pool_figures()
            .into_iter()
            .map(|figures| {
                let pool = distributor.pool(figures.spec);
                PoolStatus {
                    role: pool.role.clone(),
                    capabilities: pool.capabilities.clone(),
                    agents: figures.agents,
                    idle: figures.idle,
                    queued: figures.queued,
                    restarts: pool.restarts,
                    scaled_up: pool.scaled_up,
                    scaled_down: pool.scaled_down,
                    failed: pool.failed,
                }
            })
            .collect();
        let uptime = self.shared.started.elapsed();
        StatusReport {
            running: agents.iter().filter(|a| a.current_task.is_some()).count(),
            agents,
            pools,
            hung_threads: self.shared.hung_threads.load(Ordering::Relaxed),
            queues: QueueDepths::from_ranks(distributor.queued()),
            waiting_on_dependencies: distributor.waiting_on_dependencies(),
            throughput: totals.finished() as f64 / uptime.as_secs_f64().max(1e-9),
            totals,
            uptime,
            events_dropped: self.shared.events_dropped.load(Ordering::Relaxed),
            tabs: self.shared.tabs.as_ref().map(TabPool::stats),
        }
    }

    /// The browser tabs the agents share, if the orchestrator was given a
    /// pool ([`OrchestratorBuilder::tab_pool`]).
    pub fn tabs(&self) -> Option<&TabPool> {
        self.shared.tabs.as_ref()
    }

    /// The shared memory the agents use. With a
    /// [state directory](OrchestratorBuilder::state_dir) it is loaded from
    /// `dir/memory.snapshot` when this instance becomes leader; before that
    /// (and after it is deposed) it is an empty in-memory store whose writes
    /// are not kept.
    pub fn memory(&self) -> &SharedMemory {
        &self.shared.memory
    }

    /// The message broker; every agent has a mailbox in it, registered with
    /// its role. On a Redis cluster node it also reaches the agents of the
    /// other nodes (see [`MessageBroker::send`]).
    pub fn broker(&self) -> &MessageBroker {
        &self.shared.broker
    }

    /// A mailbox of the application's own, under a fresh agent id (unique
    /// across the cluster on a Redis cluster node), so that code outside the
    /// agents can talk with them: send with [`Mailbox::id`] as `from`, and
    /// the agents' replies to that id arrive here, from any node. It stays
    /// registered until [`MessageBroker::unregister`] removes it.
    ///
    /// # Errors
    /// [`Error::AlreadyRegistered`] if the fresh id was registered by hand
    /// meanwhile.
    pub fn mailbox(&self) -> Result<Mailbox> {
        self.shared.broker.register(self.shared.next_agent_id())
    }

    /// Events about agents and tasks, as they happen.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// The nodes of this orchestrator's [Redis cluster](OrchestratorBuilder::redis)
    /// that wrote a heartbeat (every twelfth of the visibility timeout, on
    /// the Redis server's clock) and were not declared dead by an elected
    /// leader, sorted by name: compare [`NodeStatus::heartbeat`] with the
    /// visibility timeout to judge which are alive.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when this orchestrator is not a cluster
    /// node; [`Error::Backend`] when Redis cannot be reached.
    #[cfg(feature = "redis")]
    pub fn cluster_nodes(&self) -> Result<Vec<NodeStatus>> {
        let queue = self.cluster()?;
        Ok(queue
            .nodes()?
            .into_iter()
            .map(|(name, heartbeat, agents)| NodeStatus {
                name,
                heartbeat,
                agents,
            })
            .collect())
    }

    /// Tasks of this orchestrator's [Redis cluster](OrchestratorBuilder::redis)
    /// that no node has pulled yet, per priority.
    ///
    /// # Errors
    ///
    /// As [`cluster_nodes`](Self::cluster_nodes).
    #[cfg(feature = "redis")]
    pub fn cluster_queued(&self) -> Result<QueueDepths> {
        Ok(QueueDepths::from_ranks(self.cluster()?.depths()?))
    }

    #[cfg(feature = "redis")]
    fn cluster(&self) -> Result<&RedisQueue> {
        self.shared.redis.as_deref().ok_or_else(|| {
            Error::InvalidConfig("this orchestrator is not a node of a redis cluster".into())
        })
    }

    /// Whether this instance may dispatch: always `true` without a
    /// [state directory](OrchestratorBuilder::state_dir); with one, `true`
    /// from the end of a takeover (state loaded, tasks re-queued) for as
    /// long as the election says this instance leads. On a Redis cluster
    /// node given an [election](OrchestratorBuilder::election), whether this
    /// node leads the cluster (every node dispatches either way).
    pub fn is_leader(&self) -> bool {
        match &self.shared.election {
            None => true,
            Some(election) => election.is_leader() && self.shared.distributor.lock().is_leading(),
        }
    }

    /// Shuts down gracefully: stops accepting tasks, cancels every task that
    /// has not started (its result says why), lets running tasks finish for
    /// at most the shutdown timeout, and joins every thread. Dropping the
    /// orchestrator does the same.
    ///
    /// # Errors
    /// [`Error::Timeout`] when some agents were still running a task at the
    /// timeout: their threads are left to end on their own, their tasks'
    /// results are lost with them.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        if self.shut_down {
            return Ok(());
        }
        self.shut_down = true;
        // A cluster node stops pulling first; the tasks it holds and has not
        // started are left pending in Redis, for another node to take over.
        // Its pump goes on beating and refreshing the running ones until
        // they end (below), so no node takes them over meanwhile.
        #[cfg(feature = "redis")]
        let pump = self.pump.take();
        #[cfg(feature = "redis")]
        if let Some((_, control)) = &pump {
            control.drain.store(true, Ordering::Release);
        }
        // It leaves the relay and delivers what other nodes sent before the
        // agents stop reading.
        #[cfg(feature = "redis")]
        if let Some((relay, stop)) = self.relay.take() {
            stop.store(true, Ordering::Release);
            let _ = relay.join();
        }
        let mut fx = Effects::default();
        self.shared.distributor.lock().close(&mut fx);
        self.shared.apply(&mut fx);
        let Some(supervisor) = self.shared.supervisor.take() else {
            #[cfg(feature = "redis")]
            end_pump(pump);
            self.stop_durable();
            return Ok(());
        };
        let deadline = crate::clock::deadline_after(self.shutdown_timeout);
        let stuck = match supervisor {
            Stopping::Inline(mut supervisor) => Ok(supervisor.shutdown(deadline)),
            Stopping::Thread(supervisor) => {
                let (reply_tx, reply) = crossbeam_channel::bounded(1);
                self.shared.request(Request::Shutdown {
                    deadline,
                    reply: reply_tx,
                });
                // The supervisor answers by the deadline; the margin covers a
                // supervisor busy spawning when the request arrived.
                let stuck = reply.recv_deadline(deadline + Duration::from_secs(5));
                if stuck.is_ok() {
                    let _ = supervisor.join();
                }
                stuck
            }
        };
        #[cfg(feature = "redis")]
        end_pump(pump);
        self.stop_durable();
        let stuck = stuck.map_err(|_| Error::Timeout)?;
        if stuck.is_empty() {
            Ok(())
        } else {
            tracing::warn!(?stuck, "agents still running at the shutdown timeout");
            Err(Error::Timeout)
        }
    }
}

/// A node name unique in the cluster without configuration: the host name
/// (where the system tells it), the process id (pid 1 in every container)
/// and a random suffix.
#[cfg(feature = "redis")]
fn default_node_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "node".to_owned()
    } else {
        host
    };
    format!("{host}-pid-{}-{:08x}", std::process::id(), random as u32)
}

/// Ends a cluster node's pump once its agents ended.
#[cfg(feature = "redis")]
fn end_pump(pump: Option<(JoinHandle<()>, Arc<redis_queue::PumpControl>)>) {
    if let Some((pump, control)) = pump {
        control.stop.store(true, Ordering::Release);
        let _ = pump.join();
    }
}

impl Orchestrator {
    /// With a state directory, once no agent runs any more: records the last
    /// results, compacts the stores while still leader, and resigns, which
    /// hands the unstarted tasks (still recorded as accepted) to the next
    /// leader at once.
    fn stop_durable(&mut self) {
        if let (Some(tx), Some(recorder)) = (self.recorder_tx.take(), self.recorder.take()) {
            let _ = tx.send(Recorded::Stop);
            let _ = recorder.join();
        }
        let Some(election) = &self.shared.election else {
            return;
        };
        if self.is_leader() {
            let stores = self.shared.state.as_ref().map(|s| &s.tasks);
            for store in std::iter::once(&self.shared.memory).chain(stores) {
                if let Err(error) = store.persist() {
                    tracing::warn!(%error, "compacting a store at shutdown failed");
                }
            }
        }
        if let Err(error) = election.resign() {
            tracing::warn!(%error, "resigning at shutdown failed");
        }
        if let Some((leadership, stop)) = self.leadership.take() {
            drop(stop);
            let _ = leadership.join();
        }
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "orchestrator shutdown on drop");
        }
    }
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field(
                "agents",
                &self
                    .shared
                    .distributor
                    .lock()
                    .pool_figures()
                    .iter()
                    .map(|p| p.agents)
                    .sum::<usize>(),
            )
            .field("shut_down", &self.shut_down)
            .finish()
    }
}

/// Waits for a result stored by any node of a Redis cluster, polling Redis
/// (every 2 ms) until `deadline`.
#[cfg(feature = "redis")]
fn wait_on_redis(queue: &RedisQueue, id: TaskId, deadline: Instant) -> Result<TaskResult> {
    const POLL: Duration = Duration::from_millis(2);
    loop {
        if let Some(result) = queue.result(id)? {
            return Ok(result);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout);
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}
