//! A user's live behavioral state: traits, event history, journey positions.
//!
//! Memory per user is bounded. Counters per event name are kept forever, but individual
//! occurrences (needed for windowed counts with property filters) are kept only for the event
//! names, properties and window lengths that loaded definitions ask for ([`Tracking`]), and at
//! most [`MAX_OCCURRENCES`] per event name.

use std::collections::{BTreeMap, VecDeque};

use ahash::AHashMap;
use serde::{Deserialize, Serialize};

use crate::effect::Decision;
use crate::event::{Event, EventKind, Props};
use crate::time::{Duration, Ts};

/// Upper bound on remembered occurrences of one event name per user.
pub const MAX_OCCURRENCES: usize = 512;
/// How many applied message ids a user remembers, to apply a redelivered event once.
pub const RECENT_MESSAGE_IDS: usize = 128;
/// How many decisions a user keeps for explanations.
pub const RECENT_DECISIONS: usize = 100;

/// What history definitions need: per event name, the longest window and the properties that
/// filters look at.
#[derive(Clone, Debug, Default)]
pub struct Tracking {
    events: AHashMap<String, TrackedEvent>,
}

#[derive(Clone, Debug, Default)]
struct TrackedEvent {
    window: Duration,
    props: Vec<String>,
}

impl Tracking {
    /// Asks that occurrences of `event` be kept for `window`, with the named properties.
    pub fn track(&mut self, event: &str, window: Duration, props: impl IntoIterator<Item = String>) {
        let entry = self.events.entry(event.to_string()).or_default();
        entry.window = entry.window.max(window);
        for p in props {
            if !entry.props.contains(&p) {
                entry.props.push(p);
            }
        }
    }

    fn get(&self, event: &str) -> Option<&TrackedEvent> {
        self.events.get(event)
    }
}

/// A trait value with the event time that set it. An update older than `at` is ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraitValue {
    pub value: serde_json::Value,
    pub at: Ts,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventStats {
    pub count: u64,
    pub first: Ts,
    pub last: Ts,
}

/// One remembered occurrence of an event, with just the properties definitions filter on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Occurrence {
    pub at: Ts,
    #[serde(default, skip_serializing_if = "Props::is_empty")]
    pub props: Props,
}

/// Where a user stands in one journey.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JourneyInstance {
    pub journey: String,
    pub version: u32,
    /// Sequence number of this instance among the user's journey instances.
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub step: String,
    pub entered_at: Ts,
    pub step_at: Ts,
    /// The pending timer while the instance waits; a timer with another id is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<Ts>,
    /// Properties of the event that started the instance, for templates and key matching.
    #[serde(default, skip_serializing_if = "Props::is_empty")]
    pub entry: Props,
    /// Steps run so far; part of idempotency keys, so a step visited twice sends twice.
    pub visits: u32,
}

/// How often and when a user was in a journey, for re-entry rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyHistory {
    pub entries: u32,
    pub last_entered: Ts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<Ts>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserState {
    pub workspace: String,
    pub user: String,
    /// Incremented on every applied trigger; stores write with compare-and-set on it.
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Ts>,
    pub total_events: u64,
    #[serde(default)]
    pub traits: BTreeMap<String, TraitValue>,
    #[serde(default)]
    pub events: BTreeMap<String, EventStats>,
    #[serde(default)]
    pub recent: BTreeMap<String, VecDeque<Occurrence>>,
    #[serde(default)]
    pub journeys: Vec<JourneyInstance>,
    #[serde(default)]
    pub history: BTreeMap<String, JourneyHistory>,
    #[serde(default)]
    pub message_ids: VecDeque<String>,
    #[serde(default)]
    pub decisions: VecDeque<Decision>,
    pub next_instance: u64,
}

impl UserState {
    pub fn new(workspace: &str, user: &str) -> UserState {
        UserState {
            workspace: workspace.to_string(),
            user: user.to_string(),
            ..UserState::default()
        }
    }

    /// True when this message id was already applied to the user.
    pub fn has_applied(&self, message_id: &str) -> bool {
        self.message_ids.iter().any(|m| m == message_id)
    }

    /// Folds an event into the behavioral state. Returns false, changing nothing, when the
    /// event's message id was applied before.
    pub fn observe(&mut self, event: &Event, tracking: &Tracking) -> bool {
        if self.has_applied(&event.message_id) {
            return false;
        }
        if self.message_ids.len() >= RECENT_MESSAGE_IDS {
            self.message_ids.pop_front();
        }
        self.message_ids.push_back(event.message_id.clone());

        let at = event.timestamp;
        self.version += 1;
        self.total_events += 1;
        self.first_seen = Some(self.first_seen.map_or(at, |f| f.min(at)));
        self.last_seen = Some(self.last_seen.map_or(at, |l| l.max(at)));

        // Late and retried identifies are normal: an older value never replaces a newer one.
        for (name, value) in &event.traits {
            self.set_trait(name, value.clone(), at);
        }
        if event.kind == EventKind::Identify || event.kind == EventKind::Alias {
            return true;
        }

        let stats = self.events.entry(event.name.clone()).or_insert(EventStats {
            count: 0,
            first: at,
            last: at,
        });
        stats.count += 1;
        stats.first = stats.first.min(at);
        stats.last = stats.last.max(at);

        if let Some(tracked) = tracking.get(&event.name) {
            self.remember(event, tracked);
        }
        true
    }

    /// Sets a trait unless the stored value is newer. Equal times let the later arrival win.
    pub fn set_trait(&mut self, name: &str, value: serde_json::Value, at: Ts) {
        match self.traits.get_mut(name) {
            Some(existing) if existing.at > at => {}
            Some(existing) => {
                existing.value = value;
                existing.at = at;
            }
            None => {
                self.traits.insert(name.to_string(), TraitValue { value, at });
            }
        }
    }

    fn remember(&mut self, event: &Event, tracked: &TrackedEvent) {
        let mut props = Props::new();
        for p in &tracked.props {
            if let Some(v) = event.properties.get(p) {
                props.insert(p.clone(), v.clone());
            }
        }
        let list = self.recent.entry(event.name.clone()).or_default();

        // Keep the list in time order even when events arrive late.
        let pos = list.partition_point(|o| o.at <= event.timestamp);
        list.insert(pos, Occurrence { at: event.timestamp, props });

        let horizon = self.last_seen.unwrap_or(event.timestamp).saturating_sub(tracked.window);
        while list.front().is_some_and(|o| o.at <= horizon) || list.len() > MAX_OCCURRENCES {
            list.pop_front();
        }
    }

    /// Occurrences of `event` inside the window of length `within` that ends at `now`.
    ///
    /// Window rule: an occurrence at `t` is inside when `now - within < t <= now`. An event
    /// exactly `within` old has just left the window.
    pub fn occurrences_within(
        &self,
        event: &str,
        now: Ts,
        within: Duration,
    ) -> impl Iterator<Item = &Occurrence> {
        let start = now.saturating_sub(within);
        self.recent
            .get(event)
            .into_iter()
            .flat_map(|l| l.iter())
            .filter(move |o| o.at > start && o.at <= now)
    }

    pub fn record(&mut self, decision: Decision) {
        if self.decisions.len() >= RECENT_DECISIONS {
            self.decisions.pop_front();
        }
        self.decisions.push_back(decision);
    }

    pub fn trait_value(&self, name: &str) -> Option<&serde_json::Value> {
        self.traits.get(name).map(|t| &t.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(id: &str, name: &str, at: i64, props: serde_json::Value) -> Event {
        Event {
            kind: EventKind::Track,
            message_id: id.to_string(),
            user: "u1".to_string(),
            anonymous_id: None,
            name: name.to_string(),
            properties: props.as_object().cloned().unwrap_or_default(),
            traits: Props::new(),
            timestamp: Ts(at),
            previous_id: None,
        }
    }

    #[test]
    fn repeated_message_id_counts_once() {
        let mut s = UserState::new("w", "u1");
        let t = Tracking::default();
        assert!(s.observe(&event("m1", "Order Completed", 10, json!({})), &t));
        assert!(!s.observe(&event("m1", "Order Completed", 10, json!({})), &t));
        assert_eq!(s.events["Order Completed"].count, 1);
    }

    #[test]
    fn older_trait_update_does_not_overwrite() {
        let mut s = UserState::new("w", "u1");
        s.set_trait("plan", json!("pro"), Ts(200));
        s.set_trait("plan", json!("free"), Ts(100));
        assert_eq!(s.trait_value("plan"), Some(&json!("pro")));
        s.set_trait("plan", json!("team"), Ts(300));
        assert_eq!(s.trait_value("plan"), Some(&json!("team")));
    }

    #[test]
    fn window_lower_bound_is_exclusive_to_the_millisecond() {
        let mut s = UserState::new("w", "u1");
        let mut t = Tracking::default();
        t.track("Order Completed", Duration(1000), []);
        s.observe(&event("a", "Order Completed", 1000, json!({})), &t);
        s.observe(&event("b", "Order Completed", 1001, json!({})), &t);
        let inside = |now| s.occurrences_within("Order Completed", Ts(now), Duration(1000)).count();
        assert_eq!(inside(1999), 2);
        assert_eq!(inside(2000), 1, "an event exactly one window old is outside");
        assert_eq!(inside(2001), 0);
    }

    #[test]
    fn only_tracked_properties_are_kept() {
        let mut s = UserState::new("w", "u1");
        let mut t = Tracking::default();
        t.track("Product Viewed", Duration::hours(24), ["category".to_string()]);
        s.observe(&event("a", "Product Viewed", 5, json!({"category": "c", "sku": "x"})), &t);
        let kept = &s.recent["Product Viewed"][0].props;
        assert_eq!(kept.get("category"), Some(&json!("c")));
        assert!(kept.get("sku").is_none());
    }
}
