//! The loop each agent thread runs: take work, execute, report.
//!
//! An agent holds the distributor's lock only between tasks: once when it
//! runs out of work (report what it gathered, take its next batch), and
//! after a slow task (report at once, so results are visible promptly).
//! Quick tasks are reported together, at most [`MAX_UNREPORTED`] at a time
//! and never later than [`REPORT_WITHIN`] after the first of them finished.
//! Idle, it blocks on its mailbox: a `TaskAssignment` message wakes it, and
//! so do direct, broadcast and topic messages, handed to
//! [`Agent::on_message`]. While tasks come to idle agents back to back, the
//! one next in line is woken as its predecessor is handed a task, and polls
//! for its own: it starts without a cold wake-up.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Agent, AgentContext, AgentShared};
use crate::broker::{Control, Mailbox, Message, MessageKind};
use crate::distributor::{Distributor, Effects, Finished, Task, TaskError};
use crate::error::Error;
use crate::ids::AgentState;
use crate::orchestrator::{Event, Shared};

/// A task quicker than this is "quick": its agent takes several at once.
const QUICK: Duration = Duration::from_micros(20);
/// At most this many results wait in an agent before it reports them.
const MAX_UNREPORTED: usize = 32;
/// No result waits in an agent longer than this.
const REPORT_WITHIN: Duration = Duration::from_micros(200);
/// An idle agent wakes this often to show it is alive. Hang detection looks
/// at busy agents only, so this can be slow: a thousand idle agents then
/// cost a thousand wake-ups a second, not ten thousand.
const IDLE_BEAT: Duration = Duration::from_secs(1);

struct Runner {
    agent: Box<dyn Agent>,
    me: Arc<AgentShared>,
    shared: Arc<Shared>,
    ctx: AgentContext,
    mailbox: Mailbox,
    /// The gathered results being handed in: swapped with the batch's,
    /// so that both keep their capacity.
    reporting: Vec<Finished>,
    first_unreported: Option<Instant>,
    /// Whether a task ran since the agent was last idle.
    worked: bool,
    /// Whether the agent, last it went idle, was first in its pool's idle
    /// list: the next task for its pool would come to it.
    next_in_line: bool,
    /// Whether the last message was a wake-up for work (a task handed over,
    /// or the next one on its way).
    woken_for_work: bool,
    fx: Effects,
}

/// What a message asks of the loop.
enum Next {
    Work,
    Stop,
}

/// How an agent's loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Asked to stop (shutdown, scale-down), or taken out of its pool.
    Stopped,
    /// Panicked: the supervisor replaces it.
    Failed,
}

pub(crate) fn run(
    agent: Box<dyn Agent>,
    mailbox: Mailbox,
    me: Arc<AgentShared>,
    shared: Arc<Shared>,
) -> Exit {
    let ctx = AgentContext {
        agent: Arc::clone(&me),
        shared: Arc::clone(&shared),
    };
    let mut runner = Runner {
        agent,
        me,
        shared,
        ctx,
        mailbox,
        reporting: Vec::new(),
        first_unreported: None,
        worked: false,
        next_in_line: false,
        woken_for_work: false,
        fx: Effects::default(),
    };
    runner.me.beat(&runner.shared);
    let exit = runner.serve();
    runner.report();
    if exit == Exit::Stopped {
        runner.me.set_state(AgentState::Stopped);
    }
    tracing::debug!(agent = %runner.me.id, ?exit, "agent loop ended");
    exit
}

impl Runner {
    fn serve(&mut self) -> Exit {
        loop {
            if self.me.state() == AgentState::Error {
                return Exit::Failed;
            }
            if !self.mailbox.is_empty() {
                if let Next::Stop = self.drain_mailbox() {
                    return Exit::Stopped;
                }
            }
            let next = self.me.batch.lock().tasks.pop_front();
            match next {
                Some(task) => {
                    self.worked = true;
                    self.woken_for_work = false;
                    let (finished, ended) = self.execute(task);
                    let (gathered, more) = {
                        let mut batch = self.me.batch.lock();
                        batch.finished.push(finished);
                        (batch.finished.len(), !batch.tasks.is_empty())
                    };
                    let first = *self.first_unreported.get_or_insert(ended);
                    let due = !self.me.quick.load(Ordering::Relaxed)
                        || gathered >= MAX_UNREPORTED
                        || ended.duration_since(first) >= REPORT_WITHIN;
                    // With nothing left in the batch, the next turn of the
                    // loop reports and takes work in one round of the lock.
                    if due && more {
                        self.report();
                    }
                }
                None => {
                    if self.me.stop.load(Ordering::Relaxed) {
                        return Exit::Stopped;
                    }
                    if self.still_idle_listed() {
                        // Woken for work, it is next in line: poll for it.
                        let poll = std::mem::take(&mut self.woken_for_work);
                        if let Next::Stop = self.idle(poll) {
                            return Exit::Stopped;
                        }
                    } else if !self.report_and_take_work() {
                        // Only the agent the next task goes to polls for it.
                        let poll = std::mem::take(&mut self.worked) && self.next_in_line;
                        if let Next::Stop = self.idle(poll) {
                            return Exit::Stopped;
                        }
                    }
                }
            }
        }
    }

    /// Runs one attempt; returns its report and when it ended.
    fn execute(&mut self, mut task: Task) -> (Finished, Instant) {
        // From now on the health check has something to watch.
        self.shared.supervisor.start();
        task.attempt += 1;
        self.me.set_state(AgentState::Busy);
        let timeout = task.timeout();
        let own_timeout = timeout.map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
        self.me
            .current_timeout
            .store(own_timeout, Ordering::Relaxed);
        self.me
            .current_attempt
            .store(task.attempt, Ordering::Relaxed);
        if task.attempt < task.max_attempts {
            *self.me.in_flight.lock() = Some(task.clone());
        }
        self.me.current.store(task.id.get(), Ordering::Release);
        let started = Instant::now();
        self.me.beat_at(&self.shared, started);
        if let Some(timeout) = timeout {
            self.shared
                .watch_deadline(task.id, &self.me, task.attempt, timeout);
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| self.agent.execute(&task, &self.ctx)));
        let ended = Instant::now();
        let elapsed = ended.duration_since(started);
        self.me.current.store(0, Ordering::Release);
        self.me.beat_at(&self.shared, ended);
        if task.attempt < task.max_attempts {
            self.me.in_flight.lock().take();
        }
        let outcome = outcome.unwrap_or_else(|payload| {
            let reason = format!("agent panicked: {}", panic_message(payload.as_ref()));
            tracing::warn!(agent = %self.me.id, task = %task.id, %reason);
            self.me.mark_error();
            self.fx.events.push(Event::AgentFailed {
                agent: self.me.id,
                reason: reason.clone(),
            });
            Err(TaskError::retryable(reason))
        });
        self.me.metrics.record(elapsed, outcome.is_ok());
        self.me.quick.store(elapsed < QUICK, Ordering::Relaxed);
        let finished = Finished {
            task,
            agent: self.me.id,
            outcome,
            elapsed,
        };
        (finished, ended)
    }

    /// Reports the gathered results.
    fn report(&mut self) {
        self.first_unreported = None;
        if self.fx.events.is_empty() && self.me.batch.lock().finished.is_empty() {
            return;
        }
        {
            let shared = Arc::clone(&self.shared);
            let mut distributor = shared.distributor.lock();
            self.hand_in(&mut distributor);
        }
        self.shared.apply(&mut self.fx);
    }

    /// Hands the gathered results to the distributor, whose lock the caller
    /// holds. An agent retired as hung (then back) had the results it had
    /// gathered handed in then, and its running task recovered (run again or
    /// failed): that task's late result is ignored and counted as late.
    fn hand_in(&mut self, distributor: &mut Distributor) {
        std::mem::swap(&mut self.reporting, &mut self.me.batch.lock().finished);
        let late = if self.me.retired.load(Ordering::Relaxed) {
            self.me.recovered.load(Ordering::Relaxed)
        } else {
            0
        };
        for finished in self.reporting.drain(..) {
            if late != 0 && finished.task.id.get() == late {
                distributor.discard_late(1);
            } else {
                distributor.finish(finished, &mut self.fx);
            }
        }
        distributor.publish();
    }

    /// Reports the gathered results and takes the next work, in one round of
    /// the lock. `false` when there is no work: the agent is idle.
    fn report_and_take_work(&mut self) -> bool {
        self.first_unreported = None;
        let got_work = {
            let shared = Arc::clone(&self.shared);
            let mut distributor = shared.distributor.lock();
            self.hand_in(&mut distributor);
            let got_work = distributor.next_batch(&self.me, &mut self.fx);
            self.next_in_line = !got_work && distributor.is_next_in_line(&self.me);
            got_work
        };
        self.shared.apply(&mut self.fx);
        got_work
    }

    /// Whether the agent, woken with no work (a message, or as the one next
    /// in line: see [`Shared::apply`]), is still in the idle list with
    /// nothing to report: then it waits again without the lock. Should a
    /// task come just after this look, its wake-up message follows.
    fn still_idle_listed(&self) -> bool {
        self.me.idle_listed.load(Ordering::Relaxed)
            && self.fx.events.is_empty()
            && self.me.batch.lock().finished.is_empty()
    }

    /// Waits for mail while idle; with `poll`, polls the mailbox a moment
    /// first.
    fn idle(&mut self, poll: bool) -> Next {
        // Waking a parked thread costs more than most tasks do: the agent
        // the next task goes to (first in its pool's idle list, after work or
        // woken for it) stays awake a moment (as long as that has lately
        // paid off), so work that follows at once starts at once. The others
        // sleep at once: work rotates among idle agents, so none would come
        // to them first, and they would only take the processors from the
        // threads that have work. An agent that has not worked yet (just
        // spawned) does not poll either: it would only take the processor
        // from the threads still starting. Only one agent polls at a time.
        let mut unanswered_poll = None;
        if poll && self.shared.try_start_spinning() {
            let polled = Instant::now();
            if !self
                .shared
                .idle_spin()
                .poll(None, || !self.mailbox.is_empty())
            {
                unanswered_poll = Some(polled);
            }
            self.shared.stop_spinning();
        }
        loop {
            match self
                .mailbox
                .recv_until(crate::clock::deadline_after(IDLE_BEAT))
            {
                Ok(message) => {
                    if let Some(polled) = unanswered_poll {
                        self.shared.idle_spin().waited(polled.elapsed());
                    }
                    return self.handle(message);
                }
                Err(Error::Timeout) => {
                    self.me.beat(&self.shared);
                    // A wake-up refused by a full mailbox is never needed:
                    // a full mailbox wakes the agent by itself. This check
                    // covers a purge of the mailbox by its user.
                    if self.me.stop.load(Ordering::Relaxed)
                        || !self.me.batch.lock().tasks.is_empty()
                    {
                        return Next::Work;
                    }
                }
                Err(_) => return Next::Stop,
            }
        }
    }

    fn drain_mailbox(&mut self) -> Next {
        // An agent in error (a handler panicked, or hung and came back) is
        // being replaced: it handles no more mail.
        while self.me.state() != AgentState::Error {
            let Ok(message) = self.mailbox.try_recv() else {
                break;
            };
            if let Next::Stop = self.handle(message) {
                return Next::Stop;
            }
        }
        Next::Work
    }

    fn handle(&mut self, message: Message) -> Next {
        self.woken_for_work = message.kind() == MessageKind::TaskAssignment;
        match message.kind() {
            MessageKind::TaskAssignment => Next::Work,
            MessageKind::Control if message.body::<Control>().ok() == Some(Control::Stop) => {
                Next::Stop
            }
            MessageKind::Control => Next::Work,
            _ => {
                // A handler that never returns strands the tasks handed to
                // this agent meanwhile: the health check watches it too.
                self.shared.supervisor.start();
                self.me.beat(&self.shared);
                self.me.handling_message.store(true, Ordering::Release);
                let delivered = catch_unwind(AssertUnwindSafe(|| {
                    self.agent.on_message(message, &self.ctx)
                }));
                self.me.handling_message.store(false, Ordering::Release);
                self.me.beat(&self.shared);
                if let Err(payload) = delivered {
                    let reason = format!(
                        "agent panicked in on_message: {}",
                        panic_message(payload.as_ref())
                    );
                    tracing::warn!(agent = %self.me.id, %reason);
                    self.me.mark_error();
                    self.fx.events.push(Event::AgentFailed {
                        agent: self.me.id,
                        reason,
                    });
                }
                Next::Work
            }
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}
