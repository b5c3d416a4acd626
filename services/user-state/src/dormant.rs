//! Idle users kept in memory in a compact form instead of in a live actor.
//!
//! A live actor costs several kilobytes: the decoded [`UserState`] is a set of maps and deques
//! of owned strings, plus the actor's context and mailbox. An idle user needs none of that
//! until its next trigger, so a partition hibernates users idle for a while: the actor stops,
//! and the state stays here as MessagePack compressed with LZ4, a few hundred bytes. The next
//! trigger decodes it and starts the actor again without a store read.
//!
//! The compression dictionary is the layout of one earlier user of the same partition (field
//! names, event, journey and step names, with every trait and property value blanked, so no
//! user's data stays behind in it). Users of one deployment share most of their names, so the
//! dictionary makes small records compress well. It is chosen once per partition and never
//! changes, so every record can be read back.
//!
//! The records are a cache of what the store holds, never the only copy: only written users
//! hibernate, and the version they were written at comes back with them, so the next write's
//! compare-and-set (and its fencing) is exactly the one the live actor would have made.

use std::collections::HashMap;

use beckon_core::{Ts, UserState};

use crate::error::StateError;

/// A record smaller than this is no good as a dictionary: it names too little.
const MIN_DICTIONARY: usize = 256;
/// LZ4 looks back at most 64 KiB; a larger dictionary would only cost memory.
const MAX_DICTIONARY: usize = 16 * 1024;

/// The first byte of a record: whether it was compressed with the partition's dictionary.
const PLAIN: u8 = 0;
const WITH_DICTIONARY: u8 = 1;

/// One hibernated user.
struct Dormant {
    /// Version last written to the store; the next write expects it.
    stored: u64,
    /// Partition time of the user's last trigger.
    last_used: Ts,
    bytes: Box<[u8]>,
}

/// The hibernated users of one partition, by workspace, then user.
#[derive(Default)]
pub struct Dormitory {
    users: HashMap<String, HashMap<Box<str>, Dormant>>,
    dictionary: Option<Box<[u8]>>,
    len: usize,
    bytes: usize,
}

/// A user woken from hibernation.
pub struct Woken {
    pub state: UserState,
    pub stored: u64,
    pub last_used: Ts,
}

impl Dormitory {
    /// Users hibernated.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of the compact records alone (not counting the map that holds them).
    pub fn record_bytes(&self) -> usize {
        self.bytes
    }

    /// Keeps `state`, last written at version `stored`, in compact form.
    pub fn put(&mut self, state: &UserState, stored: u64, last_used: Ts) -> Result<(), StateError> {
        let raw = rmp_serde::to_vec_named(state).map_err(|e| corrupt(&state.user, e))?;
        if self.dictionary.is_none() && raw.len() >= MIN_DICTIONARY {
            self.dictionary = dictionary_from(state);
        }
        let bytes = match &self.dictionary {
            Some(dict) => compress(WITH_DICTIONARY, &raw, dict),
            None => compress(PLAIN, &raw, &[]),
        };

        let users = self.users.entry(state.workspace.clone()).or_default();
        let record = Dormant {
            stored,
            last_used,
            bytes,
        };
        self.bytes += record.bytes.len();
        match users.insert(state.user.as_str().into(), record) {
            Some(old) => self.bytes -= old.bytes.len(),
            None => self.len += 1,
        }
        Ok(())
    }

    /// Takes a hibernated user out, decoded; `None` when the user is not here.
    pub fn take(&mut self, workspace: &str, user: &str) -> Option<Result<Woken, StateError>> {
        let record = self.users.get_mut(workspace)?.remove(user)?;
        self.len -= 1;
        self.bytes -= record.bytes.len();
        Some(self.decode(user, &record.bytes).map(|state| Woken {
            state,
            stored: record.stored,
            last_used: record.last_used,
        }))
    }

    /// Drops a hibernated user's record without reading it; returns whether there was one.
    pub fn remove(&mut self, workspace: &str, user: &str) -> bool {
        let Some(users) = self.users.get_mut(workspace) else {
            return false;
        };
        let Some(record) = users.remove(user) else {
            return false;
        };
        self.len -= 1;
        self.bytes -= record.bytes.len();
        shrink(users);
        true
    }

    /// Forgets users whose last trigger was at or before `horizon`; their next trigger loads
    /// them from the store. Returns how many were forgotten.
    pub fn forget_idle(&mut self, horizon: Ts) -> usize {
        let before = self.len;
        for users in self.users.values_mut() {
            users.retain(|_, d| {
                let keep = d.last_used > horizon;
                if !keep {
                    self.bytes -= d.bytes.len();
                    self.len -= 1;
                }
                keep
            });
            shrink(users);
        }
        before - self.len
    }

    fn decode(&self, user: &str, bytes: &[u8]) -> Result<UserState, StateError> {
        let (kind, body) = bytes
            .split_first()
            .ok_or_else(|| corrupt(user, "empty record"))?;
        let dict: &[u8] = match (*kind, &self.dictionary) {
            (PLAIN, _) => &[],
            (WITH_DICTIONARY, Some(dict)) => dict,
            _ => return Err(corrupt(user, "unknown record kind")),
        };
        let raw = lz4_flex::block::decompress_size_prepended_with_dict(body, dict)
            .map_err(|e| corrupt(user, e))?;
        rmp_serde::from_slice(&raw).map_err(|e| corrupt(user, e))
    }
}

/// Frees the spare room of a map that emptied out, so a burst of users does not keep its
/// peak's memory.
pub(crate) fn shrink<K, V, S>(map: &mut HashMap<K, V, S>)
where
    K: Eq + std::hash::Hash,
    S: std::hash::BuildHasher,
{
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
}

fn compress(kind: u8, raw: &[u8], dict: &[u8]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(raw.len() / 2 + 8);
    out.push(kind);
    out.extend(lz4_flex::block::compress_prepend_size_with_dict(raw, dict));
    out.into_boxed_slice()
}

/// The layout of `state` with every value that could be a user's own blanked: ids, trait and
/// property values, message ids, merged ids. Names of traits, events, journeys and steps stay.
fn dictionary_from(state: &UserState) -> Option<Box<[u8]>> {
    let mut shape = state.clone();
    shape.user.clear();
    shape.message_ids.clear();
    shape.merged_into = None;
    shape.merged.clear();
    for t in shape.traits.values_mut() {
        t.value = serde_json::Value::Null;
    }
    let blank = |props: &mut beckon_core::Props| {
        props
            .values_mut()
            .for_each(|v| *v = serde_json::Value::Null)
    };
    for last in shape.last_events.values_mut() {
        blank(&mut last.props);
    }
    for history in shape.recent.values_mut() {
        for o in history.exact.iter_mut().chain(history.folded.iter_mut()) {
            blank(&mut o.props);
        }
    }
    for j in &mut shape.journeys {
        blank(&mut j.entry);
        j.key = None;
    }

    let mut raw = rmp_serde::to_vec_named(&shape).ok()?;
    // LZ4 prefers matches close by: the end of the dictionary is what it reaches best.
    if raw.len() > MAX_DICTIONARY {
        raw.drain(..raw.len() - MAX_DICTIONARY);
    }
    Some(raw.into_boxed_slice())
}

fn corrupt(user: &str, e: impl std::fmt::Display) -> StateError {
    StateError::Corrupt {
        user: user.to_string(),
        reason: format!("hibernated record: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use beckon_core::{Event, EventKind, Props, Tracking};
    use serde_json::json;

    use super::*;

    fn user(id: &str, n: usize) -> UserState {
        let mut s = UserState::new("w", id);
        let mut tracking = Tracking::default();
        tracking.track(
            "Product Viewed",
            beckon_core::Duration::hours(24),
            ["sku".into()],
        );
        for i in 0..n {
            let mut properties = Props::new();
            properties.insert("sku".into(), json!(format!("sku-{i}")));
            let mut traits = Props::new();
            traits.insert("email".into(), json!(format!("{id}@example.com")));
            let e = Event {
                kind: EventKind::Track,
                message_id: format!("{id}-{i}"),
                user: id.to_string(),
                anonymous_id: None,
                name: "Product Viewed".into(),
                properties,
                traits,
                timestamp: Ts(1_000 * i as i64),
                previous_id: None,
            };
            s.observe(&e, &tracking);
        }
        s
    }

    #[test]
    fn records_come_back_equal_and_smaller() {
        let mut dorm = Dormitory::default();
        let first = user("first", 12);
        let second = user("second", 3);
        dorm.put(&first, 12, Ts(5)).expect("put");
        dorm.put(&second, 3, Ts(6)).expect("put");
        assert_eq!(dorm.len(), 2);
        let raw = rmp_serde::to_vec_named(&second).expect("encode").len();
        assert!(
            dorm.record_bytes() < raw * 2,
            "two records, each compressed"
        );

        let woken = dorm.take("w", "second").expect("held").expect("decodes");
        assert_eq!(woken.state, second);
        assert_eq!((woken.stored, woken.last_used), (3, Ts(6)));
        assert!(woken.state.has_applied("second-2"));
        assert!(dorm.take("w", "second").is_none(), "taken once");
        assert_eq!(dorm.len(), 1);
    }

    #[test]
    fn the_dictionary_keeps_no_user_data() {
        let mut dorm = Dormitory::default();
        dorm.put(&user("ada", 12), 1, Ts(0)).expect("put");
        let dict = dorm.dictionary.as_deref().expect("chosen");
        let text = String::from_utf8_lossy(dict);
        assert!(text.contains("Product Viewed") && text.contains("email"));
        for private in ["ada@example.com", "ada-3", "sku-3"] {
            assert!(!text.contains(private), "{private} left in the dictionary");
        }
    }

    #[test]
    fn idle_records_are_forgotten() {
        let mut dorm = Dormitory::default();
        dorm.put(&user("old", 2), 2, Ts(10)).expect("put");
        dorm.put(&user("new", 2), 2, Ts(20)).expect("put");
        assert_eq!(dorm.forget_idle(Ts(10)), 1);
        assert!(dorm.take("w", "old").is_none());
        assert!(dorm.take("w", "new").is_some());
        assert!(dorm.is_empty() && dorm.record_bytes() == 0);
    }
}
