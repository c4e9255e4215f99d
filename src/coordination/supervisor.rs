//! The supervisor thread: spawns and replaces agents, enforces task
//! timeouts, detects hung agents, carries out scaling decisions, and stops
//! everything at shutdown. See the module documentation of `coordination`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::HealthConfig;
use crate::agent::AgentShared;
use crate::agent::runner::{self, Exit};
use crate::broker::Control;
use crate::distributor::Effects;
use crate::error::Result;
use crate::ids::{AgentId, TaskId};
use crate::orchestrator::{Event, Factory, ORCHESTRATOR_ID, Shared};

/// What the supervisor is asked to do.
pub(crate) enum Request {
    /// End this attempt as timed out at its deadline.
    Watch(Deadline),
    /// Auto-scaling decided to grow this spec.
    ScaleUp(usize),
    /// An agent thread is ending; `failed` when it panicked or ended
    /// without being asked to.
    Exited {
        agent: Arc<AgentShared>,
        failed: bool,
    },
    /// Stop every agent, wait for them until the deadline, and reply with
    /// those still running.
    Shutdown {
        deadline: Instant,
        reply: Sender<Vec<AgentId>>,
    },
}

pub(crate) struct Deadline {
    at: Instant,
    task: TaskId,
    agent: Arc<AgentShared>,
    attempt: u32,
    timeout: Duration,
}

impl Deadline {
    pub(crate) fn new(
        task: TaskId,
        agent: &Arc<AgentShared>,
        attempt: u32,
        timeout: Duration,
    ) -> Self {
        Deadline {
            at: crate::clock::deadline_after(timeout),
            task,
            agent: Arc::clone(agent),
            attempt,
            timeout,
        }
    }
}

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.task) == (other.at, other.task)
    }
}
impl Eq for Deadline {}
impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.task).cmp(&(other.at, other.task))
    }
}

/// Spawns one agent of spec `spec`: registers its mailbox, adds it to its
/// pool and starts its thread, named `agentry-<role>-<n>`. `reserved`: it
/// takes a place reserved in the pool, released if it cannot be spawned.
pub(crate) fn spawn_agent(
    shared: &Arc<Shared>,
    spec: usize,
    factory: &Factory,
    reserved: bool,
) -> Result<(Arc<AgentShared>, JoinHandle<()>)> {
    let (id, role) = {
        let distributor = shared.distributor.lock();
        (shared.next_agent_id(), distributor.pool(spec).role.clone())
    };
    let agent = Arc::new(AgentShared::new(id, role.clone(), spec));
    let mailbox = match shared.broker.register_with_role(id, role.clone()) {
        Ok(mailbox) => mailbox,
        Err(error) => {
            if reserved {
                shared.distributor.lock().release_reserved(spec);
            }
            return Err(error);
        }
    };
    shared
        .distributor
        .lock()
        .add_agent(Arc::clone(&agent), reserved);
    let thread = {
        let (agent, shared, factory) =
            (Arc::clone(&agent), Arc::clone(shared), Arc::clone(factory));
        thread::Builder::new()
            .name(format!("agentry-{role}-{}", shared.next_name(&role)))
            .spawn(move || {
                shared.emit(Event::AgentSpawned { agent: id, role });
                let exit = catch_unwind(AssertUnwindSafe(|| {
                    runner::run(factory(), mailbox, Arc::clone(&agent), Arc::clone(&shared))
                }));
                let failed = !matches!(exit, Ok(Exit::Stopped));
                shared.emit(Event::AgentStopped { agent: id });
                shared.request(Request::Exited { agent, failed });
            })
    };
    match thread {
        Ok(handle) => Ok((agent, handle)),
        Err(error) => {
            let mut fx = Effects::default();
            shared.distributor.lock().retire(&agent, &mut fx);
            shared.apply(&mut fx);
            let _ = shared.broker.unregister(id);
            Err(error.into())
        }
    }
}

/// Where the supervisor waits until it has something to do, and how its
/// thread is started.
///
/// Most of what the supervisor does follows a request (a deadline to watch,
/// a scale-up, an agent thread ending, shutdown); the rest, the periodic
/// health check, looks only at agents running a task or handling a message.
/// So its thread starts at the first request, or the first task or message
/// an agent takes up, not in `build`:
/// getting the agents running does not wait for a thread with nothing to do
/// yet, and an orchestrator that is never given work never starts it
/// (its shutdown then runs in the caller's thread).
pub(crate) struct SupervisorSlot {
    requests: Sender<Request>,
    /// Set once the thread runs, or once it never will.
    started: AtomicBool,
    state: Mutex<SlotState>,
}

enum SlotState {
    /// The agents are being spawned; requests wait in the inbox.
    Building,
    /// Ready to start. The cell is shared with the thread being started, so
    /// that a thread the system refuses to start loses nothing.
    Ready(Arc<Mutex<Option<Supervisor>>>),
    Running(JoinHandle<()>),
    /// Shut down, or taken to be shut down.
    Ended,
}

/// How to shut the supervisor down.
pub(crate) enum Stopping {
    /// Its thread runs: ask it, then join it.
    Thread(JoinHandle<()>),
    /// It never started: the caller runs its shutdown.
    Inline(Box<Supervisor>),
}

impl SupervisorSlot {
    pub(crate) fn new(requests: Sender<Request>) -> SupervisorSlot {
        SupervisorSlot {
            requests,
            started: AtomicBool::new(false),
            state: Mutex::new(SlotState::Building),
        }
    }

    pub(crate) fn request(&self, request: Request) {
        // Refused only once the supervisor has ended, at shutdown, when
        // there is nothing left to supervise.
        let _ = self.requests.send(request);
        self.start();
    }

    /// Starts the supervisor's thread unless it runs already: one atomic
    /// load once it does.
    pub(crate) fn start(&self) {
        if !self.started.load(Ordering::Acquire) {
            self.start_thread();
        }
    }

    #[cold]
    fn start_thread(&self) {
        let mut state = self.state.lock();
        let SlotState::Ready(cell) = &*state else {
            return;
        };
        let cell = Arc::clone(cell);
        let spawned = thread::Builder::new()
            .name("agentry-supervisor".into())
            .spawn(move || {
                let supervisor = cell.lock().take();
                if let Some(mut supervisor) = supervisor {
                    supervisor.run();
                }
            });
        match spawned {
            Ok(handle) => {
                *state = SlotState::Running(handle);
                self.started.store(true, Ordering::Release);
            }
            // Requests keep waiting in the inbox; the next one tries again.
            Err(error) => tracing::error!(%error, "could not start the supervisor thread"),
        }
    }

    /// Hands over the supervisor once the agents of `build` are spawned, and
    /// starts it if requests came meanwhile (an agent whose factory
    /// panicked, say).
    pub(crate) fn install(&self, supervisor: Supervisor) {
        *self.state.lock() = SlotState::Ready(Arc::new(Mutex::new(Some(supervisor))));
        if !self.requests.is_empty() {
            self.start();
        }
    }

    /// Takes the supervisor to shut it down; `None` if there is none. It is
    /// never started after this.
    pub(crate) fn take(&self) -> Option<Stopping> {
        let mut state = self.state.lock();
        self.started.store(true, Ordering::Release);
        match std::mem::replace(&mut *state, SlotState::Ended) {
            SlotState::Ready(cell) => cell.lock().take().map(|s| Stopping::Inline(Box::new(s))),
            SlotState::Running(handle) => Some(Stopping::Thread(handle)),
            SlotState::Building | SlotState::Ended => None,
        }
    }
}

/// The supervisor thread's state.
pub(crate) struct Supervisor {
    shared: Arc<Shared>,
    inbox: Receiver<Request>,
    factories: Vec<Factory>,
    health: HealthConfig,
    threads: HashMap<AgentId, (Arc<AgentShared>, JoinHandle<()>)>,
    /// Threads of hung agents, detached from their pools.
    hung: Vec<(AgentId, JoinHandle<()>)>,
    restarts: Vec<VecDeque<Instant>>,
    deadlines: BinaryHeap<Reverse<Deadline>>,
    next_check: Instant,
    /// With priority aging on: how often queued tasks are aged, and when
    /// next.
    aging: Option<(Duration, Instant)>,
}

impl Supervisor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        inbox: Receiver<Request>,
        factories: Vec<Factory>,
        health: HealthConfig,
        agents: Vec<(Arc<AgentShared>, JoinHandle<()>)>,
    ) -> Supervisor {
        let restarts = vec![VecDeque::new(); factories.len()];
        let aging = shared
            .distributor
            .lock()
            .aging_period()
            .map(|period| (period, Instant::now() + period));
        Supervisor {
            shared,
            inbox,
            factories,
            health,
            threads: agents.into_iter().map(|(a, h)| (a.id, (a, h))).collect(),
            hung: Vec::new(),
            restarts,
            deadlines: BinaryHeap::new(),
            next_check: crate::clock::deadline_after(health.check_interval),
            aging,
        }
    }

    fn run(&mut self) {
        loop {
            let next_aging = self.aging.map_or(self.next_check, |(_, at)| at);
            let wake_at = self
                .deadlines
                .peek()
                .map_or(self.next_check, |Reverse(d)| d.at.min(self.next_check))
                .min(next_aging);
            match self.inbox.recv_deadline(wake_at) {
                Ok(Request::Watch(deadline)) => self.deadlines.push(Reverse(deadline)),
                Ok(Request::ScaleUp(spec)) => self.scale_up(spec),
                Ok(Request::Exited { agent, failed }) => self.exited(&agent, failed),
                Ok(Request::Shutdown { deadline, reply }) => {
                    let stuck = self.shutdown(deadline);
                    let _ = reply.send(stuck);
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.time_out_due();
                    self.age_queued();
                    if Instant::now() >= self.next_check {
                        self.check_health();
                        self.next_check = crate::clock::deadline_after(self.health.check_interval);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn time_out_due(&mut self) {
        let now = Instant::now();
        let mut fx = Effects::default();
        {
            let mut distributor = self.shared.distributor.lock();
            while self.deadlines.peek().is_some_and(|Reverse(d)| d.at <= now) {
                if let Some(Reverse(d)) = self.deadlines.pop() {
                    distributor.time_out(d.task, &d.agent, d.attempt, d.timeout, &mut fx);
                }
            }
        }
        self.shared.apply(&mut fx);
    }

    /// Ages the queued tasks when it is time to.
    fn age_queued(&mut self) {
        let Some((period, at)) = self.aging else {
            return;
        };
        let now = Instant::now();
        if now < at {
            return;
        }
        self.aging = Some((period, now + period));
        let mut fx = Effects::default();
        let moved = self.shared.distributor.lock().age(now, &mut fx);
        self.shared.apply(&mut fx);
        if moved > 0 {
            tracing::debug!(moved, "queued tasks aged one priority level");
        }
    }

    /// The periodic check: hung agents, hung threads that ended, and the
    /// scaling policy (idle pools shrink even when no task moves).
    fn check_health(&mut self) {
        let mut fx = Effects::default();
        let mut detached = Vec::new();
        {
            let mut distributor = self.shared.distributor.lock();
            let now = self.shared.clock_at(Instant::now());
            for hung in distributor.hung_agents(now, self.health.hang_timeout) {
                let agent = hung.agent;
                if !distributor.retire_for_replacement(&agent, &mut fx) {
                    continue;
                }
                agent.mark_error();
                let reason = format!("{} hung: no heartbeat for {:?}", agent.id, hung.silent_for);
                tracing::warn!(agent = %agent.id, silent_for = ?hung.silent_for, "agent hung");
                // Read once, after the retire: a task the agent finished
                // meanwhile counts as done and is not named.
                let task = distributor.recover_in_flight(&agent, &reason, &mut fx);
                fx.events.push(Event::AgentHung {
                    agent: agent.id,
                    task,
                    silent_for: hung.silent_for,
                });
                detached.push(agent);
            }
            distributor.autoscale(Instant::now(), &mut fx);
        }
        self.shared.apply(&mut fx);
        for agent in detached {
            if let Some((_, handle)) = self.threads.remove(&agent.id) {
                self.hung.push((agent.id, handle));
            }
            let _ = self.shared.broker.unregister(agent.id);
            self.replace(&agent);
        }
        let (ended, alive): (Vec<_>, Vec<_>) =
            self.hung.drain(..).partition(|(_, h)| h.is_finished());
        for (_, handle) in ended {
            let _ = handle.join();
        }
        self.hung = alive;
        self.shared.set_hung_threads(self.hung.len());
    }

    fn exited(&mut self, agent: &Arc<AgentShared>, failed: bool) {
        let Some((_, handle)) = self.threads.remove(&agent.id) else {
            // A hung agent's thread, detached already: reaped at the next
            // check.
            return;
        };
        // The thread sent this as its last act: joining it cannot wait long.
        let _ = handle.join();
        let _ = self.shared.broker.unregister(agent.id);
        let asked_to_stop = agent.stop.load(Ordering::Relaxed);
        if !failed && asked_to_stop {
            return;
        }
        let reason = if failed {
            format!("{} failed", agent.id)
        } else {
            format!("{} ended unexpectedly", agent.id)
        };
        tracing::warn!(agent = %agent.id, %reason, "agent failed");
        let mut fx = Effects::default();
        {
            let mut distributor = self.shared.distributor.lock();
            if !distributor.retire_for_replacement(agent, &mut fx) {
                // Taken out already (scaled down, or shut down): nothing to
                // replace.
                return;
            }
            agent.mark_error();
            distributor.recover_in_flight(agent, &reason, &mut fx);
        }
        self.shared.apply(&mut fx);
        self.replace(agent);
    }

    /// Spawns a replacement for `failed`, within the restart limit; past it,
    /// fails the spec.
    fn replace(&mut self, failed: &Arc<AgentShared>) {
        let spec = failed.spec;
        let now = Instant::now();
        let window = &mut self.restarts[spec];
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.health.restart_window)
        {
            window.pop_front();
        }
        if window.len() >= self.health.max_restarts as usize {
            self.shared.distributor.lock().release_reserved(spec);
            self.fail_spec(spec);
            return;
        }
        window.push_back(now);
        self.shared.distributor.lock().note_restart(spec);
        match spawn_agent(&self.shared, spec, &self.factories[spec], true) {
            Ok((agent, handle)) => {
                tracing::info!(failed = %failed.id, replacement = %agent.id, "agent replaced");
                self.shared.emit(Event::AgentReplaced {
                    failed: failed.id,
                    replacement: agent.id,
                    role: agent.role.clone(),
                });
                self.threads.insert(agent.id, (agent, handle));
            }
            Err(error) => {
                tracing::error!(%error, "could not spawn a replacement agent");
            }
        }
    }

    fn fail_spec(&mut self, spec: usize) {
        let mut fx = Effects::default();
        let event = {
            let mut distributor = self.shared.distributor.lock();
            if distributor.pool(spec).failed {
                return;
            }
            distributor.fail_spec(spec, &mut fx);
            let pool = distributor.pool(spec);
            Event::RestartLimitReached {
                role: pool.role.clone(),
                capabilities: pool.capabilities.clone(),
                restarts: self.health.max_restarts,
                within: self.health.restart_window,
            }
        };
        tracing::error!(?event, "restart limit reached: agent spec failed");
        fx.events.push(event);
        self.shared.apply(&mut fx);
    }

    fn scale_up(&mut self, spec: usize) {
        if self.shared.distributor.lock().pool(spec).failed {
            self.shared.distributor.lock().release_reserved(spec);
            return;
        }
        match spawn_agent(&self.shared, spec, &self.factories[spec], true) {
            Ok((agent, handle)) => {
                let pool_size = self.shared.distributor.lock().pool(spec).agents.len();
                self.shared.emit(Event::ScaledUp {
                    agent: agent.id,
                    role: agent.role.clone(),
                    pool_size,
                });
                self.threads.insert(agent.id, (agent, handle));
            }
            Err(error) => {
                tracing::error!(%error, "could not spawn an agent to scale up");
            }
        }
    }

    /// Stops every agent and waits for them until `deadline`; returns those
    /// still running then.
    pub(crate) fn shutdown(&mut self, deadline: Instant) -> Vec<AgentId> {
        for (agent, _) in self.threads.values() {
            agent.stop.store(true, Ordering::Relaxed);
            let _ = self
                .shared
                .broker
                .send_control(ORCHESTRATOR_ID, agent.id, Control::Stop);
        }
        while !self.threads.is_empty() {
            match self.inbox.recv_deadline(deadline) {
                Ok(Request::Exited { agent, .. }) => {
                    if let Some((_, handle)) = self.threads.remove(&agent.id) {
                        let _ = handle.join();
                    }
                    let _ = self.shared.broker.unregister(agent.id);
                }
                Ok(Request::ScaleUp(spec)) => self.shared.distributor.lock().release_reserved(spec),
                Ok(Request::Watch(_) | Request::Shutdown { .. }) => {}
                Err(_) => break,
            }
        }
        let stuck: Vec<AgentId> = self.threads.keys().copied().collect();
        for id in &stuck {
            let _ = self.shared.broker.unregister(*id);
        }
        stuck
    }
}
