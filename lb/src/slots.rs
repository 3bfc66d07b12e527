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

/// How many slots each backend of a set gets so that a uniform draw over the slots picks each
/// in proportion to its weight: the weights divided by their greatest common divisor, scaled
/// down to `max` slots in all when they add up to more (every backend keeps at least one slot,
/// so `weights.len()` must be at most `max`). Weights are > 0.
pub fn slot_counts(weights: &[u32], max: u32) -> Vec<u32> {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let g = weights
        .iter()
        .fold(0u64, |g, &w| gcd(g, u64::from(w)))
        .max(1);
    let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
    let total: u64 = reduced.iter().sum();
    let max = u64::from(max);
    if total <= max {
        return reduced.iter().map(|&n| n as u32).collect();
    }
    // Largest remainders: each gets the floor of its quota, the slots left go to the largest
    // fractions; every backend keeps at least one slot.
    let mut counts: Vec<u64> = reduced.iter().map(|&w| (w * max / total).max(1)).collect();
    let mut sum: u64 = counts.iter().sum();
    let mut by_remainder: Vec<usize> = (0..reduced.len()).collect();
    by_remainder.sort_by_key(|&i| std::cmp::Reverse(reduced[i] * max % total));
    for &i in by_remainder.iter().cycle().take(reduced.len()) {
        if sum >= max {
            break;
        }
        if reduced[i] * max / total > 0 {
            counts[i] += 1;
            sum += 1;
        }
    }
    // Raising the smallest to one slot may overshoot: take it back from the largest.
    while sum > max {
        let Some(largest) = counts.iter_mut().max() else {
            break;
        };
        if *largest <= 1 {
            break;
        }
        *largest -= 1;
        sum -= 1;
    }
    counts.iter().map(|&n| n as u32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_weights() {
        assert_eq!(slot_counts(&[1, 1, 1], 4096), [1, 1, 1]);
        assert_eq!(slot_counts(&[100, 300], 4096), [1, 3]);
        assert_eq!(slot_counts(&[2, 3, 5], 4096), [2, 3, 5]);
        assert_eq!(slot_counts(&[], 4096), Vec::<u32>::new());
        // Too many slots: scaled down, proportions kept, every backend at least one slot.
        assert_eq!(slot_counts(&[1000, 3000], 100), [1, 3]);
        assert_eq!(slot_counts(&[1000, 2999], 100), [25, 75]);
        let counts = slot_counts(&[1, 1000, 1000, 997], 8);
        assert_eq!(counts.iter().sum::<u32>(), 8, "{counts:?}");
        assert!(counts.iter().all(|&c| c >= 1), "{counts:?}");
        let many = vec![7u32; 4096];
        assert_eq!(slot_counts(&many, 4096), vec![1; 4096]);
        let skewed: Vec<u32> = (1..=4096).collect();
        let counts = slot_counts(&skewed, 4096);
        assert_eq!(counts.iter().sum::<u32>(), 4096);
        assert!(counts.iter().all(|&c| c >= 1));
    }

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
