//! The handle of a running plan: what the caller sees and calls.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::plan::Settings;
use super::tree::{Progress, State, StepResult, Tree};
use crate::distributor::TaskStatus;
use crate::error::{Error, Result};
use crate::ids::TaskId;
use crate::orchestrator::Orchestrator;

/// How long a wait blocks on the oldest running task before it looks at the
/// others: the orchestrator has no "wait for any of these", so a result that
/// is not the oldest is noticed at most this late.
const TICK: Duration = Duration::from_millis(5);

/// A submitted [`Plan`](super::Plan), driven by its caller.
///
/// There is no thread behind a plan: every call that reads it
/// ([`wait_timeout`](Self::wait_timeout), [`try_result`](Self::try_result),
/// [`progress`](Self::progress)) first collects the results that came in,
/// expands goals whose planners answered, and submits the steps that became
/// ready. Steps ordered with `after` on a sibling that is already running
/// are submitted at once with [`Task::after`](crate::Task::after), so the
/// orchestrator starts them without waiting for the handle; a plan whose
/// handle is not read still advances that far. Dropping the handle leaves
/// submitted tasks to finish and submits nothing more; [`cancel`](Self::cancel)
/// cancels them.
///
/// ```
/// use agentry::{AgentContext, Goal, Orchestrator, Output, Plan, Role, Step, Task, TaskError};
/// use std::time::Duration;
///
/// let orchestrator = Orchestrator::builder()
///     .agents(Role::Planner, 1, || |task: &Task, _: &AgentContext| -> Result<Output, TaskError> {
///         let goal = Goal::from_task(task)?;
///         let words: Vec<String> = goal.description().split(' ').map(str::to_owned).collect();
///         let steps = words
///             .iter()
///             .map(|w| Step::task(w.as_str(), "shout").with_role(Role::Extractor).with_input(w))
///             .collect::<Result<Vec<_>, _>>()?;
///         Ok(Goal::decomposition(&steps)?)
///     })
///     .agents(Role::Extractor, 2, || |task: &Task, _: &AgentContext| -> Result<Output, TaskError> {
///         Ok(Output::encode(&task.input::<String>()?.to_uppercase())?)
///     })
///     .build()?;
///
/// let mut handle = Plan::new(Step::goal("greet", "hello world")).submit(&orchestrator)?;
/// let tree = handle.wait_timeout(Duration::from_secs(10))?;
/// assert!(tree.is_success());
/// let shouted: Vec<String> = tree.children().iter().map(|c| c.output()).collect::<Result<_, _>>()?;
/// assert_eq!(shouted, ["HELLO", "WORLD"]);
/// assert_eq!(handle.progress().levels()[1].done, 2);
/// # Ok::<(), agentry::Error>(())
/// ```
#[derive(Debug)]
pub struct PlanHandle<'o> {
    pub(super) orchestrator: &'o Orchestrator,
    pub(super) tree: Tree,
    /// Every task of the plan not finished yet, by id (the oldest first),
    /// with the node it serves.
    pub(super) in_flight: BTreeMap<TaskId, usize>,
    pub(super) settings: Settings,
    pub(super) finished: bool,
}

impl PlanHandle<'_> {
    /// Drives the plan for at most `timeout` and returns its result tree
    /// once the root ended (successfully or not: see
    /// [`StepResult::is_success`] and [`StepResult::error`]).
    ///
    /// # Errors
    /// [`Error::Timeout`] when the root has not ended in time; the plan
    /// goes on, and another call resumes the wait.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<StepResult> {
        let deadline = crate::clock::deadline_after(timeout);
        loop {
            self.poll();
            if self.finished {
                return Ok(self.tree());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            let Some((&task, &node)) = self.in_flight.iter().next() else {
                // A checked tree always has a task in flight until its root
                // ends; failing beats waiting forever should that ever break.
                tracing::error!("plan has no task in flight and has not ended");
                self.end(0, TaskStatus::Failed, "no step can make progress".into());
                self.finished = true;
                continue;
            };
            match self.orchestrator.wait(task, left.min(TICK)) {
                Ok(_) | Err(Error::Timeout) => {}
                Err(error) => {
                    // Evicted by the orchestrator's result retention.
                    self.in_flight.remove(&task);
                    self.fail(
                        node,
                        TaskStatus::Failed,
                        format!("the result of {task} is lost: {error}"),
                    );
                }
            }
        }
    }

    /// Drives the plan without blocking; its result tree if the root ended.
    pub fn try_result(&mut self) -> Option<StepResult> {
        self.poll();
        self.finished.then(|| self.tree())
    }

    /// Drives the plan without blocking and reports how far it is, level by
    /// level.
    pub fn progress(&mut self) -> Progress {
        self.poll();
        self.tree.progress()
    }

    /// The plan as it stands, without driving it.
    pub fn tree(&self) -> StepResult {
        self.tree.result(0)
    }

    /// Whether the root ended.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Cancels every step that has not ended and returns how many. Their
    /// tasks that had not started are cancelled in the orchestrator; those
    /// already running finish, and their results are ignored.
    pub fn cancel(&mut self) -> usize {
        let unfinished: Vec<usize> = self
            .tree
            .subtree(0)
            .into_iter()
            .filter(|&id| !matches!(self.tree.nodes[id].state, State::Done(_)))
            .collect();
        for &id in &unfinished {
            self.cancel_node(id, "cancelled by the application");
        }
        self.finished = true;
        unfinished.len()
    }
}
