//! Bounded caches shared by every node: headers for lightning-block-sync, blocks for catch-up.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

use bitcoin::BlockHash;
use lightning_block_sync::poll::ValidatedBlockHeader;
use lightning_block_sync::Cache;

/// A small least-recently-inserted map: evicts the oldest insert once `capacity` is reached.
/// Insertion order is enough here because blocks are wanted in chain order.
pub struct Lru<K, V> {
    inner: Mutex<(HashMap<K, V>, VecDeque<K>)>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> Lru<K, V> {
    pub fn new(capacity: usize) -> Self {
        Lru {
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.get(key).cloned()
    }

    pub fn insert(&self, key: K, value: V) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *guard;
        if map.insert(key.clone(), value).is_none() {
            order.push_back(key);
        }
        while map.len() > self.capacity {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Header cache for `SpvClient` and `synchronize_listeners`, bounded so a long-running host does
/// not grow without limit; evicted headers are simply fetched again.
pub struct HeaderCache {
    map: HashMap<BlockHash, ValidatedBlockHeader>,
    order: VecDeque<BlockHash>,
    capacity: usize,
}

impl HeaderCache {
    pub fn new(capacity: usize) -> Self {
        HeaderCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(16),
        }
    }
}

impl Cache for HeaderCache {
    fn look_up(&self, block_hash: &BlockHash) -> Option<&ValidatedBlockHeader> {
        self.map.get(block_hash)
    }

    fn block_connected(&mut self, block_hash: BlockHash, block_header: ValidatedBlockHeader) {
        if self.map.insert(block_hash, block_header).is_none() {
            self.order.push_back(block_hash);
        }
        while self.map.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }

    fn block_disconnected(&mut self, block_hash: &BlockHash) -> Option<ValidatedBlockHeader> {
        self.map.remove(block_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_is_bounded() {
        let lru = Lru::new(2);
        lru.insert(1, "a");
        lru.insert(2, "b");
        lru.insert(3, "c");
        assert_eq!(lru.len(), 2);
        assert_eq!(lru.get(&1), None);
        assert_eq!(lru.get(&3), Some("c"));
    }
}
