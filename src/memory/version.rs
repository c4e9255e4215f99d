//! Versions: the optimistic-locking tokens of the shared memory.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The version of one key in [`SharedMemory`](crate::SharedMemory): the value
/// of the store's global write counter at the key's last write, so versions
/// strictly increase across the whole store (like etcd's revision).
///
/// [`Version::NONE`] stands for "absent": `set(key, value, Version::NONE)`
/// creates the key only if it does not exist.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Version(u64);

impl Version {
    /// The version of an absent key.
    pub const NONE: Version = Version(0);

    /// Wraps a raw counter value.
    pub const fn new(raw: u64) -> Version {
        Version(raw)
    }

    /// The raw counter value (0 for [`Version::NONE`]).
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Whether this is [`Version::NONE`].
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            f.write_str("v(none)")
        } else {
            write!(f, "v{}", self.0)
        }
    }
}

/// A value read from the shared memory together with its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The decoded value.
    pub value: T,
    /// The version of the key when it was read: pass it to
    /// [`SharedMemory::set`](crate::SharedMemory::set) to write only if
    /// nobody wrote in between.
    pub version: Version,
}
