//! An orchestrator over a state directory: durable task state, and what
//! happens when this instance becomes or stops being the leader.
//!
//! # Layout
//!
//! * `<dir>/election/`: the [`LeaderElection`](crate::LeaderElection)
//!   directory;
//! * `<dir>/memory.snapshot`: the agents' [`SharedMemory`], journaled;
//! * `<dir>/tasks.snapshot`: a second, internal journaled store holding one
//!   record per accepted task not yet finished (`t/<id>`) and one per
//!   finished result (`r/<id>`).
//!
//! # Protocol
//!
//! * **Submit.** The leader assigns ids under the distributor's lock, then,
//!   with the lock released, writes every task record in one batch (one
//!   group-committed fsync for the whole batch), confirms with the election
//!   that it still leads, and only then queues the tasks. A task whose id
//!   `submit` returned is therefore on disk under the leader's epoch.
//! * **Finish.** Every published result is sent to the recorder thread,
//!   which writes the result and deletes the task record, many reports per
//!   fsync, off the distributor's lock. A crash before that write means the
//!   task runs again under the next leader. Every 100,000 records the
//!   recorder folds the task journal into a snapshot, so it stays bounded.
//! * **Takeover.** Followers keep no store open (opening would fold and
//!   delete the leader's live journals). On `Elected` the new leader opens
//!   both stores (loading the snapshot and replaying the old leader's
//!   journals), *then* fences them with its epoch (so the old leader's
//!   later journal records are skipped at the next open), and re-queues
//!   every recorded task without a result, counting the takeover as an
//!   attempt. Fencing before opening would write this follower's empty
//!   view over the old leader's state.
//! * **Demotion.** A deposed leader stops accepting, drops its unstarted
//!   tasks, stops recording, and swaps both stores for empty in-memory ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::Receiver;

use super::Shared;
use crate::distributor::{Effects, ResultRecord, Task, TaskRecord, TaskResult};
use crate::election::{ElectionEvent, ElectionHandle};
use crate::error::Result;
use crate::ids::TaskId;
use crate::memory::SharedMemory;

const TASK_PREFIX: &str = "t/";
/// After this many records the recorder folds the task journal into a
/// snapshot, so a long-running leader's journal stays bounded.
const COMPACT_EVERY: usize = 100_000;
const RESULT_PREFIX: &str = "r/";

/// What the distributor sends the recorder.
pub(crate) enum Recorded {
    /// Results just published, and results just evicted.
    Finished {
        results: Vec<TaskResult>,
        evicted: Vec<TaskId>,
    },
    /// Write what came before, then end: the orchestrator shuts down.
    Stop,
}

/// The files of a state directory and the durable task store.
pub(crate) struct StateDir {
    pub(crate) root: PathBuf,
    pub(crate) tasks: SharedMemory,
}

fn task_key(id: TaskId) -> String {
    // Zero-padded so the keys sort by id.
    format!("{TASK_PREFIX}{:020}", id.get())
}

fn result_key(id: TaskId) -> String {
    format!("{RESULT_PREFIX}{:020}", id.get())
}

impl StateDir {
    pub(crate) fn new(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
            tasks: SharedMemory::in_memory(),
        }
    }

    pub(crate) fn election_dir(&self) -> PathBuf {
        self.root.join("election")
    }

    fn memory_path(&self) -> PathBuf {
        self.root.join("memory.snapshot")
    }

    fn tasks_path(&self) -> PathBuf {
        self.root.join("tasks.snapshot")
    }

    /// Records accepted tasks (with their dependencies), durable on return.
    pub(crate) fn record_tasks(&self, tasks: &[Task]) -> Result<()> {
        let mut writes = Vec::with_capacity(tasks.len());
        for task in tasks {
            let record = task.to_record(task.dependencies());
            writes.push((task_key(task.id()), Some(postcard::to_stdvec(&record)?)));
        }
        self.tasks.write_batch(writes)
    }

    /// Records finished results (removing their task records) and forgets
    /// evicted ones, durable on return.
    fn record_finished(&self, results: &[TaskResult], evicted: &[TaskId]) -> Result<()> {
        let mut writes = Vec::with_capacity(results.len() * 2 + evicted.len());
        for result in results {
            let record = ResultRecord::from(result);
            writes.push((result_key(result.id()), Some(postcard::to_stdvec(&record)?)));
            writes.push((task_key(result.id()), None));
        }
        writes.extend(evicted.iter().map(|&id| (result_key(id), None)));
        self.tasks.write_batch(writes)
    }

    /// Opens both stores from disk and fences them with `epoch`, then reads
    /// the task store: finished results, and the accepted tasks without a
    /// result (in id order, each counted as one more attempt, and recorded
    /// so).
    fn load(&self, memory: &SharedMemory, epoch: u64) -> Result<(Vec<TaskResult>, Vec<Task>)> {
        // Open first, then fence: see the module documentation.
        memory.reopen(&self.memory_path())?;
        memory.fence(epoch)?;
        self.tasks.reopen(&self.tasks_path())?;
        self.tasks.fence(epoch)?;
        let mut results = Vec::new();
        let mut records = Vec::new();
        for (key, bytes) in self.tasks.entries()? {
            if key.starts_with(RESULT_PREFIX) {
                results.push(TaskResult::from(postcard::from_bytes::<ResultRecord>(
                    &bytes,
                )?));
            } else if key.starts_with(TASK_PREFIX) {
                records.push(postcard::from_bytes::<TaskRecord>(&bytes)?);
            }
        }
        results.sort_unstable_by_key(TaskResult::id);
        let finished = |id: TaskId| results.binary_search_by_key(&id, TaskResult::id).is_ok();
        // A task record beside its result is left from a crash between the
        // two writes of one batch: the task finished.
        let (stale, mut records): (Vec<_>, Vec<_>) =
            records.into_iter().partition(|r| finished(r.id()));
        records.sort_unstable_by_key(TaskRecord::id);
        let mut writes = stale
            .iter()
            .map(|r| (task_key(r.id()), None))
            .collect::<Vec<_>>();
        for record in &mut records {
            record.count_takeover();
            writes.push((task_key(record.id()), Some(postcard::to_stdvec(&*record)?)));
        }
        self.tasks.write_batch(writes)?;
        Ok((
            results,
            records.into_iter().map(Task::from_record).collect(),
        ))
    }
}

/// Writes what the distributor sends, batching whatever has queued up.
pub(crate) fn spawn_recorder(
    shared: Arc<Shared>,
    inbox: Receiver<Recorded>,
) -> Result<JoinHandle<()>> {
    let thread = thread::Builder::new()
        .name("agentry-recorder".into())
        .spawn(move || {
            let Some(state) = shared.state.as_ref() else {
                return;
            };
            let mut results = Vec::new();
            let mut evicted = Vec::new();
            let mut since_compaction = 0;
            let mut stop = false;
            while !stop {
                let Ok(first) = inbox.recv() else { return };
                for message in std::iter::once(first).chain(inbox.try_iter()) {
                    match message {
                        Recorded::Finished {
                            results: r,
                            evicted: e,
                        } => {
                            results.extend(r);
                            evicted.extend(e);
                        }
                        Recorded::Stop => stop = true,
                    }
                }
                if let Err(error) = state.record_finished(&results, &evicted) {
                    // The tasks stay recorded as accepted: a later leader
                    // runs them again.
                    tracing::error!(%error, results = results.len(), "recording results failed");
                }
                since_compaction += results.len() * 2 + evicted.len();
                if since_compaction >= COMPACT_EVERY {
                    since_compaction = 0;
                    // A snapshot folds the journal generations it covers and
                    // deletes them; a failure leaves them for the next try.
                    if let Err(error) = state.tasks.persist() {
                        tracing::warn!(%error, "compacting the task journal failed");
                    }
                }
                results.clear();
                evicted.clear();
            }
        })?;
    Ok(thread)
}

/// Follows the election: takes over on `Elected`, steps down on `Demoted`.
/// Ends once `stop` disconnects, after handling the events already sent
/// (the `Demoted` of a resignation at shutdown among them).
pub(crate) fn spawn_leadership(
    shared: Arc<Shared>,
    election: Arc<ElectionHandle>,
    stop: Receiver<()>,
) -> Result<JoinHandle<()>> {
    let thread = thread::Builder::new()
        .name("agentry-leadership".into())
        .spawn(move || {
            let handle = |event| match event {
                ElectionEvent::Elected { epoch } => take_over(&shared, epoch),
                ElectionEvent::Demoted { epoch } => step_down(&shared, epoch),
                ElectionEvent::LeaderChanged { .. } => {}
            };
            loop {
                crossbeam_channel::select! {
                    recv(election.events()) -> event => match event {
                        Ok(event) => handle(event),
                        Err(_) => return,
                    },
                    recv(stop) -> _ => {
                        election.events().try_iter().for_each(handle);
                        return;
                    }
                }
            }
        })?;
    Ok(thread)
}

fn take_over(shared: &Shared, epoch: u64) {
    let Some(state) = shared.state.as_ref() else {
        return;
    };
    let (finished, accepted) = match state.load(&shared.memory, epoch) {
        Ok(loaded) => loaded,
        Err(error) => {
            // Not dispatching is safe: submits keep being refused, and a
            // later election tries again.
            tracing::error!(%error, epoch, "takeover failed: not dispatching");
            return;
        }
    };
    tracing::info!(
        epoch,
        finished = finished.len(),
        requeued = accepted.len(),
        "elected: state loaded"
    );
    let mut fx = Effects::default();
    shared
        .distributor
        .lock()
        .restore(finished, accepted, &mut fx);
    shared.apply(&mut fx);
}

fn step_down(shared: &Shared, epoch: u64) {
    let Some(state) = shared.state.as_ref() else {
        return;
    };
    shared.distributor.lock().abandon();
    shared.memory.detach();
    state.tasks.detach();
    tracing::info!(epoch, "demoted: stopped dispatching");
}
