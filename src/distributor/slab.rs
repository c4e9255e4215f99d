//! A map from sequential ids to values, stored in segments of consecutive
//! ids.
//!
//! Task ids are handed out in order and mostly finish in order, so the ids
//! alive at one time are close together. Keeping them in arrays of 4,096
//! consecutive slots makes neighbours neighbours in memory too: inserting,
//! finding and removing cost an index into a segment that is usually in
//! cache, where a hash table scatters sequential keys over the whole table
//! and every access misses. A segment is freed as soon as its last value is
//! removed, so an old id still present pins 4,096 slots, not everything
//! after it. Freed segments are kept for reuse, a few of them: a slab that
//! empties and fills again at each task (one task at a time) must not pay for
//! a fresh segment every time.

use super::IdMap;

const SEGMENT_BITS: u32 = 12;
const SEGMENT_LEN: usize = 1 << SEGMENT_BITS;

pub(crate) struct IdSlab<T> {
    segments: IdMap<u64, Segment<T>>,
    len: usize,
    /// Empty segments kept for reuse.
    spare: Vec<Segment<T>>,
}

/// How many empty segments a slab keeps for reuse.
const SPARE_SEGMENTS: usize = 2;

struct Segment<T> {
    slots: Box<[Option<T>]>,
    filled: usize,
}

fn split(id: u64) -> (u64, usize) {
    (id >> SEGMENT_BITS, (id as usize) & (SEGMENT_LEN - 1))
}

impl<T> Default for IdSlab<T> {
    fn default() -> Self {
        IdSlab {
            segments: IdMap::default(),
            len: 0,
            spare: Vec::new(),
        }
    }
}

impl<T> IdSlab<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Stores `value` under `id`, returning the value it replaces.
    pub(crate) fn insert(&mut self, id: u64, value: T) -> Option<T> {
        let (segment, slot) = split(id);
        let spare = &mut self.spare;
        let segment = self.segments.entry(segment).or_insert_with(|| {
            spare.pop().unwrap_or_else(|| Segment {
                slots: (0..SEGMENT_LEN).map(|_| None).collect(),
                filled: 0,
            })
        });
        let previous = segment.slots[slot].replace(value);
        if previous.is_none() {
            segment.filled += 1;
            self.len += 1;
        }
        previous
    }

    pub(crate) fn get(&self, id: u64) -> Option<&T> {
        let (segment, slot) = split(id);
        self.segments.get(&segment)?.slots[slot].as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        let (segment, slot) = split(id);
        self.segments.get_mut(&segment)?.slots[slot].as_mut()
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        let (index, slot) = split(id);
        let segment = self.segments.get_mut(&index)?;
        let value = segment.slots[slot].take()?;
        segment.filled -= 1;
        self.len -= 1;
        if segment.filled == 0 {
            if let Some(empty) = self.segments.remove(&index) {
                if self.spare.len() < SPARE_SEGMENTS {
                    self.spare.push(empty);
                }
            }
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map_and_frees_empty_segments() {
        let mut slab = IdSlab::default();
        for id in 0..10_000u64 {
            assert_eq!(slab.insert(id, id * 2), None);
        }
        assert_eq!(slab.insert(5, 0), Some(10));
        assert_eq!(slab.len(), 10_000);
        assert_eq!(slab.get(9_999), Some(&19_998));
        assert_eq!(slab.get(10_000), None);
        *slab.get_mut(7).unwrap() += 1;
        assert_eq!(slab.get(7), Some(&15));
        for id in 0..SEGMENT_LEN as u64 {
            assert!(slab.remove(id).is_some());
        }
        assert_eq!(slab.remove(0), None);
        assert!(!slab.contains(0));
        assert_eq!(slab.segments.len(), 2);
        assert_eq!(slab.len(), 10_000 - SEGMENT_LEN);
        // The emptied segment is kept and reused for the next new one.
        assert_eq!(slab.spare.len(), 1);
        slab.insert(100_000, 1);
        assert!(slab.spare.is_empty());
    }

    #[test]
    fn far_apart_ids_cost_a_segment_each() {
        let mut slab = IdSlab::default();
        slab.insert(1, 'a');
        slab.insert(u64::MAX, 'z');
        assert_eq!(slab.segments.len(), 2);
        assert_eq!(slab.get(u64::MAX), Some(&'z'));
    }
}
