//! The Redis key layout of one partition: `<namespace>:{<workspace>:<partition>}:...`.
//!
//! The braces are Redis Cluster's hash tag: only the part inside them picks the slot, so every
//! key of a partition (user records, timers, outbox, log) lives in one slot and a Lua script
//! may touch any of them. Workspace, user and id parts are escaped so that a `{`, `}` or `:`
//! in them can neither move the hash tag nor make two different names build the same key.

use beckon_core::partition::partition_of;

/// The namespace production uses. Tests on a shared server use another one.
pub const DEFAULT_NAMESPACE: &str = "bk";

/// Escapes `%`, `{`, `}` and `:` as `%XX`, leaving every other byte as it is.
pub fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            ':' => out.push_str("%3A"),
            _ => out.push(c),
        }
    }
    out
}

/// The member naming a timer inside its partition's sorted set: the escaped user and id,
/// which cannot collide since neither contains an unescaped `:`.
pub fn timer_member(user: &str, id: &str) -> String {
    format!("{}:{}", escape(user), escape(id))
}

/// Key builder for one (workspace, partition).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(namespace: &str, workspace: &str, partition: u32) -> Keys {
        Keys {
            prefix: format!("{namespace}:{{{}:{partition}}}", escape(workspace)),
        }
    }

    /// The keys of the partition that `user` belongs to.
    pub fn of_user(namespace: &str, workspace: &str, user: &str, partitions: u32) -> Keys {
        Keys::new(
            namespace,
            workspace,
            partition_of(workspace, user, partitions),
        )
    }

    /// `<namespace>:{<workspace>:<partition>}`, shared by every key of the partition.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The user's versioned record (a hash: `v` version, `d` encoded state).
    pub fn state(&self, user: &str) -> String {
        format!("{}:u:{}", self.prefix, escape(user))
    }

    /// Set of the aliases pointing at the user, so forgetting the user finds them.
    pub fn user_aliases(&self, user: &str) -> String {
        format!("{}:u:{}:al", self.prefix, escape(user))
    }

    /// Set of the user's timer members, so forgetting the user needs no scan.
    pub fn user_timers(&self, user: &str) -> String {
        format!("{}:u:{}:t", self.prefix, escape(user))
    }

    /// The user's in-app inbox.
    pub fn user_inbox(&self, user: &str) -> String {
        format!("{}:u:{}:inbox", self.prefix, escape(user))
    }

    /// The gateway's record of one idempotency key (in flight or delivered). Keys are unique
    /// within a workspace and name their user already, so the user is not repeated.
    pub fn sent(&self, idempotency_key: &str) -> String {
        format!("{}:sent:{idempotency_key}", self.prefix)
    }

    /// Set of the user's idempotency keys, so forgetting the user finds them without a scan.
    pub fn sent_by(&self, user: &str) -> String {
        format!("{}:sent-by:{}", self.prefix, escape(user))
    }

    /// Alias lookup: lives in the alias's own partition, since it is found by the alias.
    pub fn alias(&self, alias: &str) -> String {
        format!("{}:al:{}", self.prefix, escape(alias))
    }

    /// Sorted set of pending timers: score = due time in ms, member = [`timer_member`].
    pub fn timers(&self) -> String {
        format!("{}:timers", self.prefix)
    }

    /// Hash of timer bodies (JSON), by member.
    pub fn timer_bodies(&self) -> String {
        format!("{}:timers:body", self.prefix)
    }

    /// Sorted set of claimed timers: score = claim deadline in ms.
    pub fn timers_claimed(&self) -> String {
        format!("{}:timers:claimed", self.prefix)
    }

    /// Stream of effects written together with user state.
    pub fn outbox(&self) -> String {
        format!("{}:outbox", self.prefix)
    }

    /// Stream of the partition's events.
    pub fn log(&self) -> String {
        format!("{}:log", self.prefix)
    }

    /// Marker of an accepted message id, kept for the dedup window.
    pub fn seen(&self, message_id: &str) -> String {
        format!("{}:seen:{}", self.prefix, escape(message_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_and_colons_cannot_move_the_hash_tag() {
        let k = Keys::new("bk", "a}b:{c", 7);
        assert_eq!(k.prefix(), "bk:{a%7Db%3A%7Bc:7}");
        assert_eq!(k.state("u:1"), "bk:{a%7Db%3A%7Bc:7}:u:u%3A1");
        assert_ne!(timer_member("a:b", "c"), timer_member("a", "b:c"));
    }
}
