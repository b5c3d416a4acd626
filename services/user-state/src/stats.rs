//! Counts per journey and step, built from the decisions and messages that effects carry.

use std::collections::BTreeMap;

use beckon_core::{Decision, DecisionKind, OutboundMessage};
use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JourneyStats {
    pub entered: u64,
    pub not_entered: u64,
    pub exited_on_goal: u64,
    pub exited: u64,
    pub completed: u64,
    pub skipped: u64,
    pub messages: BTreeMap<String, u64>,
    pub steps: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub journeys: BTreeMap<String, JourneyStats>,
    pub timers_set: u64,
    pub timers_fired: u64,
}

impl Stats {
    pub fn decision(&mut self, d: &Decision) {
        // A merge moves users between ids; it is no step of a journey.
        if d.kind == DecisionKind::Merged {
            return;
        }
        let Some(j) = slot(&mut self.journeys, &d.journey) else {
            return;
        };
        match d.kind {
            DecisionKind::Entered => j.entered += 1,
            DecisionKind::NotEntered => j.not_entered += 1,
            DecisionKind::Step => {
                if let Some(n) = slot(&mut j.steps, &d.step) {
                    *n += 1;
                }
            }
            DecisionKind::Sent => {}
            DecisionKind::Skipped => j.skipped += 1,
            DecisionKind::ExitedOnGoal => j.exited_on_goal += 1,
            DecisionKind::Exited => j.exited += 1,
            DecisionKind::Completed => j.completed += 1,
            // Segment changes, deferrals and conversions are counted by the journey crate's
            // own statistics; what became of a sent message, by the gateway's.
            DecisionKind::Deferred
            | DecisionKind::Converted
            | DecisionKind::SegmentEntered
            | DecisionKind::SegmentLeft
            | DecisionKind::Merged
            | DecisionKind::DeliveryDeferred
            | DecisionKind::DeliveredLater
            | DecisionKind::DeliveryWithdrawn
            | DecisionKind::DeliveryFailed => {}
        }
    }

    pub fn message(&mut self, m: &OutboundMessage) {
        if let Some(n) =
            slot(&mut self.journeys, &m.journey).and_then(|j| slot(&mut j.messages, &m.channel))
        {
            *n += 1;
        }
    }

    pub fn merge(&mut self, other: Stats) {
        self.timers_set += other.timers_set;
        self.timers_fired += other.timers_fired;
        for (id, o) in other.journeys {
            let j = self.journeys.entry(id).or_default();
            j.entered += o.entered;
            j.not_entered += o.not_entered;
            j.exited_on_goal += o.exited_on_goal;
            j.exited += o.exited;
            j.completed += o.completed;
            j.skipped += o.skipped;
            for (k, v) in o.messages {
                *j.messages.entry(k).or_default() += v;
            }
            for (k, v) in o.steps {
                *j.steps.entry(k).or_default() += v;
            }
        }
    }
}

/// The entry for `key`, created empty when missing: the key is copied only then, not on every
/// count. Always `Some`.
fn slot<'a, V: Default>(map: &'a mut BTreeMap<String, V>, key: &str) -> Option<&'a mut V> {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key)
}
