//! The seed's SKILL LIBRARY: recipes learned from successful task runs.
//!
//! A [`Skill`] is a named recipe for one kind of task: ordered
//! [`SkillStep`]s, each naming an action the application registered with
//! its serde parameters, plus tags, a description and [`SkillStats`]. The
//! [`SkillLibrary`] learns from outcomes (a recipe that keeps failing is
//! retired), answers lookups ranked by relevance times a smoothed success
//! rate, runs skills step by step, and persists itself in [`SharedMemory`]
//! or in a crash-safe file of its own (`store.rs` describes the format).
//!
//! [`SharedMemory`]: crate::SharedMemory

mod actions;
mod library;
mod rank;
mod skill;
mod store;

pub use actions::{ActionCall, SkillRunError};
pub use library::{DEFAULT_RETIRE_AFTER, DEFAULT_SKILLS_KEY, SkillLibrary, SkillMatch};
pub use skill::{Skill, SkillOutcome, SkillStats, SkillStep};
