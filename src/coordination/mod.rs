//! The seed's COORDINATION LOGIC: health monitoring, failure recovery,
//! auto-scaling.
//!
//! # Supervision
//!
//! One supervisor thread (`agentry-supervisor`) owns every agent thread, in
//! the manner of an OTP supervisor. It starts the first time it has
//! something to do (a request, or the first task or message an agent takes
//! up), so that `build` waits only for the agents. It learns of trouble two
//! ways:
//!
//! * **Events, at once.** An agent that panics finishes reporting its failed
//!   attempt (retried if attempts remain), ends its loop and tells the
//!   supervisor as its thread exits; a thread that ends any other way
//!   without being asked to (its factory panicked, say) is reported the same
//!   way. An auto-scaling decision made under the distributor's lock is
//!   sent the moment the lock is released.
//! * **Checks, on an interval** (100 ms by default). An agent running a task
//!   or handling a message in `on_message` whose heartbeat is older than its
//!   limit (the hang timeout, or its task's own timeout) is hung. Task
//!   deadlines are kept in a heap and acted on when due.
//!
//! Recovery follows the seed's FAILURE RECOVERY FLOW: the failed agent is
//! taken out of its pool (it is never offered work again, the results it
//! had gathered are handed in, and its late result for the task recovery
//! took over is ignored and counted as late), the tasks handed to it and
//! not started go back to the front of their queues, its running task runs
//! again if attempts remain (the attempt counts) or fails with a reason that
//! names the agent, and a replacement is spawned from the spec's factory. A
//! hung thread cannot be killed in Rust: it is detached and left to end on
//! its own; the status report counts those still alive.
//!
//! Restarts are limited per spec: at most N within T (10 within 10 s by
//! default). Past the limit the spec is failed for good: its queued tasks
//! fail with a reason that says so, new tasks only it could serve are
//! refused at submit, and `RestartLimitReached` is emitted.

mod config;
mod supervisor;

pub use config::{AutoscalePolicy, DEFAULT_CHECK_INTERVAL, DEFAULT_HANG_TIMEOUT, HealthConfig};
pub(crate) use supervisor::{Deadline, Request, Stopping, Supervisor, SupervisorSlot, spawn_agent};
