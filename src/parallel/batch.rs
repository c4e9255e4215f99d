//! Fan-out/fan-in from the caller: submit a batch, collect its results in
//! input order within one deadline.

use std::time::{Duration, Instant};

use crate::distributor::{Task, TaskResult};
use crate::error::{Error, Result};
use crate::ids::TaskId;
use crate::orchestrator::Orchestrator;

/// Submits `tasks` together and waits at most `timeout`, for the whole
/// batch, for their results, which come back in the order of `tasks`.
///
/// When the deadline passes first, the outcome holds the results that were
/// in by then and `None` for the others, whose tasks keep running (cancel
/// them with [`Orchestrator::cancel`] on [`BatchOutcome::unfinished`] if
/// they are no longer wanted).
///
/// ```
/// use agentry::{AgentContext, Orchestrator, Output, Role, Task, TaskError, run_batch};
/// use std::time::Duration;
///
/// let orchestrator = Orchestrator::builder()
///     .agents(Role::Researcher, 3, || |task: &Task, _: &AgentContext| -> Result<Output, TaskError> {
///         let n: u64 = task.input()?;
///         Ok(Output::encode(&(n * n))?)
///     })
///     .build()?;
/// let tasks = (1..=5u64).map(|n| Task::new("square").with_input(&n)).collect::<Result<Vec<_>, _>>()?;
/// let outcome = run_batch(&orchestrator, tasks, Duration::from_secs(10))?;
/// assert!(outcome.is_complete());
/// let squares = outcome.outputs::<u64>()?;
/// assert_eq!(squares, [Some(1), Some(4), Some(9), Some(16), Some(25)]);
/// # Ok::<(), agentry::Error>(())
/// ```
///
/// # Errors
/// As [`Orchestrator::submit_batch`]: when any task is refused, none is
/// submitted. Running out of time is not an error.
pub fn run_batch(
    orchestrator: &Orchestrator,
    tasks: impl IntoIterator<Item = Task>,
    timeout: Duration,
) -> Result<BatchOutcome> {
    let deadline = crate::clock::deadline_after(timeout);
    let ids = orchestrator.submit_batch(tasks)?;
    let mut results = Vec::with_capacity(ids.len());
    for &id in &ids {
        // Waiting in input order costs nothing extra: the batch is done only
        // when its slowest task is, and each wait returns at once for a task
        // that finished while an earlier one was awaited.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let result = match orchestrator.wait(id, remaining) {
            Ok(result) => Some(result),
            Err(Error::Timeout) => orchestrator.result(id),
            Err(other) => return Err(other),
        };
        results.push(result);
    }
    Ok(BatchOutcome { ids, results })
}

/// The results of [`run_batch`], in the order the tasks were given.
#[derive(Clone, Debug)]
pub struct BatchOutcome {
    ids: Vec<TaskId>,
    results: Vec<Option<TaskResult>>,
}

impl BatchOutcome {
    /// The tasks' ids, in input order.
    pub fn ids(&self) -> &[TaskId] {
        &self.ids
    }

    /// Per task, in input order, its result, or `None` when it had not
    /// finished at the deadline.
    pub fn results(&self) -> &[Option<TaskResult>] {
        &self.results
    }

    /// Whether every task finished (successfully or not) in time.
    pub fn is_complete(&self) -> bool {
        self.results.iter().all(Option::is_some)
    }

    /// How many tasks finished in time.
    pub fn finished(&self) -> usize {
        self.results.iter().filter(|r| r.is_some()).count()
    }

    /// The ids of the tasks that had not finished at the deadline.
    pub fn unfinished(&self) -> Vec<TaskId> {
        self.ids
            .iter()
            .zip(&self.results)
            .filter(|(_, r)| r.is_none())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Per task, in input order, its decoded output, or `None` when it did
    /// not finish in time or did not succeed.
    ///
    /// # Errors
    /// [`Error::Codec`] when a successful task's output is not a `T`.
    pub fn outputs<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<Option<T>>> {
        self.results
            .iter()
            .map(|r| match r {
                Some(result) if result.is_success() => result.output().map(Some),
                _ => Ok(None),
            })
            .collect()
    }

    /// The results, in input order.
    pub fn into_results(self) -> Vec<Option<TaskResult>> {
        self.results
    }
}
