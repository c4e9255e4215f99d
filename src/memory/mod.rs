//! The seed's SHARED MEMORY: a versioned key/value store with optimistic
//! locking.

mod version;

pub use version::{Version, Versioned};
