//! agentry: coordinate many worker agents inside a synchronous program.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![deny(unsafe_op_in_unsafe_fn)]

mod error;
mod ids;
mod memory;

pub use error::{Error, Missing, Result};
pub use ids::{AgentId, AgentState, Priority, Role, TaskId};
pub use memory::{Durability, SharedMemory, Version, Versioned};
