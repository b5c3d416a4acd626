//! Timers in memory: the embedded store for replay, tests and single-pod deployments.

use std::collections::BTreeMap;

use ahash::AHashMap;
use beckon_core::{Timer, Ts};

use crate::TimerStore;

/// Workspace, user and timer id.
type Key = (String, String, String);

/// What a pending timer holds beyond its key and due time; the timer is put back together
/// when it fires, so scheduling copies the key once instead of the whole timer.
#[derive(Debug)]
struct Pending {
    journey: String,
    instance: u64,
    trace: Option<String>,
}

#[derive(Debug, Default)]
pub struct MemoryTimers {
    by_due: BTreeMap<(Ts, Key), Pending>,
    /// ahash with a per-process random key: user ids come from clients.
    due_of: AHashMap<Key, Ts>,
    /// Reused to look timers up by id, so a cancel allocates nothing.
    probe: Key,
}

impl MemoryTimers {
    pub fn new() -> MemoryTimers {
        MemoryTimers::default()
    }
}

impl TimerStore for MemoryTimers {
    fn schedule(&mut self, timer: Timer) {
        let Timer {
            id,
            workspace,
            user,
            due,
            journey,
            instance,
            trace,
        } = timer;
        let key = (workspace, user, id);
        if let Some(old) = self.due_of.insert(key.clone(), due) {
            self.by_due.remove(&(old, key.clone()));
        }
        let pending = Pending {
            journey,
            instance,
            trace,
        };
        self.by_due.insert((due, key), pending);
    }

    fn cancel(&mut self, workspace: &str, user: &str, id: &str) -> bool {
        let (w, u, i) = &mut self.probe;
        for (to, from) in [(w, workspace), (u, user), (i, id)] {
            to.clear();
            to.push_str(from);
        }
        let Some(due) = self.due_of.remove(&self.probe) else {
            return false;
        };
        let probe = (due, std::mem::take(&mut self.probe));
        let removed = self.by_due.remove(&probe).is_some();
        self.probe = probe.1;
        removed
    }

    /// Walks every timer: forgetting is rare, and an index by user would cost every
    /// schedule and cancel.
    fn cancel_user(&mut self, workspace: &str, user: &str) -> usize {
        let before = self.due_of.len();
        self.due_of
            .retain(|(w, u, _), _| !(w == workspace && u == user));
        self.by_due
            .retain(|(_, (w, u, _)), _| !(w == workspace && u == user));
        before - self.due_of.len()
    }

    fn pop_due(&mut self, now: Ts, limit: usize) -> Vec<Timer> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(entry) = self.by_due.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            let ((due, key), pending) = entry.remove_entry();
            self.due_of.remove(&key);
            let (workspace, user, id) = key;
            out.push(Timer {
                id,
                workspace,
                user,
                due,
                journey: pending.journey,
                instance: pending.instance,
                trace: pending.trace,
            });
        }
        out
    }

    fn next_due(&self) -> Option<Ts> {
        self.by_due.first_key_value().map(|((due, _), _)| *due)
    }

    fn len(&self) -> usize {
        self.due_of.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(user: &str, id: &str, due: i64) -> Timer {
        Timer {
            id: id.to_string(),
            workspace: "w".into(),
            user: user.to_string(),
            due: Ts(due),
            journey: "j".into(),
            instance: 0,
            trace: None,
        }
    }

    #[test]
    fn fires_in_due_order_and_only_when_due() {
        let mut t = MemoryTimers::new();
        t.schedule(timer("b", "1", 20));
        t.schedule(timer("a", "1", 10));
        t.schedule(timer("c", "1", 30));
        assert_eq!(t.next_due(), Some(Ts(10)));
        let fired: Vec<_> = t.pop_due(Ts(20), 10).into_iter().map(|t| t.user).collect();
        assert_eq!(fired, ["a", "b"]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn cancel_user_removes_only_that_users_timers() {
        let mut t = MemoryTimers::new();
        t.schedule(timer("a", "x", 10));
        t.schedule(timer("a", "y", 30));
        t.schedule(timer("b", "x", 20));
        assert_eq!(t.cancel_user("w", "a"), 2);
        assert_eq!(t.len(), 1);
        let left: Vec<_> = t.pop_due(Ts(100), 10).into_iter().map(|t| t.user).collect();
        assert_eq!(left, ["b"]);
    }

    #[test]
    fn same_id_replaces_and_cancel_removes() {
        let mut t = MemoryTimers::new();
        t.schedule(timer("a", "1", 10));
        t.schedule(timer("a", "1", 50));
        assert_eq!(t.len(), 1);
        assert!(t.pop_due(Ts(10), 10).is_empty());
        assert!(t.cancel("w", "a", "1"));
        assert!(!t.cancel("w", "a", "1"));
        assert!(t.is_empty());
    }
}
