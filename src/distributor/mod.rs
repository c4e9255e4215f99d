//! The seed's TASK DISTRIBUTOR: four priority queues, capability routing,
//! load balance, retries, dependencies and results.
//!
//! # Dispatch protocol
//!
//! All of the distributor's state sits behind one mutex, taken once per
//! *batch* of work, never once per task on a busy system:
//!
//! * **Submit** takes the lock once for a whole `submit_batch`. Each task is
//!   routed to a *lane* (the set of agent specs that can serve its role and
//!   capabilities). If an agent of the lane is idle, the task is handed to it
//!   directly (least loaded first, ties rotate) and the agent is woken by a
//!   `TaskAssignment` message in its mailbox; otherwise the task joins its
//!   lane's queue for its priority.
//! * **An agent that runs out of work** takes the lock once to report the
//!   results it has gathered and to take its next work: the highest priority
//!   task among its lanes (oldest first within a priority). When its recent
//!   tasks were quick, it takes several of the same priority at once (at
//!   most its fair share of the queue), so a flood of tiny tasks costs one
//!   lock round per batch instead of one per task.
//! * **Tasks handed out but not started** stay visible: they sit in the
//!   agent's own batch, behind a lock only that agent normally touches.
//!   Cancelling takes a task back out of it, and a task submitted at a
//!   higher priority than a batch takes every such batch back into the
//!   queues first, so a task never starts while a more urgent one waits.
//!
//! Nothing here blocks while holding the lock, and the lock order is always
//! distributor, then an agent's batch.

mod aging;
mod idmap;
mod pools;
mod results;
mod slab;
mod takeover;
mod task;

use std::collections::{HashMap, VecDeque};
use std::mem;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::agent::AgentShared;
use crate::coordination::AutoscalePolicy;
use crate::error::{Error, Missing, Result};
use crate::ids::{AgentId, AgentState, Priority, Role, TaskId};
use crate::orchestrator::{Event, Recorded};
use aging::Aging;
use crossbeam_channel::Sender;
use slab::IdSlab;

pub(crate) use idmap::IdMap;
pub(crate) use results::{Results, Waited};
pub use task::{Output, Task, TaskError, TaskResult, TaskStatus};
pub(crate) use task::{ResultRecord, TaskRecord};

/// The most tasks handed to one agent at once.
const MAX_BATCH: usize = 32;

/// The smallest batch whose submit wakes the agents it finds idle before it
/// queues the rest (see [`Distributor::submit`]): queueing this many takes
/// about as long as waking an agent.
const EARLY_START_BATCH: usize = 64;

/// Why a task is refused or failed when the specs that could serve it were
/// failed by the restart limit.
const SPEC_FAILED: &str = "every agent spec that could serve it failed: restart limit reached";

/// One agent spec's pool, as the distributor routes to it.
pub(crate) struct SpecPool {
    pub(crate) role: Role,
    pub(crate) capabilities: Vec<String>,
    pub(crate) agents: Vec<Arc<AgentShared>>,
    /// Lanes this spec serves.
    lanes: Vec<usize>,
    /// Idle agents, longest idle first: handing work to the front rotates
    /// it among equally loaded agents.
    idle: VecDeque<Arc<AgentShared>>,
    /// How many agents the spec started with.
    start: usize,
    /// Places reserved for agents not in the pool yet: scale-ups decided,
    /// and replacements of failed agents. Auto-scaling counts them as
    /// members, so that it does not fill a place a replacement will take.
    pending: usize,
    /// Failed by the restart limit: serves nothing any more.
    pub(crate) failed: bool,
    pub(crate) restarts: u64,
    pub(crate) scaled_up: u64,
    pub(crate) scaled_down: u64,
    last_scaled: Option<Instant>,
}

impl SpecPool {
    pub(crate) fn new(role: Role, capabilities: Vec<String>, start: usize) -> SpecPool {
        SpecPool {
            role,
            capabilities,
            agents: Vec::new(),
            lanes: Vec::new(),
            idle: VecDeque::new(),
            start,
            pending: 0,
            failed: false,
            restarts: 0,
            scaled_up: 0,
            scaled_down: 0,
            last_scaled: None,
        }
    }

    fn serves(&self, role: Option<&Role>, capabilities: &[String]) -> bool {
        role.is_none_or(|r| *r == self.role)
            && capabilities.iter().all(|c| self.capabilities.contains(c))
    }
}

/// The tasks one set of specs can serve, by priority.
struct Lane {
    specs: Vec<usize>,
    queues: [VecDeque<Task>; 4],
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct RouteKey {
    role: Option<Role>,
    capabilities: Vec<String>,
}

/// A task that is not finished: where it is follows from which structure
/// holds it (a lane queue, `waiting`, an agent's batch, or an agent running
/// it), so the hot path never updates this entry between submit and finish.
#[derive(Default)]
struct Live {
    /// Tasks waiting for this one.
    dependents: Vec<TaskId>,
}

struct Waiting {
    task: Task,
    remaining: usize,
}

/// One attempt, as the agent reports it.
pub(crate) struct Finished {
    pub(crate) task: Task,
    pub(crate) agent: AgentId,
    pub(crate) outcome: std::result::Result<Output, TaskError>,
    pub(crate) elapsed: Duration,
}

/// What to do once the lock is released: wake agents, emit events, spawn
/// agents for the specs that scale up.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) wake: Vec<Arc<AgentShared>>,
    /// An idle agent first in its pool's line after an agent of that pool
    /// was handed work: woken to poll (while tasks come back to back, see
    /// `Shared::apply`), so that the next task finds it awake.
    pub(crate) next_in_line: Option<Arc<AgentShared>>,
    pub(crate) events: Vec<Event>,
    pub(crate) scale_up: Vec<usize>,
}

/// Counts since the orchestrator started.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Totals {
    pub(crate) submitted: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) cancelled: u64,
    pub(crate) timed_out: u64,
    pub(crate) retried: u64,
    /// Results of attempts that came back after their task had already
    /// ended (timed out): ignored, and counted here.
    pub(crate) late_results: u64,
    /// Unstarted tasks dropped when this instance was deposed.
    pub(crate) handed_over: u64,
}

/// The distributor's state, behind the orchestrator's mutex.
pub(crate) struct Distributor {
    pub(crate) specs: Vec<SpecPool>,
    lanes: Vec<Lane>,
    routes: HashMap<RouteKey, usize>,
    live: IdSlab<Live>,
    waiting: IdMap<TaskId, Waiting>,
    results: Arc<Results>,
    /// Results recorded by the current operation, published before the
    /// distributor's lock is released.
    unpublished: Vec<TaskResult>,
    queued: [usize; 4],
    /// Agents holding a counted batch, by priority rank.
    batched: [usize; 4],
    next_id: u64,
    accepting: bool,
    /// Whether this instance may dispatch: always without a state
    /// directory; with one, from the end of a takeover until deposed.
    leading: bool,
    /// Where finished results and evictions go to be made durable (with a
    /// state directory), and whether they are sent there now: not while
    /// shutdown cancels unstarted tasks (the next leader runs them), nor
    /// once deposed (the tasks belong to the new leader).
    recorder: Option<Sender<Recorded>>,
    recording: bool,
    pub(crate) totals: Totals,
    scaling: Scaling,
    aging: Option<Aging>,
    /// Where the next search for an idle agent starts among a lane's specs.
    tie_turn: usize,
}

/// The auto-scaling policy with the pool bounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scaling {
    pub(crate) policy: AutoscalePolicy,
    pub(crate) min: usize,
    pub(crate) max: usize,
}

impl Distributor {
    pub(crate) fn new(
        specs: Vec<SpecPool>,
        results: Arc<Results>,
        scaling: Scaling,
        recorder: Option<Sender<Recorded>>,
        aging: Option<Duration>,
    ) -> Distributor {
        Distributor {
            specs,
            lanes: Vec::new(),
            routes: HashMap::new(),
            live: IdSlab::default(),
            waiting: IdMap::default(),
            results,
            unpublished: Vec::new(),
            queued: [0; 4],
            batched: [0; 4],
            next_id: 1,
            accepting: true,
            leading: recorder.is_none(),
            recording: recorder.is_some(),
            recorder,
            scaling,
            totals: Totals::default(),
            aging: aging.map(Aging::new),
            tie_turn: 0,
        }
    }

    /// Tasks waiting to start, by priority rank (critical first): in the
    /// queues, and handed to agents in batches not yet started.
    pub(crate) fn queued(&self) -> [usize; 4] {
        let mut queued = self.queued;
        for agent in self.specs.iter().flat_map(|s| &s.agents) {
            for task in &agent.batch.lock().tasks {
                queued[task.priority.rank()] += 1;
            }
        }
        queued
    }

    /// Tasks waiting for their dependencies.
    pub(crate) fn waiting_on_dependencies(&self) -> usize {
        self.waiting.len()
    }

    /// The lane for a route, created on first use.
    fn lane_for(&mut self, task: &Task) -> Result<usize> {
        let key = RouteKey {
            role: task.role.clone(),
            capabilities: {
                let mut caps = task.capabilities().to_vec();
                caps.sort_unstable();
                caps
            },
        };
        if let Some(&lane) = self.routes.get(&key) {
            if self.lane_is_served(lane) {
                return Ok(lane);
            }
            return Err(Error::NoAgentForTask {
                kind: task.kind().to_owned(),
                role: key.role,
                capabilities: key.capabilities,
                reason: SPEC_FAILED.into(),
            });
        }
        let specs: Vec<usize> = (0..self.specs.len())
            .filter(|&s| self.specs[s].serves(key.role.as_ref(), &key.capabilities))
            .collect();
        if specs.iter().all(|&s| self.specs[s].failed) && !specs.is_empty() {
            return Err(Error::NoAgentForTask {
                kind: task.kind().to_owned(),
                role: key.role,
                capabilities: key.capabilities,
                reason: SPEC_FAILED.into(),
            });
        }
        if specs.is_empty() {
            return Err(Error::NoAgentForTask {
                kind: task.kind().to_owned(),
                role: key.role,
                capabilities: key.capabilities,
                reason: if task.role.is_some()
                    && !self
                        .specs
                        .iter()
                        .any(|s| Some(&s.role) == task.role.as_ref())
                {
                    "no agent has this role".into()
                } else {
                    "no agent has every required capability".into()
                },
            });
        }
        let lane = self.lanes.len();
        for &s in &specs {
            self.specs[s].lanes.push(lane);
        }
        self.lanes.push(Lane {
            specs,
            queues: Default::default(),
        });
        self.routes.insert(key, lane);
        Ok(lane)
    }

    /// Accepts `tasks`: all of them, or none when one is refused. A large
    /// batch that finds agents idle hands them its leading tasks first and
    /// calls `start_early` (the lock still held) before it queues the rest,
    /// so that those agents can be woken meanwhile: queueing a thousand
    /// tasks takes longer than a wake-up.
    pub(crate) fn submit(
        &mut self,
        tasks: Vec<Task>,
        ids: &mut Vec<TaskId>,
        fx: &mut Effects,
        start_early: impl FnOnce(&mut Effects),
    ) -> Result<()> {
        let mut tasks = self.reserve(tasks, ids)?.into_iter();
        if tasks.len() >= EARLY_START_BATCH && self.admit_leading(&mut tasks, fx) > 0 {
            start_early(fx);
        }
        self.admit_reserved(tasks, fx)
    }

    /// Refuses when this instance may not take tasks.
    fn check_accepting(&self) -> Result<()> {
        if !self.accepting {
            return Err(Error::ShutDown);
        }
        if !self.leading {
            return Err(Error::NotLeader {
                epoch: None,
                current: None,
                leader: None,
            });
        }
        Ok(())
    }

    /// The first half of a submit: routes every task, checks its
    /// dependencies and assigns its id (pushed to `ids`), without queueing
    /// anything. With a state directory the tasks are recorded between the
    /// two halves, with the lock released.
    pub(crate) fn reserve(
        &mut self,
        mut tasks: Vec<Task>,
        ids: &mut Vec<TaskId>,
    ) -> Result<Vec<Task>> {
        self.check_accepting()?;
        let mut last_route: Option<(Option<Role>, usize)> = None;
        for task in &mut tasks {
            // Consecutive tasks of one route (the common batch) skip the
            // route lookup.
            let plain = task.capabilities().is_empty();
            let lane = match &last_route {
                Some((role, lane)) if plain && *role == task.role => *lane,
                _ => {
                    let lane = self.lane_for(task)?;
                    last_route = plain.then(|| (task.role.clone(), lane));
                    lane
                }
            };
            for &dependency in task.dependencies() {
                if !self.live.contains(dependency.get()) && self.outcome(dependency).is_none() {
                    return Err(Error::NotFound {
                        what: Missing::Task(dependency),
                    });
                }
            }
            task.lane = lane as u32;
        }
        ids.reserve(tasks.len());
        for task in &mut tasks {
            task.id = TaskId::from(self.next_id);
            self.next_id += 1;
            ids.push(task.id);
        }
        Ok(tasks)
    }

    /// Hands the leading tasks [`reserve`]d to idle agents, for as long as
    /// each finds one and no later task of the batch outranks it (that one
    /// would take it back from an agent that has not started it): what
    /// [`admit_reserved`] would do with them. Returns how many.
    ///
    /// [`reserve`]: Distributor::reserve
    /// [`admit_reserved`]: Distributor::admit_reserved
    fn admit_leading(&mut self, tasks: &mut std::vec::IntoIter<Task>, fx: &mut Effects) -> usize {
        let Some(top) = tasks.as_slice().iter().map(|t| t.priority).max() else {
            return 0;
        };
        let mut handed = 0;
        while let Some(next) = tasks.as_slice().first() {
            let lane = next.lane as usize;
            if next.priority != top || !next.dependencies().is_empty() || !self.lane_is_served(lane)
            {
                break;
            }
            let Some(agent) = self.take_idle(lane) else {
                break;
            };
            let Some(task) = tasks.next() else {
                break;
            };
            self.totals.submitted += 1;
            self.live.insert(task.id.get(), Live::default());
            self.hand_over(agent, task, fx);
            handed += 1;
        }
        handed
    }

    /// The second half of a submit: queues the tasks [`reserve`]d.
    ///
    /// [`reserve`]: Distributor::reserve
    pub(crate) fn admit_reserved(
        &mut self,
        routed: impl IntoIterator<Item = Task>,
        fx: &mut Effects,
    ) -> Result<()> {
        self.check_accepting()?;
        for mut task in routed {
            self.totals.submitted += 1;
            let dependencies = task
                .extras
                .as_mut()
                .map(|e| mem::take(&mut e.dependencies))
                .unwrap_or_default();
            self.admit(task, &dependencies, fx);
        }
        self.publish();
        self.autoscale(Instant::now(), fx);
        Ok(())
    }

    /// Queues a new task, or parks it until its dependencies succeed, or
    /// fails it at once when one of them has failed.
    fn admit(&mut self, task: Task, dependencies: &[TaskId], fx: &mut Effects) {
        let id = task.id;
        let failed = dependencies.iter().find_map(|&d| {
            self.outcome(d)
                .filter(|(status, _)| *status != TaskStatus::Succeeded)
                .map(|(status, error)| dependency_failure(d, status, error.as_deref()))
        });
        if let Some(reason) = failed {
            self.live.insert(id.get(), Live::default());
            self.complete(TaskResult::failed(id, TaskStatus::Failed, reason, 0), fx);
            return;
        }
        let mut remaining = 0;
        for dependency in dependencies {
            if let Some(live) = self.live.get_mut(dependency.get()) {
                live.dependents.push(id);
                remaining += 1;
            }
        }
        self.live.insert(id.get(), Live::default());
        if remaining > 0 {
            self.waiting.insert(id, Waiting { task, remaining });
        } else {
            self.enqueue(task, fx);
        }
    }

    /// Hands `task` to an idle agent of its lane, or queues it; fails it
    /// when every spec of its lane has failed.
    fn enqueue(&mut self, task: Task, fx: &mut Effects) {
        let lane = task.lane as usize;
        if !self.lane_is_served(lane) {
            self.fail_unservable(&task, fx);
            return;
        }
        let priority = task.priority;
        if let Some(agent) = self.take_idle(lane) {
            self.hand_over(agent, task, fx);
            return;
        }
        let mut task = task;
        if let Some(aging) = &self.aging {
            task.queued_at = aging.now();
        }
        self.lanes[lane].queues[priority.rank()].push_back(task);
        self.queued[priority.rank()] += 1;
        if self.batched[priority.rank() + 1..].iter().any(|&n| n > 0) {
            self.take_back_batches_below(priority, fx);
        }
    }

    /// Puts `task` in the batch of `agent`, an idle agent just taken from
    /// its pool's idle list, and has it woken once the lock is released.
    fn hand_over(&mut self, agent: Arc<AgentShared>, task: Task, fx: &mut Effects) {
        let priority = task.priority;
        let mut batch = agent.batch.lock();
        batch.tasks.push_back(task);
        if batch.counted.is_none() {
            batch.counted = Some(priority);
            self.batched[priority.rank()] += 1;
        }
        drop(batch);
        // Several hand-outs in one round: any pool's next agent will do.
        if let Some(next) = self.specs[agent.spec].idle.front() {
            fx.next_in_line = Some(Arc::clone(next));
        }
        fx.wake.push(agent);
    }

    /// Whether `agent` is the first of its pool's idle list: the one the
    /// next task for its pool goes to.
    pub(crate) fn is_next_in_line(&self, agent: &Arc<AgentShared>) -> bool {
        self.specs[agent.spec]
            .idle
            .front()
            .is_some_and(|first| Arc::ptr_eq(first, agent))
    }

    /// The least loaded idle agent that can serve `lane`; ties go to the one
    /// idle longest.
    fn take_idle(&mut self, lane: usize) -> Option<Arc<AgentShared>> {
        let mut best: Option<(usize, u64)> = None;
        let specs = &self.lanes[lane].specs;
        // Ties between specs rotate: after each agent taken, the search
        // starts at the next spec.
        let turn = self.tie_turn.wrapping_add(1);
        let first = turn % specs.len().max(1);
        for &s in specs[first..].iter().chain(&specs[..first]) {
            let idle = &mut self.specs[s].idle;
            while let Some(stopped) = idle.front().filter(|a| a.stop.load(Ordering::Relaxed)) {
                stopped.idle_listed.store(false, Ordering::Relaxed);
                idle.pop_front();
            }
            if let Some(agent) = idle.front() {
                let load = agent.metrics.executed();
                if best.is_none_or(|(_, l)| load < l) {
                    best = Some((s, load));
                }
            }
        }
        let agent = self.specs[best?.0].idle.pop_front()?;
        self.tie_turn = turn;
        agent.idle_listed.store(false, Ordering::Relaxed);
        agent.set_state(AgentState::Busy);
        Some(agent)
    }

    /// Takes every not-started batch of a priority below `priority` back
    /// into the queues, in its original order at the front.
    fn take_back_batches_below(&mut self, priority: Priority, fx: &mut Effects) {
        for s in 0..self.specs.len() {
            for a in 0..self.specs[s].agents.len() {
                let agent = Arc::clone(&self.specs[s].agents[a]);
                let mut batch = agent.batch.lock();
                let Some(held) = batch.counted else { continue };
                if held >= priority {
                    continue;
                }
                batch.counted = None;
                self.batched[held.rank()] -= 1;
                let tasks = mem::take(&mut batch.tasks);
                drop(batch);
                self.requeue_front(tasks, fx);
            }
        }
        // A task taken back may be one an idle agent of another pool can
        // start now (the urgent task that caused this could not use it).
        self.hand_out_queued(fx);
    }

    /// Puts tasks taken back from a batch at the front of their queues, in
    /// their original order (they are older than anything queued behind
    /// them); a task nobody can serve any more fails instead.
    fn requeue_front(&mut self, tasks: VecDeque<Task>, fx: &mut Effects) {
        for task in tasks.into_iter().rev() {
            if self.lane_is_served(task.lane as usize) {
                self.queued[task.priority.rank()] += 1;
                self.lanes[task.lane as usize].queues[task.priority.rank()].push_front(task);
            } else {
                self.fail_unservable(&task, fx);
            }
        }
    }

    /// Fails a task whose every possible spec was failed by the restart
    /// limit.
    fn fail_unservable(&mut self, task: &Task, fx: &mut Effects) {
        let failed = TaskResult::failed(
            task.id,
            TaskStatus::Failed,
            SPEC_FAILED.into(),
            task.attempt,
        );
        self.complete(failed, fx);
    }

    /// Gives `agent` its next work in its batch; `false` when there is none
    /// and the agent is now idle.
    pub(crate) fn next_batch(&mut self, agent: &Arc<AgentShared>, fx: &mut Effects) -> bool {
        let mut batch = agent.batch.lock();
        if let Some(held) = batch.counted.take() {
            self.batched[held.rank()] -= 1;
        }
        if !batch.tasks.is_empty() {
            // Handed work since it last looked: count it again.
            let priority = batch
                .tasks
                .iter()
                .map(|t| t.priority)
                .max()
                .unwrap_or_default();
            batch.counted = Some(priority);
            self.batched[priority.rank()] += 1;
            return true;
        }
        if agent.stop.load(Ordering::Relaxed) {
            return false;
        }
        let spec = &self.specs[agent.spec];
        for rank in 0..4 {
            let best = spec
                .lanes
                .iter()
                .filter_map(|&l| self.lanes[l].queues[rank].front().map(|t| (l, t.id)))
                .min_by_key(|&(_, id)| id);
            let Some((lane, _)) = best else { continue };
            let queue_len = self.lanes[lane].queues[rank].len();
            let take = if agent.quick.load(Ordering::Relaxed) {
                (queue_len / spec.agents.len().max(1)).clamp(1, MAX_BATCH)
            } else {
                1
            };
            for _ in 0..take {
                let Some(task) = self.lanes[lane].queues[rank].pop_front() else {
                    break;
                };
                batch.tasks.push_back(task);
            }
            self.queued[rank] -= batch.tasks.len();
            batch.counted = Some(Priority::ALL[rank]);
            self.batched[rank] += 1;
            agent.set_state(AgentState::Busy);
            return true;
        }
        drop(batch);
        agent.set_state(AgentState::Idle);
        if !agent.idle_listed.swap(true, Ordering::Relaxed) {
            self.specs[agent.spec].idle.push_back(Arc::clone(agent));
        }
        if self.scaling.policy.enabled {
            self.scale_spec(agent.spec, Instant::now(), fx);
        }
        false
    }

    /// Records what an agent reports: results, retries, failures. The agent
    /// calls [`Distributor::publish`] after its last report.
    pub(crate) fn finish(&mut self, done: Finished, fx: &mut Effects) {
        let id = done.task.id;
        let ended = match done.outcome {
            Ok(output) => self.complete(
                TaskResult::ran(
                    id,
                    TaskStatus::Succeeded,
                    Ok(output),
                    done.task.attempt,
                    done.agent,
                    done.elapsed,
                ),
                fx,
            ),
            Err(error) if error.is_retryable() && done.task.attempt < done.task.max_attempts => {
                let live = self.live.contains(id.get());
                if live {
                    self.totals.retried += 1;
                    fx.events.push(Event::TaskRetried {
                        task: id,
                        attempt: done.task.attempt,
                        error: error.message().to_owned(),
                    });
                    self.enqueue(done.task, fx);
                }
                live
            }
            Err(error) => self.complete(
                TaskResult::ran(
                    id,
                    TaskStatus::Failed,
                    Err(error.message().to_owned()),
                    done.task.attempt,
                    done.agent,
                    done.elapsed,
                ),
                fx,
            ),
        };
        if !ended {
            self.totals.late_results += 1;
        }
    }

    /// Counts results that arrived from an agent no longer heard.
    pub(crate) fn discard_late(&mut self, results: usize) {
        self.totals.late_results += results as u64;
    }

    /// Ends a task whose attempt outlived its timeout, if it is still that
    /// attempt that runs.
    pub(crate) fn time_out(
        &mut self,
        id: TaskId,
        agent: &AgentShared,
        attempt: u32,
        timeout: Duration,
        fx: &mut Effects,
    ) {
        if agent.current.load(Ordering::Acquire) != id.get() || !self.live.contains(id.get()) {
            return;
        }
        fx.events.push(Event::TaskTimedOut {
            task: id,
            agent: agent.id,
        });
        self.complete(
            TaskResult::ran(
                id,
                TaskStatus::TimedOut,
                Err(format!("timed out after {timeout:?} on {}", agent.id)),
                attempt,
                agent.id,
                timeout,
            ),
            fx,
        );
        self.publish();
    }

    /// Records the final result of a live task and settles the tasks
    /// waiting on it: released when it succeeded, failed (with the reason)
    /// otherwise. `false`, and nothing recorded, when the task is not live:
    /// it has ended already.
    fn complete(&mut self, result: TaskResult, fx: &mut Effects) -> bool {
        let Some(live) = self.live.remove(result.id.get()) else {
            return false;
        };
        let mut failed_dependents = Vec::new();
        self.settle(result, live.dependents, &mut failed_dependents, fx);
        while let Some(result) = failed_dependents.pop() {
            if let Some(live) = self.live.remove(result.id.get()) {
                self.settle(result, live.dependents, &mut failed_dependents, fx);
            }
        }
        true
    }

    fn settle(
        &mut self,
        result: TaskResult,
        dependents: Vec<TaskId>,
        failed_dependents: &mut Vec<TaskResult>,
        fx: &mut Effects,
    ) {
        if result.is_success() {
            for dependent in dependents {
                let ready = self.waiting.get_mut(&dependent).is_some_and(|w| {
                    w.remaining -= 1;
                    w.remaining == 0
                });
                if ready {
                    if let Some(waiting) = self.waiting.remove(&dependent) {
                        self.enqueue(waiting.task, fx);
                    }
                }
            }
        } else if !dependents.is_empty() {
            let reason = dependency_failure(result.id, result.status, result.error());
            for dependent in dependents {
                if self.waiting.remove(&dependent).is_some() {
                    failed_dependents.push(TaskResult::failed(
                        dependent,
                        TaskStatus::Failed,
                        reason.clone(),
                        0,
                    ));
                }
            }
        }
        self.record(result, fx);
    }

    fn record(&mut self, result: TaskResult, fx: &mut Effects) {
        let totals = &mut self.totals;
        match result.status {
            TaskStatus::Succeeded => totals.succeeded += 1,
            TaskStatus::Failed => totals.failed += 1,
            TaskStatus::Cancelled => totals.cancelled += 1,
            TaskStatus::TimedOut => totals.timed_out += 1,
            TaskStatus::Queued | TaskStatus::Running => {}
        }
        if matches!(result.status, TaskStatus::Failed | TaskStatus::TimedOut) {
            fx.events.push(Event::TaskDeadLettered {
                task: result.id,
                reason: result.error().unwrap_or_default().to_owned(),
            });
        }
        self.unpublished.push(result);
    }

    /// Publishes the results recorded so far. Every operation that can
    /// finish a task calls it before the distributor's lock is released.
    pub(crate) fn publish(&mut self) {
        self.publish_and_record(true);
    }

    /// [`publish`](Self::publish), sending the recorder the evicted ids and,
    /// when `results_too`, the results (restored results are on disk
    /// already, but their evictions are not).
    pub(super) fn publish_and_record(&mut self, results_too: bool) {
        let recorded = match &self.recorder {
            Some(_) if results_too && self.recording && !self.unpublished.is_empty() => {
                self.unpublished.clone()
            }
            _ => Vec::new(),
        };
        let evicted = self.results.publish(&mut self.unpublished);
        if let Some(recorder) = self.recorder.as_ref().filter(|_| self.recording) {
            if !recorded.is_empty() || !evicted.is_empty() {
                // Refused only once the recorder has stopped, after
                // shutdown, when no task finishes any more.
                let _ = recorder.send(Recorded::Finished {
                    results: recorded,
                    evicted,
                });
            }
        }
    }

    /// The status and error of a finished task, published or not.
    fn outcome(&self, id: TaskId) -> Option<(TaskStatus, Option<String>)> {
        self.unpublished
            .iter()
            .find(|r| r.id == id)
            .map(|r| (r.status, r.error().map(str::to_owned)))
            .or_else(|| self.results.outcome(id))
    }

    /// Whether `id` was submitted and has not finished.
    pub(crate) fn is_live(&self, id: TaskId) -> bool {
        self.live.contains(id.get())
    }

    /// Whether `id` was ever assigned by this distributor.
    pub(crate) fn was_assigned(&self, id: TaskId) -> bool {
        id.get() != 0 && id.get() < self.next_id
    }

    /// Cancels a task that has not started. `Ok(false)` when it has started
    /// or finished.
    pub(crate) fn cancel(&mut self, id: TaskId, reason: &str, fx: &mut Effects) -> Result<bool> {
        if !self.live.contains(id.get()) {
            return if self.was_assigned(id) {
                // Finished (or its result evicted): too late to cancel.
                Ok(false)
            } else {
                Err(Error::NotFound {
                    what: Missing::Task(id),
                })
            };
        }
        let removed = self.waiting.remove(&id).is_some()
            || self.remove_queued(id)
            || self.specs.iter().flat_map(|s| &s.agents).any(|agent| {
                let mut batch = agent.batch.lock();
                let position = batch.tasks.iter().position(|t| t.id == id);
                position.and_then(|p| batch.tasks.remove(p)).is_some()
            });
        if removed {
            self.complete(
                TaskResult::failed(id, TaskStatus::Cancelled, reason.to_owned(), 0),
                fx,
            );
            self.publish();
        }
        Ok(removed)
    }

    fn remove_queued(&mut self, id: TaskId) -> bool {
        for lane in &mut self.lanes {
            for (rank, queue) in lane.queues.iter_mut().enumerate() {
                if let Some(position) = queue.iter().position(|t| t.id == id) {
                    queue.remove(position);
                    self.queued[rank] -= 1;
                    return true;
                }
            }
        }
        false
    }

    /// Stops accepting and cancels every task that has not started: queued,
    /// waiting, and handed out but not begun.
    pub(crate) fn close(&mut self, fx: &mut Effects) {
        self.accepting = false;
        // The tasks cancelled here stay recorded as accepted, so the next
        // leader (or the next start over the same state directory) runs
        // them; the results of tasks still running are recorded again below.
        let recording = mem::replace(&mut self.recording, false);
        let reason = "cancelled: the orchestrator shut down";
        let mut unstarted: Vec<TaskId> = Vec::new();
        for lane in &mut self.lanes {
            for queue in &mut lane.queues {
                unstarted.extend(queue.drain(..).map(|t| t.id));
            }
        }
        self.queued = [0; 4];
        for agent in self.specs.iter().flat_map(|s| &s.agents) {
            let mut batch = agent.batch.lock();
            unstarted.extend(batch.tasks.drain(..).map(|t| t.id));
            if let Some(held) = batch.counted.take() {
                self.batched[held.rank()] -= 1;
            }
        }
        unstarted.extend(self.waiting.drain().map(|(id, _)| id));
        unstarted.sort_unstable();
        for id in unstarted {
            self.complete(
                TaskResult::failed(id, TaskStatus::Cancelled, reason.to_owned(), 0),
                fx,
            );
        }
        self.publish();
        self.recording = recording;
    }
}

fn dependency_failure(dependency: TaskId, status: TaskStatus, error: Option<&str>) -> String {
    let how = match status {
        TaskStatus::Cancelled => "was cancelled",
        TaskStatus::TimedOut => "timed out",
        _ => "failed",
    };
    match error {
        Some(error) => format!("dependency {dependency} {how}: {error}"),
        None => format!("dependency {dependency} {how}"),
    }
}

#[cfg(test)]
mod test;
