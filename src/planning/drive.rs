//! How a handle moves its plan along: collect results, expand goals,
//! submit what became ready, fail branches.
//!
//! The protocol, per node: `Waiting` until its parent runs its children and
//! its `after` siblings allow it; then a goal sends a planner task
//! (`Planning`), a step with children lets them run (`Children`), a leaf
//! submits its task (`Running`). When every child succeeded, a parent runs
//! its aggregation task with their [`FanIn`] (`Running`), or, without one,
//! succeeds with the fan-in as its output. A failure ends the failed node,
//! then walks up: every ancestor fails with the failed step's path and
//! reason and has its unfinished steps cancelled, until the root (the plan
//! ends) or a goal that may be re-planned (its planner runs again).

use serde::Serialize;

use super::handle::PlanHandle;
use super::step::{FanIn, Goal, Raw, Step};
use super::tree::State;
use super::validate::check_children;
use crate::distributor::{Output, Task, TaskResult, TaskStatus};
use crate::ids::{Role, TaskId};

impl PlanHandle<'_> {
    /// Takes in every result that arrived, then submits what became ready.
    pub(super) fn poll(&mut self) {
        if self.finished {
            return;
        }
        let mut arrived = self.collect();
        // A task failed because a dependency failed is published just after
        // that dependency; looking again after any failure finds the
        // dependency too, so the failure is reported where it happened.
        if arrived.iter().any(|(_, r)| !r.is_success()) {
            arrived = self.collect();
        }
        for (node, result) in arrived {
            // An earlier result of this round may have ended the branch.
            if self.finished || self.in_flight.remove(&result.id()).is_none() {
                continue;
            }
            match self.tree.nodes[node].state {
                State::Planning(_) => self.planned(node, &result),
                State::Running(_) => self.ran(node, &result),
                _ => {}
            }
        }
        self.schedule();
    }

    /// The results in, in node order: a step's `after` siblings sit before
    /// it in the arena, so their outcome is taken first.
    fn collect(&self) -> Vec<(usize, TaskResult)> {
        let mut arrived: Vec<(usize, TaskResult)> = self
            .in_flight
            .iter()
            .filter_map(|(&task, &node)| self.orchestrator.result(task).map(|r| (node, r)))
            .collect();
        arrived.sort_by_key(|(node, _)| *node);
        arrived
    }

    fn planned(&mut self, node: usize, result: &TaskResult) {
        let path = self.tree.nodes[node].path.clone();
        let refuse = |why: String| format!("the planner of goal `{path}` {why}");
        if !result.is_success() {
            let why = format!("failed: {}", reason(result));
            return self.fail(node, result.status(), refuse(why));
        }
        let steps: Vec<Step> = match result.output() {
            Ok(steps) => steps,
            Err(e) => {
                let why = format!("returned a malformed decomposition: {e}");
                return self.fail(node, TaskStatus::Failed, refuse(why));
            }
        };
        if steps.is_empty() {
            let why = "returned an empty decomposition".to_owned();
            return self.fail(node, TaskStatus::Failed, refuse(why));
        }
        let depth = self.tree.nodes[node].depth + 1;
        if let Err(why) = check_children(&steps, &path, depth, self.settings.max_depth) {
            let why = format!("returned an invalid decomposition: {why}");
            return self.fail(node, TaskStatus::Failed, refuse(why));
        }
        self.tree.add_children(node, steps);
        self.tree.nodes[node].state = State::Children;
    }

    fn ran(&mut self, node: usize, result: &TaskResult) {
        if result.is_success() {
            let node = &mut self.tree.nodes[node];
            node.state = State::Done(TaskStatus::Succeeded);
            node.output = result.raw_output().cloned();
        } else {
            self.fail(node, result.status(), reason(result).to_owned());
        }
    }

    /// Advances every reachable node as far as it can go, until nothing
    /// changes.
    pub(super) fn schedule(&mut self) {
        let mut changed = true;
        while changed && !self.finished {
            changed = false;
            for id in self.tree.subtree(0) {
                changed |= self.advance(id);
                if matches!(self.tree.nodes[0].state, State::Done(_)) {
                    self.finished = true;
                    return;
                }
            }
        }
    }

    /// Moves one node on if it can; whether it did.
    fn advance(&mut self, id: usize) -> bool {
        let node = &self.tree.nodes[id];
        match node.state {
            State::Waiting => {
                if let Some(parent) = node.parent {
                    if self.tree.nodes[parent].state != State::Children {
                        return false;
                    }
                }
                // Children may start only once the siblings before them
                // ended; a single task can wait for a running sibling's task
                // in the orchestrator instead.
                let single_task = node.children.is_empty();
                let mut after = Vec::new();
                for &sibling in &node.after {
                    match self.tree.nodes[sibling].state {
                        State::Done(TaskStatus::Succeeded) => {}
                        State::Running(task) if single_task => after.push(task),
                        _ => return false,
                    }
                }
                if node.step.goal.is_some() {
                    self.start_planner(id, &after);
                } else if !single_task {
                    self.tree.nodes[id].state = State::Children;
                } else {
                    let input = node.step.input.clone();
                    self.start_task(id, &after, &Raw(&input));
                }
                true
            }
            State::Children => {
                let children = &node.children;
                if !children
                    .iter()
                    .all(|&c| self.tree.nodes[c].state == State::Done(TaskStatus::Succeeded))
                {
                    return false;
                }
                let fan_in = FanIn {
                    input: node.step.input.clone(),
                    children: children
                        .iter()
                        .map(|&c| {
                            let child = &self.tree.nodes[c];
                            (
                                child.step.name.clone(),
                                child.output.clone().unwrap_or_default(),
                            )
                        })
                        .collect(),
                };
                if node.step.kind.is_some() {
                    self.start_task(id, &[], &fan_in);
                } else {
                    match Output::encode(&fan_in) {
                        Ok(output) => {
                            let node = &mut self.tree.nodes[id];
                            node.state = State::Done(TaskStatus::Succeeded);
                            node.output = Some(output);
                        }
                        Err(e) => self.fail(id, TaskStatus::Failed, format!("fan-in: {e}")),
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// Submits the node's own task (a leaf's, or an aggregation).
    fn start_task<I: Serialize>(&mut self, id: usize, after: &[TaskId], input: &I) {
        let step = &self.tree.nodes[id].step;
        let mut task = Task::new(step.kind.clone().unwrap_or_default())
            .with_priority(step.priority)
            .with_max_attempts(step.max_attempts);
        if let Some(role) = &step.role {
            task = task.with_role(role.clone());
        }
        for capability in &step.capabilities {
            task = task.requires(capability.as_str());
        }
        self.submit(id, task, after, input, State::Running);
    }

    /// Sends the goal to a planner agent.
    fn start_planner(&mut self, id: usize, after: &[TaskId]) {
        let node = &self.tree.nodes[id];
        let goal = Goal {
            path: node.path.clone(),
            description: node.step.goal.clone().unwrap_or_default(),
            depth: node.depth,
            input: node.step.input.clone(),
            failure: node.replanned.clone(),
        };
        let task = Task::new(self.settings.planner_kind.as_str())
            .with_role(Role::Planner)
            .with_priority(node.step.priority)
            .with_max_attempts(node.step.max_attempts);
        self.submit(id, task, after, &goal, State::Planning);
    }

    fn submit<I: Serialize>(
        &mut self,
        id: usize,
        mut task: Task,
        after: &[TaskId],
        input: &I,
        state: fn(TaskId) -> State,
    ) {
        for &dependency in after {
            task = task.after(dependency);
        }
        match task
            .with_input(input)
            .and_then(|t| self.orchestrator.submit(t))
        {
            Ok(task) => {
                let node = &mut self.tree.nodes[id];
                node.state = state(task);
                node.task = Some(task);
                self.in_flight.insert(task, id);
            }
            Err(e) => {
                let why = format!(
                    "step `{}` could not be submitted: {e}",
                    self.tree.nodes[id].path
                );
                self.fail(id, TaskStatus::Failed, why);
            }
        }
    }

    /// Ends `node` with `status` and `reason`, then fails its branch upward:
    /// to the root, or to the nearest goal that may be re-planned.
    pub(super) fn fail(&mut self, node: usize, status: TaskStatus, reason: String) {
        let origin = self.tree.nodes[node].path.clone();
        self.end(node, status, reason.clone());
        let why = format!("step `{origin}` failed: {reason}");
        let mut at = node;
        while let Some(parent) = self.tree.nodes[at].parent {
            let p = &self.tree.nodes[parent];
            if self.settings.replan && p.step.goal.is_some() && p.replanned.is_none() {
                return self.replan(parent, why);
            }
            self.end(parent, TaskStatus::Failed, why.clone());
            at = parent;
        }
        self.finished = true;
    }

    /// Ends `node` and cancels every unfinished step below it.
    pub(super) fn end(&mut self, node: usize, status: TaskStatus, reason: String) {
        self.cancel_below(node, &format!("cancelled: {reason}"));
        if let State::Planning(task) | State::Running(task) = self.tree.nodes[node].state {
            self.in_flight.remove(&task);
        }
        let node = &mut self.tree.nodes[node];
        node.state = State::Done(status);
        node.error = Some(reason);
    }

    /// Sends a goal back to its planner once, with why its branch failed.
    fn replan(&mut self, goal: usize, why: String) {
        tracing::debug!(goal = %self.tree.nodes[goal].path, %why, "re-planning");
        self.cancel_below(goal, "cancelled: the goal is re-planned");
        let node = &mut self.tree.nodes[goal];
        node.children.clear();
        node.replanned = Some(why);
        node.state = State::Waiting;
    }

    fn cancel_below(&mut self, node: usize, reason: &str) {
        for id in self.tree.subtree(node).into_iter().skip(1) {
            if !matches!(self.tree.nodes[id].state, State::Done(_)) {
                self.cancel_node(id, reason);
            }
        }
    }

    /// Cancels one unfinished node (its task, if it has one in flight).
    pub(super) fn cancel_node(&mut self, id: usize, reason: &str) {
        if let State::Planning(task) | State::Running(task) = self.tree.nodes[id].state {
            self.in_flight.remove(&task);
            // Ok(false) when the task already started: it runs on, and its
            // result is ignored since it is no longer in flight.
            if let Err(e) = self.orchestrator.cancel(task) {
                tracing::debug!(%task, error = %e, "cancelling a plan's task");
            }
        }
        let node = &mut self.tree.nodes[id];
        node.state = State::Done(TaskStatus::Cancelled);
        node.error = Some(reason.to_owned());
    }
}

/// Why a task did not succeed, as its result says.
fn reason(result: &TaskResult) -> &str {
    result.error().unwrap_or("no reason given")
}
