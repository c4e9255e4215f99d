//! The monitor thread: ends tasks that run past their timeout.
//!
//! Agents announce a deadline when they start a task that has a timeout; the
//! monitor keeps the deadlines in a heap and sleeps until the earliest one
//! (or the next announcement). At a deadline it asks the distributor to time
//! the task out, which happens only if that same attempt is still running.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::Shared;
use crate::agent::AgentShared;
use crate::distributor::Effects;
use crate::error::Result;
use crate::ids::TaskId;

enum Request {
    Watch(Deadline),
    Stop,
}

struct Deadline {
    at: Instant,
    task: TaskId,
    agent: Arc<AgentShared>,
    attempt: u32,
    timeout: Duration,
}

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.task == other.task
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

/// The handle agents use to announce deadlines.
pub(crate) struct Monitor {
    requests: Sender<Request>,
}

pub(crate) struct MonitorInbox(Receiver<Request>);

impl Monitor {
    pub(crate) fn new() -> (Monitor, MonitorInbox) {
        let (requests, inbox) = crossbeam_channel::unbounded();
        (Monitor { requests }, MonitorInbox(inbox))
    }

    pub(crate) fn watch(
        &self,
        task: TaskId,
        agent: &Arc<AgentShared>,
        attempt: u32,
        timeout: Duration,
    ) {
        let deadline = Deadline {
            at: Instant::now() + timeout,
            task,
            agent: Arc::clone(agent),
            attempt,
            timeout,
        };
        let _ = self.requests.send(Request::Watch(deadline));
    }

    pub(crate) fn stop(&self) {
        let _ = self.requests.send(Request::Stop);
    }

    pub(crate) fn spawn(shared: Arc<Shared>, inbox: MonitorInbox) -> Result<JoinHandle<()>> {
        Ok(thread::Builder::new()
            .name("agentry-monitor".into())
            .spawn(move || run(&shared, &inbox.0))?)
    }
}

fn run(shared: &Shared, inbox: &Receiver<Request>) {
    let mut deadlines: BinaryHeap<Reverse<Deadline>> = BinaryHeap::new();
    loop {
        let request = match deadlines.peek() {
            Some(Reverse(next)) => match inbox.recv_deadline(next.at) {
                Ok(request) => Some(request),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            },
            None => match inbox.recv() {
                Ok(request) => Some(request),
                Err(_) => return,
            },
        };
        match request {
            Some(Request::Watch(deadline)) => deadlines.push(Reverse(deadline)),
            Some(Request::Stop) => return,
            None => {
                let now = Instant::now();
                let mut fx = Effects::default();
                {
                    let mut distributor = shared.distributor.lock();
                    while deadlines.peek().is_some_and(|Reverse(d)| d.at <= now) {
                        if let Some(Reverse(d)) = deadlines.pop() {
                            distributor.time_out(d.task, &d.agent, d.attempt, d.timeout, &mut fx);
                        }
                    }
                }
                shared.apply(&mut fx);
            }
        }
    }
}
