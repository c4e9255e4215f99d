//! A change of leader, as the distributor sees it: restoring the durable
//! task state on takeover, and letting go of every unstarted task when
//! deposed.

use std::mem;

use super::{Distributor, Effects, Live, Task, TaskResult, TaskStatus};
use crate::ids::TaskId;

impl Distributor {
    /// Replaces this instance's view with the durable one and starts
    /// dispatching: `finished` become the readable results, `accepted` (the
    /// tasks recorded as accepted and not finished, in id order) are queued
    /// again under their own ids, and new ids start above every id seen.
    ///
    /// A task that cannot be routed here (no spec serves it) fails with a
    /// result saying why, rather than being dropped.
    pub(crate) fn restore(
        &mut self,
        finished: Vec<TaskResult>,
        accepted: Vec<Task>,
        fx: &mut Effects,
    ) {
        self.results.clear();
        let highest = finished
            .iter()
            .map(|r| r.id)
            .chain(accepted.iter().map(Task::id))
            .max()
            .map_or(0, TaskId::get);
        self.next_id = self.next_id.max(highest + 1);
        self.unpublished = finished;
        // Leading again (after a demotion too): record from now on.
        self.recording = self.recorder.is_some();
        self.publish_and_record(false);
        self.leading = true;
        self.admit_claimed(accepted, fx);
    }

    /// Queues tasks that already have their ids (recorded before a takeover,
    /// or claimed from a cluster's queue), with their attempt counts, and
    /// publishes what that finished. A task that cannot be routed here (no
    /// spec serves it) fails with a result saying why, rather than being
    /// dropped.
    pub(crate) fn admit_claimed(&mut self, accepted: Vec<Task>, fx: &mut Effects) {
        for mut task in accepted {
            match self.lane_for(&task) {
                Ok(lane) => {
                    task.lane = lane as u32;
                    let dependencies = task
                        .extras
                        .as_mut()
                        .map(|e| mem::take(&mut e.dependencies))
                        .unwrap_or_default();
                    self.totals.submitted += 1;
                    self.admit(task, &dependencies, fx);
                }
                Err(error) => {
                    self.live.insert(task.id.get(), Live::default());
                    let failed = TaskResult::failed(
                        task.id,
                        TaskStatus::Failed,
                        format!("could not be queued on this instance: {error}"),
                        task.attempt,
                    );
                    self.complete(failed, fx);
                }
            }
        }
        self.publish();
    }

    /// Whether this instance dispatches.
    pub(crate) fn is_leading(&self) -> bool {
        self.leading
    }

    /// Stops dispatching after this instance was deposed: every task not
    /// started (queued, waiting for dependencies, or handed out and not
    /// begun) is dropped from this instance without a result, since the new
    /// leader runs it. Results of the tasks still running are no longer
    /// recorded; they come back as late results.
    pub(crate) fn abandon(&mut self) {
        self.leading = false;
        self.recording = false;
        let mut dropped: Vec<TaskId> = Vec::new();
        for lane in &mut self.lanes {
            for queue in &mut lane.queues {
                dropped.extend(queue.drain(..).map(|t| t.id));
            }
        }
        self.queued = [0; 4];
        for agent in self.specs.iter().flat_map(|s| &s.agents) {
            let mut batch = agent.batch.lock();
            dropped.extend(batch.tasks.drain(..).map(|t| t.id));
            if let Some(held) = batch.counted.take() {
                self.batched[held.rank()] -= 1;
            }
        }
        dropped.extend(self.waiting.drain().map(|(id, _)| id));
        for id in &dropped {
            self.live.remove(id.get());
        }
        self.totals.handed_over += dropped.len() as u64;
        // Running tasks are live still; ending them here would record a
        // result the new leader does not know. Their reports find them live
        // and are simply not recorded, as recording is off.
        tracing::info!(
            dropped = dropped.len(),
            "deposed: unstarted tasks left to the new leader"
        );
    }
}
