//! Dropping events whose message id was accepted before.
//!
//! Ingest answers a repeated id as a success without appending it again, so clients may retry
//! freely. The in-memory deduper keeps a bounded number of recent ids; the durable one (Redis)
//! keeps them for a configured time.

use std::collections::VecDeque;
use std::sync::Arc;

use ahash::AHashSet;

/// Remembers message ids per workspace.
pub trait Deduper: Send {
    /// Records the id; returns false when it was seen before.
    fn first_time(&mut self, workspace: &str, message_id: &str) -> bool;
}

/// Remembers the most recent `capacity` ids.
#[derive(Debug)]
pub struct MemoryDeduper {
    capacity: usize,
    /// One allocation per id, shared by the set and the eviction order.
    seen: AHashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    /// Reused to build the key looked up, so a repeated id allocates nothing.
    key: String,
}

impl MemoryDeduper {
    pub fn new(capacity: usize) -> MemoryDeduper {
        MemoryDeduper {
            capacity: capacity.max(1),
            seen: AHashSet::new(),
            order: VecDeque::new(),
            key: String::new(),
        }
    }
}

impl Deduper for MemoryDeduper {
    fn first_time(&mut self, workspace: &str, message_id: &str) -> bool {
        self.key.clear();
        self.key.push_str(workspace);
        self.key.push('\u{0}');
        self.key.push_str(message_id);
        if self.seen.contains(self.key.as_str()) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        let key: Arc<str> = Arc::from(self.key.as_str());
        self.seen.insert(key.clone());
        self.order.push_back(key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_sighting_is_dropped_and_old_ids_age_out() {
        let mut d = MemoryDeduper::new(2);
        assert!(d.first_time("w", "a"));
        assert!(!d.first_time("w", "a"));
        assert!(d.first_time("other", "a"));
        assert!(d.first_time("w", "b"));
        assert!(d.first_time("w", "a"), "evicted after capacity");
    }
}
