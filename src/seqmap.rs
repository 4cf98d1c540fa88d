//! A map for per-series state that is walked in the same order again and again: a scrape
//! lists its series in the same order every time, and each stage after it keeps that order.
//! Entries are stored in insertion order (an `IndexMap`), and a lookup first compares the
//! entry it found last and the one after it, so a repeated walk reads memory in order with
//! one key comparison per lookup instead of a hash probe to a random place (with tens of
//! thousands of series, a cache miss each). Any other key falls back to the hash index.

use std::hash::Hash;

use indexmap::IndexMap;

use crate::hash::FxBuildHasher;

pub struct SeqMap<K, V> {
    map: IndexMap<K, V, FxBuildHasher>,
    /// Position of the entry last found or inserted.
    last: usize,
}

impl<K, V> Default for SeqMap<K, V> {
    fn default() -> Self {
        SeqMap {
            map: IndexMap::default(),
            last: 0,
        }
    }
}

impl<K: Hash + Eq, V> SeqMap<K, V> {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The position of `key`: the last position or the next when either holds it, else
    /// found through the hash index.
    #[inline]
    fn position(&mut self, key: &K) -> Option<usize> {
        let at = |i: usize| self.map.get_index(i).is_some_and(|(k, _)| k == key);
        let i = if at(self.last + 1) {
            self.last + 1
        } else if at(self.last) {
            self.last
        } else {
            self.map.get_index_of(key)?
        };
        self.last = i;
        Some(i)
    }

    pub fn contains_key(&mut self, key: &K) -> bool {
        self.position(key).is_some()
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.get_full_mut(key).map(|(_, v)| v)
    }

    /// The entry and its position, which stays until an entry is removed.
    pub fn get_full_mut(&mut self, key: &K) -> Option<(usize, &mut V)> {
        let i = self.position(key)?;
        self.map.get_index_mut(i).map(|(_, v)| (i, v))
    }

    /// The entry at a position.
    pub fn get_index(&self, i: usize) -> Option<&V> {
        self.map.get_index(i).map(|(_, v)| v)
    }

    /// A lookup that does not move the guess (for a shared borrow).
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.insert_full(key, value).1
    }

    /// Inserts or replaces; returns the entry's position and the value it replaced.
    pub fn insert_full(&mut self, key: K, value: V) -> (usize, Option<V>) {
        let (i, old) = self.map.insert_full(key, value);
        self.last = i;
        (i, old)
    }

    /// Removes an entry; the last entry takes its position.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.map.swap_remove(key)
    }

    /// Keeps the entries for which `keep` is true, in their order.
    pub fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool) {
        self.map.retain(keep);
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lookups in order, out of order, after removals and for missing keys all answer
    /// what a plain map answers.
    #[test]
    fn answers_as_a_hash_map_whatever_the_order() {
        let mut m = SeqMap::default();
        let mut reference = std::collections::HashMap::new();
        for k in 0..1000u64 {
            m.insert(k * 7, k);
            reference.insert(k * 7, k);
        }
        let mut order: Vec<u64> = (0..1400).map(|k| k * 5).collect();
        for round in 0..4 {
            if round == 2 {
                order.reverse();
                m.retain(|k, _| k % 3 != 0);
                reference.retain(|k, _| k % 3 != 0);
                m.remove(&14);
                reference.remove(&14);
            }
            for k in &order {
                assert_eq!(m.get_mut(k).copied(), reference.get(k).copied(), "{k}");
                assert_eq!(m.contains_key(k), reference.contains_key(k));
                assert_eq!(m.get(k), reference.get(k));
            }
        }
        assert_eq!(m.len(), reference.len());
        let (at, old) = m.insert_full(10_000, 1);
        assert_eq!((m.get_index(at), old), (Some(&1), None));
        assert_eq!(m.get_full_mut(&10_000).map(|(i, _)| i), Some(at));
        m.clear();
        assert!(m.is_empty() && m.get_mut(&7).is_none());
    }
}
