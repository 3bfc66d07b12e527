//! A hash map split into shards that snapshots share: cloning the map clones only the shard
//! pointers, and a change copies only the shard it touches (copy on write).
//!
//! This is what lets a snapshot of a million names be updated in time proportional to what
//! changed: readers keep the old snapshot, the writer clones it, and the shards left alone stay
//! shared between the two. With about sixteen keys per shard, a change of a few thousand names
//! copies a few tens of thousands of entries, each a pair of reference counts.
//!
//! Keys are byte strings (names in wire form). The shard is chosen by middle bits of the hash,
//! so the bits each shard's table uses (low bits for the bucket, top bits for the tag) stay
//! spread out within a shard.

use std::sync::Arc;

use hashbrown::HashTable;

/// Entries per shard above which the map doubles its shards.
const GROW_AT: usize = 32;
/// The most shards: 2^16, enough for about a million keys at sixteen per shard.
const MAX_SHARD_BITS: u32 = 16;

type Shard<V> = HashTable<(Arc<[u8]>, V)>;

/// A copy-on-write sharded map from byte strings to `V`.
#[derive(Debug, Clone)]
pub struct ShardedMap<V> {
    hasher: foldhash::fast::FixedState,
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
        let mut bits = 0;
        while bits < MAX_SHARD_BITS && (capacity >> bits) > GROW_AT / 2 {
            bits += 1;
        }
        Self {
            // Keys come from cluster state, not from queries: lookups never insert, so a fixed
            // seed gives no one a way to degrade the tables.
            hasher: foldhash::fast::FixedState::with_seed(0x6463_6e65_7464_6e73),
            shards: (0..1usize << bits).map(|_| Arc::default()).collect(),
            bits,
            len: 0,
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    fn shard_of(&self, hash: u64) -> usize {
        ((hash >> 32) as usize) & ((1usize << self.bits) - 1)
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
        let hash = self.hash(key);
        self.shards[self.shard_of(hash)]
            .find(hash, |(k, _)| **k == *key)
            .map(|(_, v)| v)
    }

    /// The value of `key`, for changing it; copies its shard if another map shares it.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let hash = self.hash(key);
        let index = self.shard_of(hash);
        // Look first, so a miss does not copy the shard.
        self.shards[index].find(hash, |(k, _)| **k == *key)?;
        Arc::make_mut(&mut self.shards[index])
            .find_mut(hash, |(k, _)| **k == *key)
            .map(|(_, v)| v)
    }

    /// The value of `key` for changing it, made by `make` if missing: one lookup where a
    /// `get` then an `insert` would be two. Copies its shard if another map shares it.
    pub fn get_or_insert_with(&mut self, key: &[u8], make: impl FnOnce() -> V) -> &mut V {
        let hash = self.hash(key);
        let index = self.shard_of(hash);
        let found = self.shards[index]
            .find(hash, |(k, _)| **k == *key)
            .is_some();
        if !found && self.len + 1 > GROW_AT << self.bits && self.bits < MAX_SHARD_BITS {
            // Grow first, so the entry handed out is where it stays.
            self.grow();
            return self.get_or_insert_with(key, make);
        }
        let Self {
            hasher,
            shards,
            len,
            ..
        } = self;
        let shard = Arc::make_mut(&mut shards[index]);
        if !found {
            *len += 1;
            shard.insert_unique(hash, (key.into(), make()), |(k, _)| {
                use std::hash::BuildHasher;
                hasher.hash_one(&**k)
            });
        }
        let (_, value) = shard
            .find_mut(hash, |(k, _)| **k == *key)
            .expect("the key was just found or inserted");
        value
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: Arc<[u8]>, value: V) -> Option<V> {
        let hash = self.hash(&key);
        let index = self.shard_of(hash);
        let Self { hasher, shards, .. } = self;
        let shard = Arc::make_mut(&mut shards[index]);
        if let Some((_, old)) = shard.find_mut(hash, |(k, _)| *k == key) {
            return Some(std::mem::replace(old, value));
        }
        shard.insert_unique(hash, (key, value), |(k, _)| {
            use std::hash::BuildHasher;
            hasher.hash_one(&**k)
        });
        self.len += 1;
        if self.len > GROW_AT << self.bits && self.bits < MAX_SHARD_BITS {
            self.grow();
        }
        None
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let hash = self.hash(key);
        let index = self.shard_of(hash);
        self.shards[index].find(hash, |(k, _)| **k == *key)?;
        let shard = Arc::make_mut(&mut self.shards[index]);
        let (entry, _) = shard.find_entry(hash, |(k, _)| **k == *key).ok()?.remove();
        self.len -= 1;
        Some(entry.1)
    }

    /// Every key and value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<[u8]>, &V)> {
        self.shards
            .iter()
            .flat_map(|shard| shard.iter().map(|(k, v)| (k, v)))
    }

    /// Doubles the shards (rarely: the map grows by re-inserting every key once per doubling).
    fn grow(&mut self) {
        let old = std::mem::take(&mut self.shards);
        self.bits += 1;
        self.shards = (0..1usize << self.bits).map(|_| Arc::default()).collect();
        self.len = 0;
        for shard in old {
            let entries = Arc::try_unwrap(shard).unwrap_or_else(|shared| (*shared).clone());
            for (key, value) in entries {
                self.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Arc<[u8]> {
        format!("name-{i}").into_bytes().into()
    }

    #[test]
    fn behaves_as_a_map_while_growing() {
        let mut map = ShardedMap::default();
        for i in 0..5000 {
            assert_eq!(map.insert(key(i), i), None);
        }
        assert!(map.bits > 0, "the map grew its shards");
        assert_eq!(map.len(), 5000);
        assert_eq!(map.insert(key(7), 70), Some(7));
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
            map.insert(key(i), i);
        }
        let before = map.clone();
        *map.get_mut(&key(1)).unwrap() = 100;
        map.remove(&key(2));
        map.insert(key(5000), 5000);
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
}
