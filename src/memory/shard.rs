//! The sharded map behind the store.
//!
//! Keys are spread over a fixed number of shards by hash; each shard is a
//! `parking_lot::RwLock<HashMap>` padded to its own cache line. A read takes
//! one shard's read lock, a write one shard's write lock, so threads working on
//! different keys rarely meet, and no lock covers the whole store.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use crossbeam_utils::CachePadded;
use parking_lot::RwLock;
use rayon::prelude::*;

use super::Version;

/// Shards per store. A power of two (the index is a mask of the hash), and
/// comfortably more than the cores of the machines we target, so that two
/// writers land on the same shard rarely.
const SHARDS: usize = 64;

/// One key's stored state: its postcard-encoded value and the version of its
/// last write.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) version: Version,
    pub(crate) bytes: Vec<u8>,
}

/// One shard's map.
pub(crate) type Map = HashMap<String, Entry>;

/// The shards, and the hasher that picks a key's shard.
#[derive(Debug)]
pub(crate) struct Shards {
    shards: Box<[CachePadded<RwLock<Map>>]>,
    // Picking the shard hashes the key once more than the map does; std has
    // no stable raw-entry API to reuse one hash for both, and SipHash of a
    // short key costs a few tens of nanoseconds, well inside the budget.
    hasher: RandomState,
}

impl Shards {
    pub(crate) fn new() -> Shards {
        Shards {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(RwLock::new(Map::new())))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    /// The index of the shard that owns `key`, below the number of shards.
    pub(crate) fn index(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) & (SHARDS - 1)
    }

    /// The shard that owns `key`.
    pub(crate) fn for_key(&self, key: &str) -> &RwLock<Map> {
        // `index` masks the hash below SHARDS, so indexing cannot fail.
        &self.shards[self.index(key)]
    }

    /// Every shard, for rayon.
    pub(crate) fn par_iter(&self) -> impl IndexedParallelIterator<Item = &RwLock<Map>> {
        self.shards.par_iter().map(|shard| &**shard)
    }

    /// Every shard, in a fixed order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &RwLock<Map>> {
        self.shards.iter().map(|shard| &**shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_maps_to_the_same_shard() {
        let shards = Shards::new();
        let a = shards.for_key("alpha") as *const _;
        assert_eq!(a, shards.for_key("alpha") as *const _);
    }

    #[test]
    fn keys_spread_over_many_shards() {
        let shards = Shards::new();
        let mut used = std::collections::HashSet::new();
        for i in 0..1000 {
            used.insert(shards.for_key(&format!("key-{i}")) as *const _ as usize);
        }
        assert!(used.len() > SHARDS / 2, "only {} shards used", used.len());
    }
}
