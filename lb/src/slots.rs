//! Allocation of the datapath's array slots: contiguous ranges of backend slots (one per VIP's
//! backend set) and single counter ids. Pure bookkeeping; the maps are written by
//! [`crate::datapath`].

use std::collections::BTreeMap;
use std::ops::Range;

/// Hands out contiguous ranges of `0..capacity`, first fit, merging neighbours on free.
#[derive(Debug, Clone)]
pub struct RangeAllocator {
    capacity: u32,
    /// Free ranges: start → length, never adjacent to each other.
    free: BTreeMap<u32, u32>,
}

impl RangeAllocator {
    /// All of `0..capacity` free.
    pub fn new(capacity: u32) -> Self {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Self { capacity, free }
    }

    /// A free range of `len` slots (`len` > 0), or `None` if no free run is that long.
    pub fn allocate(&mut self, len: u32) -> Option<Range<u32>> {
        if len == 0 {
            return Some(0..0);
        }
        let (&start, &free_len) = self.free.iter().find(|&(_, &l)| l >= len)?;
        self.free.remove(&start);
        if free_len > len {
            self.free.insert(start + len, free_len - len);
        }
        Some(start..start + len)
    }

    /// Returns `range` (from [`Self::allocate`]) to the free pool.
    pub fn free(&mut self, range: Range<u32>) {
        if range.is_empty() {
            return;
        }
        debug_assert!(range.end <= self.capacity);
        let (mut start, mut len) = (range.start, range.end - range.start);
        if let Some((&prev, &prev_len)) = self.free.range(..start).next_back()
            && prev + prev_len == start
        {
            self.free.remove(&prev);
            start = prev;
            len += prev_len;
        }
        if let Some(next_len) = self.free.remove(&(start + len)) {
            len += next_len;
        }
        self.free.insert(start, len);
    }

    /// Slots not handed out.
    pub fn free_slots(&self) -> u32 {
        self.free.values().sum()
    }
}

/// Hands out single ids of `0..capacity`, reusing freed ones last-in first-out.
#[derive(Debug, Clone)]
pub struct IdAllocator {
    capacity: u32,
    next: u32,
    free: Vec<u32>,
}

impl IdAllocator {
    pub fn new(capacity: u32) -> Self {
        Self {
            capacity,
            next: 0,
            free: Vec::new(),
        }
    }

    /// A free id, or `None` when all are in use.
    pub fn allocate(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        (self.next < self.capacity).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    pub fn free(&mut self, id: u32) {
        self.free.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_first_fit_and_merge_on_free() {
        let mut a = RangeAllocator::new(10);
        assert_eq!(a.allocate(3), Some(0..3));
        assert_eq!(a.allocate(3), Some(3..6));
        assert_eq!(a.allocate(3), Some(6..9));
        assert_eq!(a.allocate(2), None, "only one slot left");
        a.free(3..6);
        assert_eq!(a.allocate(4), None, "3..6 and 9..10 are not adjacent");
        a.free(0..3);
        assert_eq!(a.allocate(6), Some(0..6), "0..3 merged with 3..6");
        a.free(6..9);
        a.free(0..6);
        assert_eq!(a.free_slots(), 10);
        assert_eq!(a.allocate(10), Some(0..10), "everything merged back");
    }

    #[test]
    fn empty_ranges_cost_nothing() {
        let mut a = RangeAllocator::new(0);
        assert_eq!(a.allocate(0), Some(0..0));
        a.free(0..0);
        assert_eq!(a.allocate(1), None);
    }

    #[test]
    fn random_allocations_never_overlap() {
        // xorshift64: deterministic, good enough to shuffle the order of operations.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut a = RangeAllocator::new(1000);
        let mut held: Vec<Range<u32>> = Vec::new();
        for _ in 0..10_000 {
            if next(2) == 0 && !held.is_empty() {
                let i = next(held.len() as u64) as usize;
                a.free(held.swap_remove(i));
            } else if let Some(r) = a.allocate(1 + next(39) as u32) {
                assert!(held.iter().all(|h| r.end <= h.start || h.end <= r.start));
                held.push(r);
            }
            let used: u32 = held.iter().map(|r| r.end - r.start).sum();
            assert_eq!(used + a.free_slots(), 1000);
        }
    }

    #[test]
    fn ids_are_reused_and_bounded() {
        let mut ids = IdAllocator::new(2);
        assert_eq!(ids.allocate(), Some(0));
        assert_eq!(ids.allocate(), Some(1));
        assert_eq!(ids.allocate(), None);
        ids.free(0);
        assert_eq!(ids.allocate(), Some(0));
    }
}
