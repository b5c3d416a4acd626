//! A single-threaded driver of the engine on a virtual clock, with no actors, stores or
//! channels: for tests of "7 days later", and for `beckon explain`.
//!
//! It follows the same time rule as the partition workers: before a trigger at `t` is
//! applied, every timer due at or before `t` fires, in (due, user, id) order, so a timer and
//! an event in the same millisecond resolve with the timer first.

use std::collections::{BTreeMap, HashMap};

use beckon_core::{
    ApiEntry, Decision, Effect, Event, EventKind, OutboundMessage, Props, Timer, Trigger, Ts,
    UserState,
};
use serde_json::Value;

use crate::eval::Engine;

/// Timers fired by one advance before the driver gives up; guards against a definition that
/// keeps setting timers for the instant it runs at.
const MAX_TIMERS_PER_ADVANCE: usize = 1_000_000;

/// Runs users through an engine and keeps what came out.
pub struct Sim<'e> {
    engine: &'e Engine,
    workspace: String,
    users: BTreeMap<String, UserState>,
    timers: BTreeMap<(Ts, String, String), Timer>,
    due_of: HashMap<(String, String), Ts>,
    now: Ts,
    /// Every message sent, in send order.
    pub messages: Vec<OutboundMessage>,
    /// Every decision, with its user, in the order made.
    pub decisions: Vec<(String, Decision)>,
    /// Timers fired so far.
    pub fired: u64,
    /// Keys of triggers forwarded so far: a key forwarded again is not applied again.
    forwarded: std::collections::HashSet<String>,
}

impl<'e> Sim<'e> {
    pub fn new(engine: &'e Engine, workspace: &str) -> Sim<'e> {
        Sim {
            engine,
            workspace: workspace.to_string(),
            users: BTreeMap::new(),
            timers: BTreeMap::new(),
            due_of: HashMap::new(),
            now: Ts::MIN,
            messages: Vec::new(),
            decisions: Vec::new(),
            fired: 0,
            forwarded: std::collections::HashSet::new(),
        }
    }

    /// Fires due timers, then applies the event.
    pub fn event(&mut self, event: Event) {
        self.advance(event.timestamp);
        let user = event.user.clone();
        self.apply(&user, Trigger::Event(event));
    }

    /// Fires due timers, then applies an API entry.
    pub fn api(&mut self, call: ApiEntry) {
        self.advance(call.at);
        let user = call.user.clone();
        self.apply(&user, Trigger::Api(call));
    }

    /// Moves virtual time to `to`, firing every timer due by then.
    pub fn advance(&mut self, to: Ts) {
        for _ in 0..MAX_TIMERS_PER_ADVANCE {
            let Some(entry) = self.timers.first_entry() else {
                break;
            };
            if entry.key().0 > to {
                break;
            }
            let ((_, user, id), timer) = entry.remove_entry();
            self.due_of.remove(&(user.clone(), id));
            self.now = self.now.max(timer.due);
            self.fired += 1;
            self.apply(&user, Trigger::Timer(timer));
        }
        self.now = self.now.max(to);
    }

    pub fn now(&self) -> Ts {
        self.now
    }

    pub fn user(&self, user: &str) -> Option<&UserState> {
        self.users.get(user)
    }

    pub fn users(&self) -> impl Iterator<Item = &UserState> {
        self.users.values()
    }

    /// Timers waiting to fire.
    pub fn pending(&self) -> usize {
        self.timers.len()
    }

    /// The messages one user got, in order.
    pub fn sent_to(&self, user: &str) -> Vec<&OutboundMessage> {
        self.messages.iter().filter(|m| m.user_id == user).collect()
    }

    /// One user's decisions, in order.
    pub fn decisions_of(&self, user: &str) -> Vec<&Decision> {
        self.decisions
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, d)| d)
            .collect()
    }

    /// Applies a trigger, then the triggers it forwards to other users (the steps of a
    /// merge), each once per key, as the partition logs would.
    fn apply(&mut self, user: &str, trigger: Trigger) {
        let mut queue = std::collections::VecDeque::from([(user.to_string(), trigger)]);
        while let Some((user, trigger)) = queue.pop_front() {
            for (key, forwarded) in self.apply_one(&user, trigger) {
                if self.forwarded.insert(key) {
                    queue.push_back((forwarded.user().to_string(), forwarded));
                }
            }
        }
    }

    fn apply_one(&mut self, user: &str, trigger: Trigger) -> Vec<(String, Trigger)> {
        let mut forwards = Vec::new();
        let state = self
            .users
            .entry(user.to_string())
            .or_insert_with(|| UserState::new(&self.workspace, user));
        let effects = self.engine.apply(state, &trigger);
        for effect in effects {
            match effect {
                Effect::SetTimer(t) => {
                    let key = (t.user.clone(), t.id.clone());
                    if let Some(old) = self.due_of.insert(key, t.due) {
                        self.timers.remove(&(old, t.user.clone(), t.id.clone()));
                    }
                    self.timers.insert((t.due, t.user.clone(), t.id.clone()), t);
                }
                Effect::CancelTimer { user, id, .. } => {
                    if let Some(due) = self.due_of.remove(&(user.clone(), id.clone())) {
                        self.timers.remove(&(due, user, id));
                    }
                }
                Effect::Send(m) => self.messages.push(m),
                Effect::Record(d) => self.decisions.push((user.to_string(), d)),
                Effect::Forward { key, trigger } => forwards.push((key, trigger)),
            }
        }
        forwards
    }
}

/// A track event, for tests and examples.
pub fn track(user: &str, name: &str, at: Ts, props: Value) -> Event {
    event(EventKind::Track, user, name, at, props, Props::new())
}

/// An identify event setting `traits`.
pub fn identify(user: &str, at: Ts, traits: Value) -> Event {
    let traits = traits.as_object().cloned().unwrap_or_default();
    event(
        EventKind::Identify,
        user,
        "Identify",
        at,
        Value::Null,
        traits,
    )
}

fn event(kind: EventKind, user: &str, name: &str, at: Ts, props: Value, traits: Props) -> Event {
    // Message ids only need to be unique per user and instant and name for the dedup.
    let message_id = format!("{}-{user}-{name}-{}", kind.as_str(), at.0);
    Event {
        kind,
        message_id,
        user: user.to_string(),
        anonymous_id: None,
        name: name.to_string(),
        properties: props.as_object().cloned().unwrap_or_default(),
        traits,
        timestamp: at,
        previous_id: None,
    }
}
