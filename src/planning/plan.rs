//! A plan and its settings, and how it is submitted.

use std::collections::BTreeMap;

use super::handle::PlanHandle;
use super::step::Step;
use super::tree::Tree;
use super::validate::check_step;
use crate::error::{Error, Result};
use crate::orchestrator::Orchestrator;

/// Default depth limit of a plan: [`Plan::max_depth`].
pub const DEFAULT_MAX_DEPTH: u32 = 4;
/// Default kind of the tasks sent to planner agents: [`Plan::planner_kind`].
pub const DEFAULT_PLANNER_KIND: &str = "plan";

/// A tree of [`Step`]s to run on an orchestrator, with its settings.
///
/// [`submit`](Plan::submit) checks the tree and starts it; the returned
/// [`PlanHandle`] drives it to the end. A failed step fails its branch up
/// to the root, cancelling what had not started, unless
/// [`replan_failed_branches`](Plan::replan_failed_branches) lets the nearest
/// goal above it be decomposed once more.
///
/// ```
/// use agentry::{AgentContext, FanIn, Orchestrator, Output, Plan, Role, Step, Task, TaskError};
/// use std::time::Duration;
///
/// let orchestrator = Orchestrator::builder()
///     .agents(Role::Researcher, 2, || |task: &Task, _: &AgentContext| -> Result<Output, TaskError> {
///         let site: String = task.input()?;
///         Ok(Output::encode(&site.len())?)
///     })
///     .agents(Role::Validator, 1, || |task: &Task, _: &AgentContext| -> Result<Output, TaskError> {
///         let lengths: Vec<usize> = FanIn::from_task(task)?.decode_all()?;
///         Ok(Output::encode(&lengths.iter().sum::<usize>())?)
///     })
///     .build()?;
///
/// let plan = Plan::new(
///     Step::task("total", "sum")
///         .with_role(Role::Validator)
///         .child(Step::task("a", "measure").with_role(Role::Researcher).with_input(&"ab")?)
///         .child(Step::task("b", "measure").with_role(Role::Researcher).with_input(&"abcd")?.after("a")),
/// );
/// let mut handle = plan.submit(&orchestrator)?;
/// let tree = handle.wait_timeout(Duration::from_secs(10))?;
/// assert_eq!(tree.output::<usize>()?, 6);
/// assert_eq!(tree.children()[1].output::<usize>()?, 4);
/// # Ok::<(), agentry::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Plan {
    root: Step,
    pub(super) settings: Settings,
}

/// The per-plan settings the handle follows.
#[derive(Clone, Debug)]
pub(super) struct Settings {
    pub(super) max_depth: u32,
    pub(super) replan: bool,
    pub(super) planner_kind: String,
}

impl Plan {
    /// A plan whose root is `root` (its path is its name), with a depth
    /// limit of [`DEFAULT_MAX_DEPTH`], no re-planning, and planner tasks of
    /// kind [`DEFAULT_PLANNER_KIND`].
    pub fn new(root: Step) -> Plan {
        Plan {
            root,
            settings: Settings {
                max_depth: DEFAULT_MAX_DEPTH,
                replan: false,
                planner_kind: DEFAULT_PLANNER_KIND.to_owned(),
            },
        }
    }

    /// How deep steps may sit: the root is at 0, its children at 1
    /// (default [`DEFAULT_MAX_DEPTH`]). A submitted tree deeper than this is
    /// refused; a decomposition that would reach past it fails its goal.
    pub fn max_depth(mut self, depth: u32) -> Plan {
        self.settings.max_depth = depth;
        self
    }

    /// When a step fails, its nearest goal above that was not re-planned yet
    /// goes back to a planner with the reason
    /// ([`Goal::previous_failure`](super::Goal::previous_failure)): its
    /// unfinished steps are cancelled and the new decomposition replaces
    /// them. Each goal is re-planned at most once. Default: off, the failure
    /// fails the branch.
    pub fn replan_failed_branches(mut self) -> Plan {
        self.settings.replan = true;
        self
    }

    /// The kind of the tasks sent to planner agents (default
    /// [`DEFAULT_PLANNER_KIND`]); they always ask for [`Role::Planner`](crate::Role::Planner).
    pub fn planner_kind(mut self, kind: impl Into<String>) -> Plan {
        self.settings.planner_kind = kind.into();
        self
    }

    /// Checks the tree, submits the steps that can start, and returns the
    /// handle that drives the rest. A step that cannot be submitted (no
    /// agent for it, the orchestrator shut down) fails with that reason.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the step at fault: an empty or
    /// duplicate sibling name, a name with `/`, an `after` naming no
    /// sibling, a cycle in `after`, a step deeper than the limit, a goal
    /// with children of its own, a step with nothing to run.
    pub fn submit(self, orchestrator: &Orchestrator) -> Result<PlanHandle<'_>> {
        let name = self.root.name.clone();
        if name.is_empty() || name.contains('/') {
            return Err(Error::InvalidInput(format!(
                "the root step has an invalid name {name:?}: names are non-empty and contain no `/`"
            )));
        }
        check_step(&self.root, &name, 0, self.settings.max_depth).map_err(Error::InvalidInput)?;
        let mut tree = Tree::default();
        tree.add(self.root, None, name, 0);
        let mut handle = PlanHandle {
            orchestrator,
            tree,
            in_flight: BTreeMap::new(),
            settings: self.settings,
            finished: false,
        };
        handle.schedule();
        Ok(handle)
    }
}
