//! The seed's PARALLEL EXECUTION: fan-out/fan-in of independent work.
//!
//! Two levels, two tools:
//!
//! * Across agents, from the caller: [`run_batch`] submits independent tasks
//!   together and gathers their results in input order under one deadline
//!   for the whole batch, with the partial results when it passes.
//! * Inside one task: [`ParallelPool`] splits data-parallel work (map,
//!   for-each, map-reduce) over rayon threads. There is exactly one pool per
//!   orchestrator, sized by
//!   [`OrchestratorBuilder::parallelism`](crate::OrchestratorBuilder::parallelism):
//!   twenty agents each building a pool of their own would run twenty times
//!   as many threads as there are cores, and every one of them would be
//!   slower for it.

mod batch;
mod pool;

pub use batch::{BatchOutcome, run_batch};
pub use pool::ParallelPool;
