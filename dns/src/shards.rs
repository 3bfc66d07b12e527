//! A hash map split into shards that snapshots share: cloning the map clones only the shard
//! pointers, and a change copies only the shard it touches (copy on write).
//!
//! This is what lets a snapshot of a million names be updated in time proportional to what
//! changed: readers keep the old snapshot, the writer clones it, and the shards left alone stay
//! shared between the two. With about sixteen keys per shard, a change of a few thousand names
//! copies a few tens of thousands of entries.
//!
//! A shard is laid out for a million keys in few allocations: its keys' bytes one after the
//! other in one buffer, their hashes in a second (a lookup scans these sixteen-odd integers,
//! then compares one key), their lengths in a third (a key's place is the sum of the lengths
//! before it) and the values in a fourth, all in entry order. A key costs its bytes, a hash,
//! two bytes of length and its value, with no allocation or offset of its own (at 1.1 million
//! names, 6 bytes a name less than with an offset and length beside each value); copying a
//! shard is four copies of contiguous memory. A removal moves the entries after it up, leaving
//! no bytes behind.
//!
//! Keys are byte strings (names in wire form). The shard is chosen by the high half of the
//! hash, and the low half is what a shard keeps, so the two stay independent. A map may pick
//! shards by a part of each key instead ([`ShardedMap::with_capacity_grouped`]): the zones
//! group a task's names by its service label, so that a change of a thousand tasks copies a
//! few thousand shards, not a few tens of thousands.

use std::sync::Arc;

/// Entries per shard above which the map doubles its shards.
const GROW_AT: usize = 32;
/// The most shards: 2^16, enough for about a million keys at sixteen per shard.
const MAX_SHARD_BITS: u32 = 16;

#[derive(Debug, Clone)]
struct Shard<V> {
    /// The low half of each key's hash, in entry order.
    hashes: Vec<u32>,
    /// Each key's length, in entry order: a key's place in `keys` is the sum of the lengths
    /// before it, found while scanning (a shard holds a few dozen keys), so no entry keeps an
    /// offset.
    lens: Vec<u16>,
    values: Vec<V>,
    /// Every key's bytes, one after the other, in entry order.
    keys: Vec<u8>,
}

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Self {
            hashes: Vec::new(),
            lens: Vec::new(),
            values: Vec::new(),
            keys: Vec::new(),
        }
    }
}

impl<V> Shard<V> {
    /// The index of `key`, whose hash's low half is `tag`, and where its bytes start.
    fn find(&self, tag: u32, key: &[u8]) -> Option<(usize, usize)> {
        let mut start = 0;
        for (i, (&hash, &len)) in self.hashes.iter().zip(&self.lens).enumerate() {
            let end = start + usize::from(len);
            if hash == tag && &self.keys[start..end] == key {
                return Some((i, start));
            }
            start = end;
        }
        None
    }

    /// Every key with its value, in entry order.
    fn entries(&self) -> impl Iterator<Item = (&[u8], &V)> {
        let mut start = 0;
        self.lens
            .iter()
            .zip(&self.values)
            .map(move |(&len, value)| {
                let end = start + usize::from(len);
                let key = &self.keys[start..end];
                start = end;
                (key, value)
            })
    }

    fn push(&mut self, tag: u32, key: &[u8], value: V) -> usize {
        // Keys are DNS names in wire form (at most 255 bytes): a longer one is a caller's bug.
        let len = u16::try_from(key.len()).expect("a shard key is at most 65,535 bytes");
        // Grown by a quarter, not doubled: a map of a million names is built by pushes, and
        // doubling would leave it up to twice its size until `shrink`.
        if self.values.len() == self.values.capacity() {
            let more = (self.values.len() / 4).max(4);
            self.values.reserve_exact(more);
            self.hashes.reserve_exact(more);
            self.lens.reserve_exact(more);
        }
        if self.keys.capacity() - self.keys.len() < key.len() {
            self.keys
                .reserve_exact((self.keys.len() / 4).max(key.len() * 4));
        }
        self.keys.extend_from_slice(key);
        self.hashes.push(tag);
        self.lens.push(len);
        self.values.push(value);
        self.values.len() - 1
    }

    /// Removes entry `index`, whose key starts at `start`; the entries after it move up (a
    /// shard holds a few dozen, so this is a short copy, and leaves no bytes behind).
    fn remove(&mut self, index: usize, start: usize) -> V {
        self.hashes.remove(index);
        let len = usize::from(self.lens.remove(index));
        self.keys.drain(start..start + len);
        self.values.remove(index)
    }

    fn shrink(&mut self) {
        self.hashes.shrink_to_fit();
        self.lens.shrink_to_fit();
        self.values.shrink_to_fit();
        self.keys.shrink_to_fit();
    }
}

/// The part of a key that picks its shard (see [`ShardedMap::with_capacity_grouped`]).
pub type Group = fn(&[u8]) -> &[u8];

/// A copy-on-write sharded map from byte strings to `V`.
#[derive(Debug, Clone)]
pub struct ShardedMap<V> {
    hasher: foldhash::fast::FixedState,
    group: Group,
    shards: Vec<Arc<Shard<V>>>,
    bits: u32,
    len: usize,
}

impl<V: Clone> Default for ShardedMap<V> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<V: Clone> ShardedMap<V> {
    /// A map sized for about `capacity` keys.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_grouped(capacity, |key| key)
    }

    /// A map sized for about `capacity` keys whose shard is picked by the part of each key
    /// that `group` returns: keys of a group share a shard, so a change to all of them copies
    /// one shard, not one per key. Groups should be small (a shard is scanned).
    pub fn with_capacity_grouped(capacity: usize, group: Group) -> Self {
        let mut bits = 0;
        while bits < MAX_SHARD_BITS && (capacity >> bits) > GROW_AT / 2 {
            bits += 1;
        }
        Self {
            // Keys come from cluster state, not from queries: lookups never insert, so a fixed
            // seed gives no one a way to degrade the shards.
            hasher: foldhash::fast::FixedState::with_seed(0x6463_6e65_7464_6e73),
            group,
            shards: (0..1usize << bits).map(|_| Arc::default()).collect(),
            bits,
            len: 0,
        }
    }

    /// The shard index and the tag of `key`.
    fn locate(&self, key: &[u8]) -> (usize, u32) {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key);
        let group = (self.group)(key);
        let by = if group.len() == key.len() {
            hash
        } else {
            self.hasher.hash_one(group)
        };
        let shard = ((by >> 32) as usize) & ((1usize << self.bits) - 1);
        (shard, hash as u32)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        let (index, tag) = self.locate(key);
        let shard = &self.shards[index];
        shard.find(tag, key).map(|(i, _)| &shard.values[i])
    }

    /// The value of `key`, for changing it; copies its shard if another map shares it.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let (index, tag) = self.locate(key);
        // Look first, so a miss does not copy the shard.
        let (i, _) = self.shards[index].find(tag, key)?;
        Some(&mut Arc::make_mut(&mut self.shards[index]).values[i])
    }

    /// The value of `key` for changing it, made by `make` if missing: one lookup where a
    /// `get` then an `insert` would be two. Copies its shard if another map shares it.
    pub fn get_or_insert_with(&mut self, key: &[u8], make: impl FnOnce() -> V) -> &mut V {
        let (index, tag) = self.locate(key);
        let found = self.shards[index].find(tag, key);
        if found.is_none() && self.len + 1 > GROW_AT << self.bits && self.bits < MAX_SHARD_BITS {
            // Grow first, so the entry handed out is where it stays.
            self.grow();
            return self.get_or_insert_with(key, make);
        }
        let shard = Arc::make_mut(&mut self.shards[index]);
        let i = match found {
            Some((i, _)) => i,
            None => {
                self.len += 1;
                shard.push(tag, key, make())
            }
        };
        &mut shard.values[i]
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: &[u8], value: V) -> Option<V> {
        let mut value = Some(value);
        let slot = self.get_or_insert_with(key, || value.take().expect("taken once"));
        value.map(|v| std::mem::replace(slot, v))
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let (index, tag) = self.locate(key);
        let (i, start) = self.shards[index].find(tag, key)?;
        self.len -= 1;
        Some(Arc::make_mut(&mut self.shards[index]).remove(i, start))
    }

    /// Every key and value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.shards.iter().flat_map(|shard| shard.entries())
    }

    /// Gives back the spare capacity of the shards no other map shares (those this map made
    /// or changed since it was cloned): a map built once and kept keeps no growth slack.
    pub fn shrink(&mut self) {
        for shard in &mut self.shards {
            if let Some(shard) = Arc::get_mut(shard) {
                shard.shrink();
            }
        }
    }

    /// As [`ShardedMap::shrink`], and packed: when at least a quarter of the shards are this
    /// map's own (a first load, a large change), they are copied into allocations of their
    /// exact sizes on a thread of their own.
    ///
    /// Why a thread: mimalloc gives each thread its own pages, and the pages of the thread
    /// that built the shards are full of holes its transient allocations left; shrunk or
    /// copied there, the shards fill those holes and keep the pages around them. A new thread
    /// starts with empty pages, so the copies lie packed, and the pages of what they replace
    /// empty out and go back to the system. At 100,000 tasks this is 20 MB of a serving node's
    /// RSS (scale bench: 217 -> 197 MB after the first load).
    pub fn pack(&mut self)
    where
        V: Send + Sync,
    {
        /// Fewer own shards than this are shrunk in place (a thread costs more than they do).
        const PACK_FROM: usize = 256;
        let pack_from = PACK_FROM.max(self.shards.len() / 4);
        // Shared with no other map: `Arc::get_mut` would succeed (no weak pointers are made).
        let own = self
            .shards
            .iter()
            .filter(|s| Arc::strong_count(s) == 1)
            .count();
        if own < pack_from {
            return self.shrink();
        }
        let shards = &mut self.shards;
        let packed = std::thread::scope(|scope| {
            let packing = std::thread::Builder::new()
                .name("shards-pack".into())
                .spawn_scoped(scope, || {
                    for shard in shards.iter_mut() {
                        if Arc::get_mut(shard).is_some() {
                            // A clone has the exact capacity of what it copies.
                            *shard = Arc::new(Shard::clone(shard));
                        }
                    }
                });
            packing.map(|p| p.join().is_ok())
        });
        if !matches!(packed, Ok(true)) {
            // No thread to be had: what is left unpacked shrinks in place.
            self.shrink();
        }
    }

    /// Doubles the shards (rarely: the map grows by placing every key once per doubling).
    fn grow(&mut self) {
        let old = std::mem::take(&mut self.shards);
        self.bits += 1;
        self.shards = (0..1usize << self.bits).map(|_| Arc::default()).collect();
        for shard in old {
            let shard = Arc::try_unwrap(shard).unwrap_or_else(|shared| (*shared).clone());
            for (key, value) in shard.entries() {
                let (index, tag) = self.locate(key);
                Arc::make_mut(&mut self.shards[index]).push(tag, key, value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Vec<u8> {
        format!("name-{i}").into_bytes()
    }

    #[test]
    fn behaves_as_a_map_while_growing() {
        let mut map = ShardedMap::default();
        for i in 0..5000 {
            assert_eq!(map.insert(&key(i), i), None);
        }
        assert!(map.bits > 0, "the map grew its shards");
        assert_eq!(map.len(), 5000);
        assert_eq!(map.insert(&key(7), 70), Some(7));
        for i in (0..5000).step_by(2) {
            assert!(map.remove(&key(i)).is_some());
        }
        assert_eq!(map.remove(&key(0)), None);
        assert_eq!(map.len(), 2500);
        for i in 0..5000 {
            let want = (i % 2 == 1).then_some(if i == 7 { 70 } else { i });
            assert_eq!(map.get(&key(i)).copied(), want, "{i}");
        }
        assert_eq!(map.iter().count(), 2500);
    }

    #[test]
    fn get_or_insert_finds_or_makes_while_growing() {
        let mut map = ShardedMap::default();
        for i in 0..5000 {
            *map.get_or_insert_with(&key(i), || 0) += i;
            *map.get_or_insert_with(&key(i / 2), || 0) += 1;
        }
        assert!(map.bits > 0, "the map grew its shards");
        assert_eq!(map.len(), 5000);
        for i in 0..5000 {
            // i itself, plus one for each of 2i and 2i + 1 below 5000.
            let halves = [2 * i, 2 * i + 1].iter().filter(|&&j| j < 5000).count();
            assert_eq!(map.get(&key(i)).copied(), Some(i + halves), "{i}");
        }
    }

    #[test]
    fn a_clone_is_unaffected_by_changes_to_the_original() {
        let mut map = ShardedMap::with_capacity(1000);
        for i in 0..1000 {
            map.insert(&key(i), i);
        }
        let before = map.clone();
        *map.get_mut(&key(1)).unwrap() = 100;
        map.remove(&key(2));
        map.insert(&key(5000), 5000);
        assert_eq!(before.get(&key(1)), Some(&1));
        assert_eq!(before.get(&key(2)), Some(&2));
        assert_eq!(before.get(&key(5000)), None);
        assert_eq!(map.get(&key(1)), Some(&100));
        // Only the touched shards were copied.
        let shared = map
            .shards
            .iter()
            .zip(&before.shards)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert!(
            shared >= map.shards.len() - 3,
            "{shared} of {}",
            map.shards.len()
        );
    }

    #[test]
    fn packing_copies_the_own_shards_at_their_sizes() {
        let mut map = ShardedMap::with_capacity(20_000);
        for i in 0..20_000 {
            map.insert(&key(i), i);
        }
        let before = map.clone();
        for i in (0..20_000).step_by(2) {
            map.insert(&key(i), i + 1);
        }
        map.pack();
        let (mut own, mut shared) = (0, 0);
        for (now, then) in map.shards.iter().zip(&before.shards) {
            if Arc::ptr_eq(now, then) {
                shared += 1;
            } else {
                own += 1;
                assert_eq!(now.values.capacity(), now.values.len());
                assert_eq!(now.keys.capacity(), now.keys.len());
            }
        }
        assert!(
            own >= map.shards.len() / 4,
            "{own} own shards, {shared} shared"
        );
        for i in 0..20_000 {
            let want = if i % 2 == 0 { i + 1 } else { i };
            assert_eq!(map.get(&key(i)), Some(&want));
            assert_eq!(before.get(&key(i)), Some(&i));
        }
    }

    #[test]
    fn keys_of_a_group_share_a_shard() {
        // The group: what precedes the first dot.
        let group: Group = |k| k.split(|&b| b == b'.').next().unwrap_or(k);
        let mut map = ShardedMap::with_capacity_grouped(0, group);
        for i in 0..5000 {
            for suffix in ["a", "b", "c"] {
                map.insert(format!("g{i}.{suffix}").as_bytes(), i);
            }
        }
        assert!(map.bits > 4, "the map grew its shards");
        for i in 0..5000 {
            let shards: Vec<usize> = ["a", "b", "c"]
                .iter()
                .map(|s| map.locate(format!("g{i}.{s}").as_bytes()).0)
                .collect();
            assert!(shards.iter().all(|&s| s == shards[0]), "{i}: {shards:?}");
            assert_eq!(map.get(format!("g{i}.b").as_bytes()), Some(&i));
        }
        assert_eq!(map.len(), 15000);
    }

    #[test]
    fn removed_keys_leave_no_bytes_and_every_key_stays_readable() {
        let mut map = ShardedMap::with_capacity(0);
        // One shard: churn through many keys, keeping a few.
        for round in 0..50 {
            for i in 0..8 {
                map.insert(&key(round * 100 + i), round * 100 + i);
            }
            if round > 0 {
                for i in 0..8 {
                    assert_eq!(
                        map.remove(&key((round - 1) * 100 + i)),
                        Some((round - 1) * 100 + i)
                    );
                }
            }
        }
        assert_eq!(map.len(), 8);
        let shard = &map.shards[0];
        let live: usize = shard.lens.iter().map(|&l| usize::from(l)).sum();
        assert_eq!(shard.keys.len(), live, "removed keys leave no bytes behind");
        let mut keys: Vec<Vec<u8>> = map.iter().map(|(k, _)| k.to_vec()).collect();
        keys.sort();
        let mut want: Vec<Vec<u8>> = (0..8).map(|i| key(4900 + i)).collect();
        want.sort();
        assert_eq!(keys, want);
        map.shrink();
        assert_eq!(map.shards[0].values.capacity(), 8);
        map.insert(&key(1), 1);
        map.pack();
        assert_eq!(map.shards[0].values.capacity(), 9, "few own shards: shrunk");
        for i in 0..8 {
            assert_eq!(map.get(&key(4900 + i)), Some(&(4900 + i)));
        }
    }
}
