//! The seed's HIERARCHICAL PLANNING: a goal becomes a tree of steps, the
//! tree becomes tasks.
//!
//! A [`Plan`] is a tree of [`Step`]s. User code builds it, or lets planner
//! agents grow it: a [`Step::goal`] is sent to a [`Role::Planner`](crate::Role::Planner)
//! agent as a [`Goal`], and the steps it answers with
//! ([`Goal::decomposition`]) become the goal's children, which may be goals
//! again, down to the plan's depth limit. Siblings run in parallel unless
//! ordered with [`Step::after`]; a parent completes when its children have,
//! and an aggregation step receives their outputs in declaration order as a
//! [`FanIn`].
//!
//! Planning is built on the public orchestrator API alone (submit, result,
//! wait, cancel): a submitted plan is driven by its [`PlanHandle`], on the
//! caller's thread, as results arrive; `drive.rs` states the protocol.
//! Errors in the tree are refused before anything runs
//! ([`Plan::submit`]); errors in a planner's answer fail its goal with a
//! message naming the goal and the fault.

mod drive;
mod handle;
mod plan;
mod step;
mod tree;
mod validate;

pub use handle::PlanHandle;
pub use plan::{DEFAULT_MAX_DEPTH, DEFAULT_PLANNER_KIND, Plan};
pub use step::{FanIn, Goal, Step};
pub use tree::{LevelProgress, Progress, StepResult};
