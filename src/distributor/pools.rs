//! The agent pools: agents joining and leaving, failed and hung agents
//! taken out with their work handed back, specs failed by the restart
//! limit, and the seed's auto-scaling policy.

use std::mem;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Distributor, Effects, Scaling, SpecPool, TaskResult, TaskStatus};
use crate::agent::AgentShared;
use crate::orchestrator::Event;

/// A busy agent found without a heartbeat for too long.
pub(crate) struct Hung {
    pub(crate) agent: Arc<AgentShared>,
    pub(crate) silent_for: Duration,
}

/// One spec's pool, as the status report shows it.
pub(crate) struct PoolFigures {
    pub(crate) spec: usize,
    pub(crate) agents: usize,
    pub(crate) idle: usize,
    pub(crate) queued: usize,
}

impl Distributor {
    /// A new agent joins its spec's pool; `reserved` when it takes a place
    /// reserved for it (a scale-up, a replacement).
    pub(crate) fn add_agent(&mut self, agent: Arc<AgentShared>, reserved: bool) {
        let pool = &mut self.specs[agent.spec];
        if reserved {
            pool.pending = pool.pending.saturating_sub(1);
        }
        pool.agents.push(agent);
    }

    /// The agent a place of `spec` was reserved for will not come (it could
    /// not be spawned, or its spec failed).
    pub(crate) fn release_reserved(&mut self, spec: usize) {
        let pool = &mut self.specs[spec];
        pool.pending = pool.pending.saturating_sub(1);
    }

    /// Takes a failed `agent` out of its pool as [`retire`](Self::retire)
    /// does, reserving its place for the replacement the supervisor spawns
    /// next. `false` when it was out already.
    pub(crate) fn retire_for_replacement(
        &mut self,
        agent: &Arc<AgentShared>,
        fx: &mut Effects,
    ) -> bool {
        if !self.retire(agent, fx) {
            return false;
        }
        self.specs[agent.spec].pending += 1;
        true
    }

    /// Takes `agent` out of its pool for good: it stops being offered work,
    /// the tasks handed to it and not started go back to the front of their
    /// queues, and the results it gathered and has not reported are handed
    /// in. `false` when it was out already.
    pub(crate) fn retire(&mut self, agent: &Arc<AgentShared>, fx: &mut Effects) -> bool {
        let pool = &mut self.specs[agent.spec];
        let Some(position) = pool.agents.iter().position(|a| Arc::ptr_eq(a, agent)) else {
            return false;
        };
        pool.agents.swap_remove(position);
        if agent.idle_listed.swap(false, Ordering::Relaxed) {
            pool.idle.retain(|a| !Arc::ptr_eq(a, agent));
        }
        agent.retired.store(true, Ordering::Relaxed);
        agent.stop.store(true, Ordering::Relaxed);
        let mut batch = agent.batch.lock();
        if let Some(held) = batch.counted.take() {
            self.batched[held.rank()] -= 1;
        }
        let unstarted = mem::take(&mut batch.tasks);
        let gathered = mem::take(&mut batch.finished);
        drop(batch);
        self.requeue_front(unstarted, fx);
        // A hung agent's thread may never come back to report these.
        if !gathered.is_empty() {
            for finished in gathered {
                self.finish(finished, fx);
            }
            self.publish();
        }
        self.hand_out_queued(fx);
        true
    }

    /// Settles the task a retired agent was running: run again when it may
    /// (the attempt counts), failed with `reason` otherwise. Returns the
    /// task it was running (one settled already, timed out say, is named
    /// but not touched), `None` when it was running none.
    pub(crate) fn recover_in_flight(
        &mut self,
        agent: &AgentShared,
        reason: &str,
        fx: &mut Effects,
    ) -> Option<crate::ids::TaskId> {
        let current = agent.current.load(Ordering::Acquire);
        if current == 0 {
            return None;
        }
        let id = crate::ids::TaskId::from(current);
        if !self.live.contains(current) {
            return Some(id);
        }
        agent.recovered.store(current, Ordering::Relaxed);
        match agent.in_flight.lock().take() {
            Some(task) if task.id == id => {
                self.totals.retried += 1;
                fx.events.push(Event::TaskRetried {
                    task: id,
                    attempt: task.attempt,
                    error: reason.to_owned(),
                });
                self.enqueue(task, fx);
            }
            _ => {
                let attempts = agent.current_attempt.load(Ordering::Relaxed);
                let failed = TaskResult::ran(
                    id,
                    TaskStatus::Failed,
                    Err(reason.to_owned()),
                    attempts,
                    agent.id,
                    Duration::ZERO,
                );
                self.complete(failed, fx);
            }
        }
        self.publish();
        Some(id)
    }

    /// Hands queued tasks to idle agents: after agents come or go, work may
    /// wait where an idle agent could take it. The most urgent first, and
    /// within a priority the oldest first across lanes, as agents take work.
    pub(crate) fn hand_out_queued(&mut self, fx: &mut Effects) {
        for rank in 0..4 {
            // Lanes with no idle agent left to take their work.
            let mut unserved = vec![false; self.lanes.len()];
            loop {
                let oldest = (0..self.lanes.len())
                    .filter(|&lane| !unserved[lane])
                    .filter_map(|lane| self.lanes[lane].queues[rank].front().map(|t| (t.id, lane)))
                    .min();
                let Some((_, lane)) = oldest else { break };
                let Some(agent) = self.take_idle(lane) else {
                    unserved[lane] = true;
                    continue;
                };
                if let Some(task) = self.lanes[lane].queues[rank].pop_front() {
                    self.queued[rank] -= 1;
                    self.hand_over(agent, task, fx);
                }
            }
        }
    }

    /// Busy agents (running a task or handling a message) silent for longer
    /// than their limit: the running task's own timeout when it has one,
    /// else `hang_timeout`.
    pub(crate) fn hung_agents(&self, now: u64, hang_timeout: Duration) -> Vec<Hung> {
        let mut hung = Vec::new();
        for agent in self.specs.iter().flat_map(|s| &s.agents) {
            let running = agent.current.load(Ordering::Acquire) != 0;
            if !running && !agent.handling_message.load(Ordering::Acquire) {
                continue;
            }
            // A message handler has no timeout of its own.
            let own = if running {
                agent.current_timeout.load(Ordering::Relaxed)
            } else {
                0
            };
            let limit = if own > 0 {
                Duration::from_nanos(own)
            } else {
                hang_timeout
            };
            let silent_for =
                Duration::from_nanos(now.saturating_sub(agent.heartbeat.load(Ordering::Relaxed)));
            if silent_for > limit {
                hung.push(Hung {
                    agent: Arc::clone(agent),
                    silent_for,
                });
            }
        }
        hung
    }

    /// Fails `spec` for good: it is never offered work again, and the tasks
    /// only it could serve fail with a reason that says so.
    pub(crate) fn fail_spec(&mut self, spec: usize, fx: &mut Effects) {
        self.specs[spec].failed = true;
        let lanes = self.specs[spec].lanes.clone();
        for lane in lanes {
            if self.lane_is_served(lane) {
                continue;
            }
            let mut dead = Vec::new();
            for (rank, queue) in self.lanes[lane].queues.iter_mut().enumerate() {
                self.queued[rank] -= queue.len();
                dead.extend(queue.drain(..));
            }
            for task in dead {
                self.fail_unservable(&task, fx);
            }
        }
        self.publish();
    }

    /// Whether some spec of `lane` can still serve it.
    pub(crate) fn lane_is_served(&self, lane: usize) -> bool {
        self.lanes[lane]
            .specs
            .iter()
            .any(|&s| !self.specs[s].failed)
    }

    pub(crate) fn pool(&self, spec: usize) -> &SpecPool {
        &self.specs[spec]
    }

    pub(crate) fn note_restart(&mut self, spec: usize) {
        self.specs[spec].restarts += 1;
    }

    /// Tasks waiting for `spec`: the queues of every lane it serves.
    fn served_queue(&self, spec: usize) -> usize {
        self.specs[spec]
            .lanes
            .iter()
            .map(|&l| self.lanes[l].queues.iter().map(|q| q.len()).sum::<usize>())
            .sum()
    }

    pub(crate) fn pool_figures(&self) -> Vec<PoolFigures> {
        (0..self.specs.len())
            .map(|spec| PoolFigures {
                spec,
                agents: self.specs[spec].agents.len(),
                idle: self.specs[spec].idle.len(),
                queued: self.served_queue(spec),
            })
            .collect()
    }

    /// Applies the auto-scaling policy to every spec.
    pub(crate) fn autoscale(&mut self, now: Instant, fx: &mut Effects) {
        if self.scaling.policy.enabled {
            for spec in 0..self.specs.len() {
                self.scale_spec(spec, now, fx);
            }
        }
    }

    /// The seed's AUTO-SCALING FLOW for one spec: queue long and nobody idle
    /// → spawn one (the supervisor does it once the lock is released); more
    /// than a few idle → stop one of them.
    pub(crate) fn scale_spec(&mut self, spec: usize, now: Instant, fx: &mut Effects) {
        let Scaling { policy, min, max } = self.scaling;
        let pool = &self.specs[spec];
        if pool.failed
            || pool
                .last_scaled
                .is_some_and(|t| now.duration_since(t) < policy.cooldown)
        {
            return;
        }
        let size = pool.agents.len() + pool.pending;
        let floor = min.min(pool.start);
        if pool.idle.is_empty() && size < max && self.served_queue(spec) > policy.up_queue {
            let pool = &mut self.specs[spec];
            pool.pending += 1;
            pool.scaled_up += 1;
            pool.last_scaled = Some(now);
            fx.scale_up.push(spec);
            tracing::debug!(role = %pool.role, size = size + 1, "scaling up");
        } else if pool.idle.len() > policy.down_idle && pool.agents.len() > floor {
            let pool = &mut self.specs[spec];
            let Some(agent) = pool.idle.pop_front() else {
                return;
            };
            agent.idle_listed.store(false, Ordering::Relaxed);
            pool.agents.retain(|a| !Arc::ptr_eq(a, &agent));
            pool.scaled_down += 1;
            pool.last_scaled = Some(now);
            agent.stop.store(true, Ordering::Relaxed);
            tracing::debug!(role = %pool.role, agent = %agent.id, size = pool.agents.len(), "scaling down");
            fx.events.push(Event::ScaledDown {
                agent: agent.id,
                role: pool.role.clone(),
                pool_size: pool.agents.len(),
            });
            fx.wake.push(agent);
        }
    }
}
