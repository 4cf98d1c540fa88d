//! Decisions remembered after a trace's spans are released, so late spans follow their trace.

use std::collections::HashMap;

use super::store::TraceId;

/// What is remembered about a decided trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remembered {
    /// Index of the deciding policy, if any.
    pub policy: Option<u16>,
    /// When it was decided, in ms since the sampler's epoch.
    pub decided_ms: u64,
}

#[derive(Clone, Copy)]
struct Entry {
    id: TraceId,
    policy: u16,
    decided_ms: u64,
}

const NO_POLICY: u16 = u16::MAX;

/// A bounded set of trace ids and their decision. When full, the oldest entry is forgotten —
/// first in, first out, where the collector's LRU would forget the least recently read; late
/// spans come soon after the decision, so the two forget nearly the same entries, and a ring
/// needs no links (about 60 bytes an entry with its index).
pub struct DecisionCache {
    capacity: usize,
    ring: Vec<Entry>,
    next: usize,
    index: HashMap<TraceId, u32>,
}

impl DecisionCache {
    pub fn new(capacity: usize) -> DecisionCache {
        // Grown as decisions come, so a large cache costs nothing until it is used.
        DecisionCache {
            capacity: capacity.min(u32::MAX as usize),
            ring: Vec::new(),
            next: 0,
            index: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn get(&self, id: &TraceId) -> Option<Remembered> {
        let slot = *self.index.get(id)? as usize;
        let e = self.ring.get(slot)?;
        Some(Remembered {
            policy: (e.policy != NO_POLICY).then_some(e.policy),
            decided_ms: e.decided_ms,
        })
    }

    pub fn put(&mut self, id: TraceId, policy: Option<usize>, decided_ms: u64) {
        if self.capacity == 0 {
            return;
        }
        let entry = Entry {
            id,
            policy: policy
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(NO_POLICY),
            decided_ms,
        };
        if let Some(&slot) = self.index.get(&id) {
            self.ring[slot as usize] = entry;
            return;
        }
        let slot = if self.ring.len() < self.capacity {
            self.ring.push(entry);
            self.ring.len() - 1
        } else {
            let slot = self.next;
            let old = std::mem::replace(&mut self.ring[slot], entry);
            if self.index.get(&old.id) == Some(&(slot as u32)) {
                self.index.remove(&old.id);
            }
            self.next = (slot + 1) % self.capacity;
            slot
        };
        self.index.insert(id, slot as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_when_full() {
        let mut c = DecisionCache::new(2);
        c.put([1; 16], Some(3), 10);
        c.put([2; 16], None, 11);
        assert_eq!(
            c.get(&[1; 16]),
            Some(Remembered {
                policy: Some(3),
                decided_ms: 10
            })
        );
        c.put([3; 16], None, 12);
        assert_eq!(c.get(&[1; 16]), None);
        assert!(c.get(&[2; 16]).is_some());
        assert!(c.get(&[3; 16]).is_some());
        c.put([2; 16], Some(1), 13);
        assert_eq!(c.get(&[2; 16]).unwrap().policy, Some(1));
        assert_eq!(c.len(), 2);
        let mut off = DecisionCache::new(0);
        off.put([1; 16], None, 0);
        assert!(off.get(&[1; 16]).is_none());
    }
}
