//! [`RecentIds`]: the ids a follower of events has already handled, so that
//! a re-opened subscription (which reads the backlog again) does not handle
//! the same message twice. Bounded: the oldest are forgotten first.

use std::collections::{HashSet, VecDeque};

/// A bounded set of ids, forgetting the oldest first.
#[derive(Debug)]
pub struct RecentIds {
    capacity: usize,
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    /// A set that remembers at most `capacity` ids (at least one).
    pub fn new(capacity: usize) -> RecentIds {
        RecentIds {
            capacity: capacity.max(1),
            ids: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `id`; whether it is new.
    pub fn insert(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back(id.to_owned());
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }

    /// Whether `id` is remembered.
    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_remembered_until_the_oldest_are_forgotten() {
        let mut recent = RecentIds::new(2);
        assert!(recent.insert("a"));
        assert!(!recent.insert("a"));
        assert!(recent.insert("b"));
        assert!(recent.insert("c"));
        assert!(!recent.contains("a"), "the oldest went first");
        assert!(recent.contains("b") && recent.contains("c"));
        assert!(recent.insert("a"), "a forgotten id is new again");
    }
}
