//! The plan as it runs: an arena of nodes, and the views of it a caller
//! reads (the result tree and progress per level).

use std::fmt;

use serde::de::DeserializeOwned;

use super::step::Step;
use super::validate::{join, sibling_order};
use crate::distributor::{Output, TaskStatus};
use crate::error::{Error, Result};
use crate::ids::TaskId;

/// Where a node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Not started: its siblings or its parent come first.
    Waiting,
    /// Its planner task is running.
    Planning(TaskId),
    /// Its children are running.
    Children,
    /// Its own task (a leaf's, or an aggregation) is running.
    Running(TaskId),
    /// Finished.
    Done(TaskStatus),
}

/// One step of a running plan. Nodes are never removed: a re-planned goal
/// forgets its old children, which stay in the arena, unreachable.
#[derive(Debug)]
pub(super) struct Node {
    /// The step, its children moved out into nodes of their own.
    pub(super) step: Step,
    pub(super) path: String,
    pub(super) parent: Option<usize>,
    pub(super) children: Vec<usize>,
    /// The siblings it runs after.
    pub(super) after: Vec<usize>,
    pub(super) depth: u32,
    pub(super) state: State,
    pub(super) task: Option<TaskId>,
    pub(super) output: Option<Output>,
    pub(super) error: Option<String>,
    /// Why the goal was re-planned, once it was.
    pub(super) replanned: Option<String>,
}

/// The arena; children are pushed in an order where a step comes after the
/// siblings it waits for, so index order is a valid processing order.
#[derive(Debug, Default)]
pub(super) struct Tree {
    pub(super) nodes: Vec<Node>,
}

impl Tree {
    /// Adds `step` and its subtree (already checked) under `parent`.
    pub(super) fn add(
        &mut self,
        mut step: Step,
        parent: Option<usize>,
        path: String,
        depth: u32,
    ) -> usize {
        let children = std::mem::take(&mut step.children);
        let id = self.nodes.len();
        self.nodes.push(Node {
            step,
            path,
            parent,
            children: Vec::new(),
            after: Vec::new(),
            depth,
            state: State::Waiting,
            task: None,
            output: None,
            error: None,
            replanned: None,
        });
        self.add_children(id, children);
        id
    }

    /// Adds `steps` (already checked) as the children of `parent`: into the
    /// arena in start order, into the parent's list in declared order.
    pub(super) fn add_children(&mut self, parent: usize, steps: Vec<Step>) {
        // The checks passed, so there is an order; declared order is only a
        // fallback that keeps this function total.
        let order = sibling_order(&steps, &self.nodes[parent].path)
            .unwrap_or_else(|_| (0..steps.len()).collect());
        let depth = self.nodes[parent].depth + 1;
        let mut slots: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
        let mut ids = vec![0; slots.len()];
        for &i in &order {
            if let Some(step) = slots[i].take() {
                let path = join(&self.nodes[parent].path, &step.name);
                ids[i] = self.add(step, Some(parent), path, depth);
            }
        }
        for &id in &ids {
            let after: Vec<usize> = self.nodes[id]
                .step
                .after
                .iter()
                .filter_map(|name| {
                    ids.iter()
                        .copied()
                        .find(|&s| self.nodes[s].step.name == *name)
                })
                .collect();
            self.nodes[id].after = after;
        }
        self.nodes[parent].children = ids;
    }

    /// `id` and every node below it, parents first.
    pub(super) fn subtree(&self, id: usize) -> Vec<usize> {
        let mut all = vec![id];
        let mut i = 0;
        while i < all.len() {
            all.extend_from_slice(&self.nodes[all[i]].children);
            i += 1;
        }
        all
    }

    pub(super) fn result(&self, id: usize) -> StepResult {
        let node = &self.nodes[id];
        StepResult {
            name: node.step.name.clone(),
            path: node.path.clone(),
            status: match node.state {
                State::Waiting => TaskStatus::Queued,
                State::Planning(_) | State::Children | State::Running(_) => TaskStatus::Running,
                State::Done(status) => status,
            },
            task: node.task,
            output: node.output.clone(),
            error: node.error.clone(),
            replanned: node.replanned.is_some(),
            children: node.children.iter().map(|&c| self.result(c)).collect(),
        }
    }

    pub(super) fn progress(&self) -> Progress {
        let mut levels: Vec<LevelProgress> = Vec::new();
        for id in self.subtree(0) {
            let node = &self.nodes[id];
            let depth = node.depth as usize;
            while levels.len() <= depth {
                levels.push(LevelProgress {
                    depth: levels.len() as u32,
                    done: 0,
                    total: 0,
                });
            }
            levels[depth].total += 1;
            if matches!(node.state, State::Done(_)) {
                levels[depth].done += 1;
            }
        }
        Progress { levels }
    }
}

/// How far a plan is, level by level: level 0 is the root, level 1 its
/// children, and so on. Totals grow as planners decompose goals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    levels: Vec<LevelProgress>,
}

/// The steps of one level of a plan: how many exist so far, how many ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelProgress {
    /// The level: 0 for the root.
    pub depth: u32,
    /// Steps of this level that ended (succeeded, failed or cancelled).
    pub done: usize,
    /// Steps of this level known so far.
    pub total: usize,
}

impl Progress {
    /// Every level, the root's first.
    pub fn levels(&self) -> &[LevelProgress] {
        &self.levels
    }

    /// Steps that ended, over all levels.
    pub fn done(&self) -> usize {
        self.levels.iter().map(|l| l.done).sum()
    }

    /// Steps known so far, over all levels.
    pub fn total(&self) -> usize {
        self.levels.iter().map(|l| l.total).sum()
    }
}

/// A step of a plan as it stands: its status, output or error, and its
/// children's results in declaration order. `Display` prints the tree.
#[derive(Clone, Debug)]
pub struct StepResult {
    name: String,
    path: String,
    status: TaskStatus,
    task: Option<TaskId>,
    output: Option<Output>,
    error: Option<String>,
    replanned: bool,
    children: Vec<StepResult>,
}

impl StepResult {
    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The step's path from the root (`root/research/fetch`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// [`TaskStatus::Queued`] before it starts, `Running` while it (or its
    /// planner, or its children) runs, then how it ended: a step whose
    /// branch failed elsewhere ends `Cancelled`.
    pub fn status(&self) -> TaskStatus {
        self.status
    }

    /// Whether the step succeeded.
    pub fn is_success(&self) -> bool {
        self.status == TaskStatus::Succeeded
    }

    /// The last task that ran for the step (its own, or its planner's).
    pub fn task(&self) -> Option<TaskId> {
        self.task
    }

    /// The step's raw output, once it succeeded. A group's (or a goal's
    /// without aggregation) is the [`FanIn`](super::FanIn) of its
    /// children's.
    pub fn raw_output(&self) -> Option<&Output> {
        self.output.as_ref()
    }

    /// Decodes the step's output.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the step has not succeeded (the message
    /// says why); [`Error::Codec`] when the output is not a `T`.
    pub fn output<T: DeserializeOwned>(&self) -> Result<T> {
        match &self.output {
            Some(output) => output.decode(),
            None => Err(Error::InvalidInput(format!(
                "step `{}` has no output: it is {:?}{}",
                self.path,
                self.status,
                self.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ))),
        }
    }

    /// Why the step did not succeed.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Whether a planner decomposed this goal a second time after a failure.
    pub fn was_replanned(&self) -> bool {
        self.replanned
    }

    /// The children's results, in declaration order.
    pub fn children(&self) -> &[StepResult] {
        &self.children
    }

    /// The step at `path` in this subtree (its own path included).
    pub fn find(&self, path: &str) -> Option<&StepResult> {
        if self.path == path {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(path))
    }

    fn write_indented(&self, f: &mut fmt::Formatter<'_>, indent: usize) -> fmt::Result {
        write!(f, "{:indent$}{} [{:?}]", "", self.name, self.status)?;
        if self.replanned {
            f.write_str(" (re-planned)")?;
        }
        if let Some(error) = &self.error {
            write!(f, ": {error}")?;
        }
        writeln!(f)?;
        for child in &self.children {
            child.write_indented(f, indent + 2)?;
        }
        Ok(())
    }
}

impl fmt::Display for StepResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_indented(f, 0)
    }
}
