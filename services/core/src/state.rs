//! A user's live behavioral state: traits, event history, journey positions.
//!
//! Memory per user is bounded. Counters per event name are kept forever, but individual
//! occurrences (needed for windowed counts with property filters) are kept only for the event
//! names, properties and window lengths that loaded definitions ask for ([`Tracking`]).
//!
//! Precision rule for windowed counts: the newest [`EXACT_OCCURRENCES`] occurrences of an
//! event name are kept exact to the millisecond. Older ones still inside the longest tracked
//! window are folded into buckets ([`bucket_width`]: 1 minute wide for windows up to a day,
//! 1 hour up to 7 days, 1 day beyond) and count as if they happened at the last millisecond of
//! their bucket. A folded occurrence therefore leaves a window up to one bucket width late,
//! never early, and counts are exact for any user with at most 512 occurrences in the window.
//! At most [`MAX_BUCKETS`] buckets are kept per event name; past that the oldest are dropped.
//!
//! Distinct event names are bounded too ([`StateLimits::event_names`], by default
//! [`MAX_EVENT_NAMES`]): a client that makes up a new name for every event would otherwise grow
//! the record, which is read and written whole on every change, without end. Past the limit
//! the least recently seen names are forgotten first, and a name that a loaded definition
//! refers to is never forgotten ([`UserState::bound_event_names`]).
//!
//! Traits are bounded by size ([`StateLimits::trait_bytes`], by default [`MAX_TRAIT_BYTES`]):
//! every identify may add keys, and each event may carry up to 32 KiB of them. A change that
//! would take a user's traits past the limit is dropped and counted, and the record keeps the
//! traits it had ([`UserState::set_trait_within`]). Opt-outs and consent always apply.

use std::collections::{BTreeMap, VecDeque};

use ahash::{AHashMap, AHashSet};
use serde::{Deserialize, Serialize};

use crate::effect::Decision;
use crate::event::{Event, EventKind, Props};
use crate::time::{Duration, Ts};

/// Occurrences of one event name kept exact to the millisecond, per user.
pub const EXACT_OCCURRENCES: usize = 512;
/// Buckets of folded occurrences kept per event name and user.
pub const MAX_BUCKETS: usize = 512;
/// Sends remembered for frequency caps, per user.
pub const MAX_SENDS: usize = 256;
/// How many applied message ids a user remembers, to apply a redelivered event once.
pub const RECENT_MESSAGE_IDS: usize = 128;
/// How many decisions a user keeps for explanations.
pub const RECENT_DECISIONS: usize = 100;
/// Distinct event names a user keeps statistics for, unless configured otherwise.
pub const MAX_EVENT_NAMES: usize = 1_000;
/// Bytes of traits a user keeps (names plus values as JSON), unless configured otherwise.
pub const MAX_TRAIT_BYTES: usize = 64 * 1024;

/// Bounds on a user's state that a deployment may set, unlike the constants above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateLimits {
    /// Distinct event names kept per user, besides the names definitions refer to, which are
    /// always kept.
    pub event_names: usize,
    /// Bytes of traits kept per user, counted as [`UserState::traits_bytes`] does.
    pub trait_bytes: usize,
}

impl Default for StateLimits {
    fn default() -> StateLimits {
        StateLimits {
            event_names: MAX_EVENT_NAMES,
            trait_bytes: MAX_TRAIT_BYTES,
        }
    }
}

/// What history definitions need: per event name, the longest window and the properties that
/// filters look at.
#[derive(Clone, Debug, Default)]
pub struct Tracking {
    events: AHashMap<String, TrackedEvent>,
    funnels: Vec<FunnelTrack>,
    /// Event names (in snake case) whose latest properties templates read as `last.<name>`.
    last: Vec<String>,
    /// How long sends are remembered for frequency caps; zero when no cap is defined.
    sends: Duration,
    /// Every event name a definition refers to (conditions, entries, goals, exits, waits):
    /// their statistics are never forgotten to keep a user under the name limit.
    referred: AHashSet<String>,
}

/// An ordered funnel whose progress a definition reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunnelTrack {
    pub key: String,
    pub steps: Vec<String>,
    pub within: Option<Duration>,
}

/// Progress through one funnel: the current attempt started at `started` and has done the
/// first `reached` steps in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunnelProgress {
    pub reached: u32,
    pub started: Ts,
}

/// How far the merge of another id into a user got, as the user's side sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeStage {
    /// The other id was asked to hand its state over; its snapshot has not arrived.
    Requested,
    /// The other id's snapshot was taken over.
    Done,
}

/// A user's standing in one segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub member: bool,
    /// When membership last changed (or was first computed).
    pub since: Ts,
    /// The pending segment timer, when the truth can change by time alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<Ts>,
}

/// A message that counted against frequency caps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMark {
    pub at: Ts,
    pub channel: String,
}

/// The latest properties of an event name, for templates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastEvent {
    pub at: Ts,
    #[serde(default, skip_serializing_if = "Props::is_empty")]
    pub props: Props,
}

#[derive(Clone, Debug, Default)]
struct TrackedEvent {
    window: Duration,
    props: Vec<String>,
}

impl Tracking {
    /// Asks that occurrences of `event` be kept for `window`, with the named properties.
    pub fn track(
        &mut self,
        event: &str,
        window: Duration,
        props: impl IntoIterator<Item = String>,
    ) {
        self.refer(event);
        let entry = self.events.entry(event.to_string()).or_default();
        entry.window = entry.window.max(window);
        for p in props {
            if !entry.props.contains(&p) {
                entry.props.push(p);
            }
        }
    }

    /// Notes that a definition reads or waits for `event`, so that its statistics are kept
    /// whatever the user's other names. `*` (any activity) names no event.
    pub fn refer(&mut self, event: &str) {
        if event != "*" && !self.referred.contains(event) {
            self.referred.insert(event.to_string());
        }
    }

    /// Whether a definition refers to `event`.
    pub fn refers_to(&self, event: &str) -> bool {
        self.referred.contains(event)
    }

    /// Asks that progress through `funnel` be kept.
    pub fn track_funnel(&mut self, funnel: FunnelTrack) {
        for step in &funnel.steps {
            self.refer(step);
        }
        if !self.funnels.iter().any(|f| f.key == funnel.key) {
            self.funnels.push(funnel);
        }
    }

    /// Asks that the latest properties of the event whose snake-case name is `snake` be kept.
    pub fn track_last(&mut self, snake: &str) {
        if !self.last.iter().any(|l| l == snake) {
            self.last.push(snake.to_string());
        }
    }

    /// Asks that sends be remembered for `window` (the longest frequency-cap window).
    pub fn track_sends(&mut self, window: Duration) {
        self.sends = self.sends.max(window);
    }

    pub fn sends_window(&self) -> Duration {
        self.sends
    }

    fn get(&self, event: &str) -> Option<&TrackedEvent> {
        self.events.get(event)
    }
}

/// A cache derived from `message_ids`; it never makes two states differ.
#[derive(Clone, Debug, Default)]
struct IdHashes(VecDeque<u64>);

impl PartialEq for IdHashes {
    fn eq(&self, _: &IdHashes) -> bool {
        true
    }
}

impl IdHashes {
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// FNV-1a of a message id; only compared within one process.
fn id_hash(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Width of the buckets occurrences are folded into, for the longest window tracked.
pub fn bucket_width(window: Duration) -> Duration {
    const DAY: i64 = 86_400_000;
    match window.0 {
        w if w <= DAY => Duration(60_000),
        w if w <= 7 * DAY => Duration(3_600_000),
        _ => Duration(DAY),
    }
}

/// `Product Viewed` becomes `product_viewed`: how templates name earlier events.
pub fn snake_case(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn is_snake_of(snake: &str, name: &str) -> bool {
    snake.len() == name.len()
        && snake.bytes().zip(name.bytes()).all(|(s, n)| {
            let n = if n.is_ascii_alphanumeric() {
                n.to_ascii_lowercase()
            } else {
                b'_'
            };
            s == n
        })
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

/// One remembered occurrence of an event, with just the properties definitions filter on;
/// or, when `count` is above one, a bucket of folded occurrences with equal properties that
/// counts as happening at `at`, the bucket's last millisecond.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Occurrence {
    pub at: Ts,
    #[serde(default, skip_serializing_if = "Props::is_empty")]
    pub props: Props,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// Remembered occurrences of one event name: exact ones, and older ones folded into buckets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub exact: VecDeque<Occurrence>,
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub folded: VecDeque<Occurrence>,
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
    /// The current message step was held back and is tried again when the timer fires.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
    /// The instance was held before the current step, which it has not run yet, to pace a
    /// loop; the step runs when the timer fires.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paced: bool,
    /// The split arm the instance was put in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
}

/// How often and when a user was in a journey, for re-entry rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyHistory {
    pub entries: u32,
    pub last_entered: Ts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<Ts>,
    /// A goal up to this instant counts as a conversion of the last entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution_until: Option<Ts>,
    /// The arm of the last entry (`holdout`, a split arm, or none for plain treatment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    /// The last entry already converted; a second goal does not count again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub converted: bool,
    /// The latest goal or exit event of the journey, kept here rather than found in the
    /// recent decisions, which a busy user scrolls past.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal_or_exit: Option<GoalOrExit>,
}

/// A goal or exit event of a journey, and which of the user's instances it came after.
///
/// A message an instance handed to the gateway before it is moot, whether the instance was
/// still running then or had already run to its end: the user ordered meanwhile. Instances
/// are numbered in entry order, so "entered before" is a comparison with the counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoalOrExit {
    pub at: Ts,
    /// The user's instance counter when it happened: every instance numbered below had
    /// been entered.
    pub below: u64,
    /// Instances of the journey that went on running: the event was for another key (an
    /// order of another cart), or for a goal their version does not have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spared: Vec<u64>,
    /// What happened, for explanations: `goal Order Completed happened`.
    pub reason: String,
}

impl GoalOrExit {
    /// Whether a message of `instance` was made before this and is moot now.
    pub fn covers(&self, instance: u64) -> bool {
        instance < self.below && !self.spared.contains(&instance)
    }
}

/// Entry instants of one journey kept for entry limits ("at most 2 entries per 30 days").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryLog {
    pub at: VecDeque<Ts>,
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
    /// The latest instant a trigger (event or timer) was applied at: the user's "now" for
    /// anything evaluated after a late event.
    #[serde(default)]
    pub clock: Ts,
    #[serde(default)]
    pub traits: BTreeMap<String, TraitValue>,
    #[serde(default)]
    pub events: BTreeMap<String, EventStats>,
    /// Event names forgotten so far to keep `events` within the name limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub event_names_evicted: u64,
    /// Trait changes dropped so far because they would have taken `traits` past the limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub traits_dropped: u64,
    #[serde(default)]
    pub recent: BTreeMap<String, History>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub funnels: BTreeMap<String, FunnelProgress>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_events: BTreeMap<String, LastEvent>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub segments: BTreeMap<String, Membership>,
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub sends: VecDeque<SendMark>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub entry_log: BTreeMap<String, EntryLog>,
    #[serde(default)]
    pub journeys: Vec<JourneyInstance>,
    #[serde(default)]
    pub history: BTreeMap<String, JourneyHistory>,
    #[serde(default)]
    pub message_ids: VecDeque<String>,
    /// Hashes of `message_ids`, same order: the duplicate check compares integers first and
    /// strings only on a hash match. Rebuilt after loading.
    #[serde(skip)]
    id_hashes: IdHashes,
    #[serde(default)]
    pub decisions: VecDeque<Decision>,
    pub next_instance: u64,
    /// Set when this id was merged into another user: the record is then only a forwarding
    /// tombstone, and whatever comes for this id goes to that user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// Other ids of the same person merged (or being merged) into this user.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub merged: BTreeMap<String, MergeStage>,
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

    /// Folds an event into the behavioral state within the default limits; see
    /// [`UserState::observe_within`].
    pub fn observe(&mut self, event: &Event, tracking: &Tracking) -> bool {
        self.observe_within(event, tracking, &StateLimits::default())
    }

    /// Folds an event into the behavioral state. Returns false, changing nothing, when the
    /// event's message id was applied before. Its traits apply within `limits.trait_bytes`.
    pub fn observe_within(
        &mut self,
        event: &Event,
        tracking: &Tracking,
        limits: &StateLimits,
    ) -> bool {
        if self.id_hashes.len() != self.message_ids.len() {
            self.id_hashes = IdHashes(self.message_ids.iter().map(|m| id_hash(m)).collect());
        }
        let hash = id_hash(&event.message_id);
        // A plain scan of the hashes first: nearly every event is new, and then no string is
        // compared at all.
        let seen = self.id_hashes.0.contains(&hash)
            && self
                .id_hashes
                .0
                .iter()
                .zip(&self.message_ids)
                .any(|(h, m)| *h == hash && *m == event.message_id);
        if seen {
            return false;
        }
        if self.message_ids.len() >= RECENT_MESSAGE_IDS {
            self.message_ids.pop_front();
            self.id_hashes.0.pop_front();
        }
        self.message_ids.push_back(event.message_id.clone());
        self.id_hashes.0.push_back(hash);

        let at = event.timestamp;
        self.version += 1;
        self.total_events += 1;
        self.first_seen = Some(self.first_seen.map_or(at, |f| f.min(at)));
        self.last_seen = Some(self.last_seen.map_or(at, |l| l.max(at)));

        // Late and retried identifies are normal: an older value never replaces a newer one.
        if !event.traits.is_empty() {
            let mut total = self.traits_bytes();
            for (name, value) in &event.traits {
                self.set_trait_within(name, value.clone(), at, limits.trait_bytes, &mut total);
            }
        }
        crate::devices::apply_invalid_token(self, event);
        crate::delivery::apply_unsubscribe(self, event);
        if event.kind == EventKind::Identify || event.kind == EventKind::Alias {
            return true;
        }

        // The name is copied only the first time: most events repeat a name already counted.
        match self.events.get_mut(&event.name) {
            Some(stats) => {
                stats.count += 1;
                stats.first = stats.first.min(at);
                stats.last = stats.last.max(at);
            }
            None => {
                let stats = EventStats {
                    count: 1,
                    first: at,
                    last: at,
                };
                self.events.insert(event.name.clone(), stats);
            }
        }

        if let Some(tracked) = tracking.get(&event.name) {
            self.remember(event, tracked);
        }
        if !tracking.funnels.is_empty() {
            self.advance_funnels(event, tracking);
        }
        if let Some(snake) = tracking.last.iter().find(|s| is_snake_of(s, &event.name)) {
            let newer = self.last_events.get(snake).is_none_or(|l| l.at <= at);
            if newer {
                let last = LastEvent {
                    at,
                    props: event.properties.clone(),
                };
                self.last_events.insert(snake.clone(), last);
            }
        }
        true
    }

    /// Funnel rule: the first step starts an attempt when none is running, the running one
    /// finished, or its window passed; otherwise only the next expected step moves it on.
    /// Events out of order are taken in arrival order.
    fn advance_funnels(&mut self, event: &Event, tracking: &Tracking) {
        let at = event.timestamp;
        for f in &tracking.funnels {
            if !f.steps.contains(&event.name) {
                continue;
            }
            let p = self.funnels.entry(f.key.clone()).or_default();
            let expired = f
                .within
                .is_some_and(|w| p.reached > 0 && at >= p.started.saturating_add(w));
            let done = p.reached as usize >= f.steps.len();
            let next = f.steps.get(p.reached as usize);
            if p.reached > 0 && !expired && !done && next == Some(&event.name) {
                p.reached += 1;
            } else if f.steps.first() == Some(&event.name) && (p.reached == 0 || expired || done) {
                *p = FunnelProgress {
                    reached: 1,
                    started: at,
                };
            } else if expired {
                *p = FunnelProgress::default();
            }
        }
    }

    /// Steps of `funnel` reached by the attempt that is still inside its window at `now`.
    pub fn funnel_reached(&self, funnel: &FunnelTrack, now: Ts) -> (u32, Option<Ts>) {
        let Some(p) = self.funnels.get(&funnel.key) else {
            return (0, None);
        };
        match funnel.within {
            Some(w) if p.reached > 0 => {
                let ends = p.started.saturating_add(w);
                if now >= ends {
                    (0, None)
                } else {
                    (p.reached, Some(ends))
                }
            }
            _ => (p.reached, None),
        }
    }

    /// Remembers a send for frequency caps, forgetting those older than `window`.
    pub fn remember_send(&mut self, channel: &str, at: Ts, window: Duration) {
        let horizon = at.saturating_sub(window);
        while self.sends.front().is_some_and(|s| s.at <= horizon) || self.sends.len() >= MAX_SENDS {
            self.sends.pop_front();
        }
        self.sends.push_back(SendMark {
            at,
            channel: channel.to_string(),
        });
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
                self.traits
                    .insert(name.to_string(), TraitValue { value, at });
            }
        }
    }

    /// Sets a trait as [`UserState::set_trait`] does, unless the change would take the
    /// traits past `limit` bytes: then it is dropped, counted in `traits_dropped`, and the
    /// stored value (if any) stays. `total` is [`UserState::traits_bytes`] before the call and
    /// is kept up to date, so a run of changes measures the traits once.
    ///
    /// A change that does not grow the traits always applies, so a record that is over the
    /// limit (the limit was lowered, or two ids merged) can still shrink. Opt-outs (a boolean
    /// `unsubscribed` or `<channel>_opt_out`) and the `consent` map always apply: dropping a
    /// user's refusal would let messages through that they declined. Returns false when
    /// the change was dropped.
    pub fn set_trait_within(
        &mut self,
        name: &str,
        value: serde_json::Value,
        at: Ts,
        limit: usize,
        total: &mut usize,
    ) -> bool {
        let stored = self.traits.get(name);
        if stored.is_some_and(|t| t.at > at) {
            // Older than the stored value: ignored, as `set_trait` does; not a drop.
            return true;
        }
        let before = stored.map_or(0, |t| trait_bytes(name, &t.value));
        let after = trait_bytes(name, &value);
        let grown = total.saturating_sub(before).saturating_add(after);
        if after > before && grown > limit && !is_consent(name, &value) {
            self.traits_dropped += 1;
            return false;
        }
        *total = grown;
        self.set_trait(name, value, at);
        true
    }

    /// What the traits count toward [`StateLimits::trait_bytes`]: each name's length plus its
    /// value's length as JSON.
    pub fn traits_bytes(&self) -> usize {
        self.traits
            .iter()
            .map(|(name, t)| trait_bytes(name, &t.value))
            .sum()
    }

    fn remember(&mut self, event: &Event, tracked: &TrackedEvent) {
        let mut props = Props::new();
        for p in &tracked.props {
            // Events carry a few properties: looking along them costs less than hashing.
            if let Some((_, v)) = event.properties.iter().find(|(k, _)| *k == p) {
                props.insert(p.clone(), v.clone());
            }
        }
        if !self.recent.contains_key(&event.name) {
            self.recent.insert(event.name.clone(), History::default());
        }
        let Some(history) = self.recent.get_mut(&event.name) else {
            return;
        };

        // Keep the list in time order even when events arrive late.
        let list = &mut history.exact;
        let pos = list.partition_point(|o| o.at <= event.timestamp);
        let occurrence = Occurrence {
            at: event.timestamp,
            props,
            count: 1,
        };
        list.insert(pos, occurrence);

        let horizon = self
            .last_seen
            .unwrap_or(event.timestamp)
            .saturating_sub(tracked.window);
        trim_history(history, horizon, tracked.window);
    }

    /// Takes over the behavioral history of `other`, another id of the same person, as if
    /// both ids' events had happened to one user. Journeys and segment memberships are left
    /// to the evaluator, which owns their timers.
    ///
    /// Rules: counts, totals and occurrences add up; first times take the earlier and last
    /// times the later; funnel progress takes the attempt that got further; traits take the
    /// newer value (this user's on a tie), except that consent takes the stricter answer
    /// (`<channel>_opt_out` and `unsubscribed` true if either says so, a `consent` map false
    /// per channel if either says so) and the `devices` token lists are united per platform.
    /// The merged traits stay within `limits.trait_bytes` as an identify's do: what would
    /// take them past it is dropped ([`UserState::set_trait_within`]).
    pub fn absorb(&mut self, other: &UserState, tracking: &Tracking, limits: &StateLimits) {
        self.version += 1;
        self.total_events += other.total_events;
        self.first_seen = min_opt(self.first_seen, other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.clock = self.clock.max(other.clock);

        let mut total = self.traits_bytes();
        for (name, theirs) in &other.traits {
            let merged = match self.traits.get(name) {
                Some(ours) => merge_trait(name, ours, theirs),
                None => theirs.clone(),
            };
            // The merged value carries the later time, so it is never ignored as older.
            let TraitValue { value, at } = merged;
            self.set_trait_within(name, value, at, limits.trait_bytes, &mut total);
        }

        self.merge_event_stats(other);

        for (name, theirs) in &other.recent {
            let ours = self.recent.entry(name.clone()).or_default();
            ours.exact = merge_sorted(&ours.exact, &theirs.exact);
            ours.folded = merge_sorted(&ours.folded, &theirs.folded);
            let window = tracking.get(name).map_or(Duration(i64::MAX), |t| t.window);
            let horizon = self.last_seen.unwrap_or(Ts::MIN).saturating_sub(window);
            trim_history(ours, horizon, window);
        }

        for (key, theirs) in &other.funnels {
            let ours = self.funnels.entry(key.clone()).or_insert(*theirs);
            let further = (theirs.reached, theirs.started) > (ours.reached, ours.started);
            if further {
                *ours = *theirs;
            }
        }
        for (name, theirs) in &other.last_events {
            let newer = self.last_events.get(name).is_none_or(|l| l.at < theirs.at);
            if newer {
                self.last_events.insert(name.clone(), theirs.clone());
            }
        }

        let mut sends: Vec<SendMark> = self.sends.drain(..).chain(other.sends.clone()).collect();
        sends.sort_by_key(|s| s.at);
        let skip = sends.len().saturating_sub(MAX_SENDS);
        self.sends = sends.into_iter().skip(skip).collect();

        for (journey, theirs) in &other.entry_log {
            let ours = self.entry_log.entry(journey.clone()).or_default();
            let mut all: Vec<Ts> = ours.at.iter().chain(&theirs.at).copied().collect();
            all.sort();
            ours.at = all.into();
        }
        for (journey, theirs) in &other.history {
            match self.history.get_mut(journey) {
                Some(ours) => merge_journey_history(ours, theirs),
                None => {
                    self.history.insert(journey.clone(), theirs.clone());
                }
            }
        }

        for id in &other.message_ids {
            if !self.has_applied(id) {
                self.message_ids.push_back(id.clone());
            }
        }
        while self.message_ids.len() > RECENT_MESSAGE_IDS {
            self.message_ids.pop_front();
        }
        // The cache no longer matches the list; the next duplicate check rebuilds it.
        self.id_hashes = IdHashes::default();

        let mut decisions: Vec<Decision> = self
            .decisions
            .drain(..)
            .chain(other.decisions.clone())
            .collect();
        decisions.sort_by_key(|d| d.at);
        let skip = decisions.len().saturating_sub(RECENT_DECISIONS);
        self.decisions = decisions.into_iter().skip(skip).collect();
    }

    fn merge_event_stats(&mut self, other: &UserState) {
        for (name, theirs) in &other.events {
            match self.events.get_mut(name) {
                Some(ours) => {
                    ours.count += theirs.count;
                    ours.first = ours.first.min(theirs.first);
                    ours.last = ours.last.max(theirs.last);
                }
                None => {
                    self.events.insert(name.clone(), *theirs);
                }
            }
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
            .flat_map(|h| h.folded.iter().chain(h.exact.iter()))
            .filter(move |o| o.at > start && o.at <= now)
    }

    /// The same occurrences as [`UserState::occurrences_within`], exact ones newest first,
    /// so a count that may stop early usually stops after the latest few.
    pub fn occurrences_within_newest_first(
        &self,
        event: &str,
        now: Ts,
        within: Duration,
    ) -> impl Iterator<Item = &Occurrence> {
        let start = now.saturating_sub(within);
        let inside = move |o: &&Occurrence| o.at > start && o.at <= now;
        self.recent.get(event).into_iter().flat_map(move |h| {
            // Exact occurrences are kept in time order: past the window's start, none is left.
            let exact = h
                .exact
                .iter()
                .rev()
                .skip_while(move |o| o.at > now)
                .take_while(move |o| o.at > start);
            exact.chain(h.folded.iter().rev().filter(inside))
        })
    }

    /// Forgets the statistics of the least recently seen event names until at most `limit`
    /// remain, never one that `tracking` says a definition refers to; returns how many were
    /// forgotten. Referred names count toward the limit but never go: a user whose referred
    /// names alone reach it keeps exactly those.
    ///
    /// Order: the oldest last occurrence (event time) goes first; on a tie, the name that
    /// sorts first, so replays forget the same names.
    pub fn bound_event_names(&mut self, limit: usize, tracking: &Tracking) -> usize {
        let excess = self.events.len().saturating_sub(limit);
        if excess == 0 {
            return 0;
        }
        let mut candidates: Vec<(Ts, &String)> = self
            .events
            .iter()
            .filter(|(name, _)| !tracking.refers_to(name))
            .map(|(name, stats)| (stats.last, name))
            .collect();
        let n = excess.min(candidates.len());
        if n == 0 {
            return 0;
        }
        // Only the `n` oldest need to be in order among themselves: no full sort.
        if n < candidates.len() {
            candidates.select_nth_unstable(n - 1);
        }
        let gone: Vec<String> = candidates[..n].iter().map(|(_, k)| (*k).clone()).collect();
        for name in &gone {
            self.events.remove(name);
            // Occurrences only exist for names definitions asked for; a name no longer
            // referred to keeps none worth having.
            self.recent.remove(name);
        }
        self.event_names_evicted += n as u64;
        n
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

/// Drops occurrences at or before `horizon` and folds the oldest exact ones beyond
/// [`EXACT_OCCURRENCES`] into buckets sized for `window`.
fn trim_history(history: &mut History, horizon: Ts, window: Duration) {
    let list = &mut history.exact;
    while list.front().is_some_and(|o| o.at <= horizon) {
        list.pop_front();
    }
    let width = bucket_width(window).0.max(1);
    while list.len() > EXACT_OCCURRENCES {
        let Some(mut oldest) = list.pop_front() else {
            break;
        };
        // The bucket's last millisecond: folded occurrences leave windows late, not early.
        oldest.at = Ts(oldest.at.0.div_euclid(width) * width + width - 1);
        let folded = &mut history.folded;
        let same = folded
            .iter_mut()
            .rev()
            .take(8)
            .find(|b| b.at == oldest.at && b.props == oldest.props);
        match same {
            Some(bucket) => bucket.count = bucket.count.saturating_add(1),
            None => {
                let pos = folded.partition_point(|o| o.at <= oldest.at);
                folded.insert(pos, oldest);
            }
        }
    }
    let folded = &mut history.folded;
    while folded.front().is_some_and(|o| o.at <= horizon) || folded.len() > MAX_BUCKETS {
        folded.pop_front();
    }
}

fn min_opt(a: Option<Ts>, b: Option<Ts>) -> Option<Ts> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Two time-ordered occurrence lists as one, still in time order (ours first on a tie).
fn merge_sorted(
    ours: &VecDeque<Occurrence>,
    theirs: &VecDeque<Occurrence>,
) -> VecDeque<Occurrence> {
    let mut all: Vec<Occurrence> = ours.iter().chain(theirs).cloned().collect();
    all.sort_by_key(|o| o.at);
    all.into()
}

/// Traits whose merge takes the stricter answer rather than the newer one.
fn is_opt_out(name: &str) -> bool {
    name == "unsubscribed" || name.ends_with("_opt_out")
}

/// A user's answer about being contacted, which applies whatever the size of their traits.
/// Only the shapes the consent check reads count (a boolean, a number, a short text such as
/// `yes`), so an opt-out name cannot carry a large value.
fn is_consent(name: &str, value: &serde_json::Value) -> bool {
    let answer =
        value.is_boolean() || value.is_number() || value.as_str().is_some_and(|s| s.len() <= 8);
    (is_opt_out(name) && answer) || (name == "consent" && value.is_object())
}

/// What one trait counts toward the size limit: its name's length plus its value's as JSON.
fn trait_bytes(name: &str, value: &serde_json::Value) -> usize {
    /// Counts what would be written, without keeping it.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let mut count = Count(0);
    // Writing a JSON value to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    name.len() + count.0
}

/// One trait of two ids of the same person, as the merged user keeps it (see
/// [`UserState::absorb`]).
fn merge_trait(name: &str, ours: &TraitValue, theirs: &TraitValue) -> TraitValue {
    use serde_json::Value;

    let at = ours.at.max(theirs.at);
    let newer = if theirs.at > ours.at { theirs } else { ours };
    let value = match (name, &ours.value, &theirs.value) {
        (n, Value::Bool(a), Value::Bool(b)) if is_opt_out(n) => Value::Bool(*a || *b),
        ("consent", Value::Object(a), Value::Object(b)) => {
            let (older, newer_map) = if theirs.at > ours.at { (a, b) } else { (b, a) };
            let mut out = older.clone();
            for (channel, v) in newer_map {
                let refused = out.get(channel) == Some(&Value::Bool(false));
                if !refused {
                    out.insert(channel.clone(), v.clone());
                }
            }
            Value::Object(out)
        }
        (crate::devices::DEVICES_TRAIT, Value::Object(a), Value::Object(b)) => {
            let mut out = a.clone();
            for (platform, theirs) in b {
                let united = match (out.get(platform), theirs) {
                    (Some(Value::Array(ours)), Value::Array(theirs)) => {
                        Value::Array(unite(ours, theirs))
                    }
                    (Some(ours), _) => ours.clone(),
                    (None, theirs) => theirs.clone(),
                };
                out.insert(platform.clone(), united);
            }
            Value::Object(out)
        }
        _ => newer.value.clone(),
    };
    TraitValue { value, at }
}

/// `ours`, then whatever of `theirs` it lacks, in order.
fn unite(ours: &[serde_json::Value], theirs: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let mut out = ours.to_vec();
    for v in theirs {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    out
}

fn merge_journey_history(ours: &mut JourneyHistory, theirs: &JourneyHistory) {
    if theirs.last_entered > ours.last_entered {
        ours.arm = theirs.arm.clone();
        ours.converted = theirs.converted;
        ours.attribution_until = theirs.attribution_until;
    }
    ours.entries += theirs.entries;
    ours.last_entered = ours.last_entered.max(theirs.last_entered);
    ours.last_exit = ours.last_exit.max(theirs.last_exit);
    // `goal_or_exit` stays ours: theirs numbers the other id's instances, not these.
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
        let inside = |now| {
            s.occurrences_within("Order Completed", Ts(now), Duration(1000))
                .map(|o| o.count)
                .sum::<u32>()
        };
        assert_eq!(inside(1999), 2);
        assert_eq!(
            inside(2000),
            1,
            "an event exactly one window old is outside"
        );
        assert_eq!(inside(2001), 0);
    }

    #[test]
    fn old_occurrences_fold_into_buckets_that_leave_late_never_early() {
        let mut s = UserState::new("w", "u1");
        let mut t = Tracking::default();
        let week = Duration::hours(7 * 24);
        t.track("Order Completed", week, []);
        // 600 orders a minute apart: the oldest 88 are folded into hourly buckets.
        for i in 0..600 {
            let e = event(&format!("m{i}"), "Order Completed", i * 60_000, json!({}));
            s.observe(&e, &t);
        }
        let h = &s.recent["Order Completed"];
        assert_eq!(h.exact.len(), EXACT_OCCURRENCES);
        assert_eq!(h.folded.len(), 2, "88 minutes fold into 2 hourly buckets");
        let total = |now| {
            s.occurrences_within("Order Completed", Ts(now), week)
                .map(|o| o.count)
                .sum::<u32>()
        };
        assert_eq!(total(600 * 60_000), 600);
        // The first order (t=0) is exactly a week old, but its bucket ends at 1h - 1ms.
        assert_eq!(total(week.0), 600, "folded ones stay up to one bucket late");
        assert_eq!(
            total(week.0 + 3_600_000 - 1),
            540,
            "the first hour's bucket has left"
        );
    }

    #[test]
    fn only_tracked_properties_are_kept() {
        let mut s = UserState::new("w", "u1");
        let mut t = Tracking::default();
        t.track(
            "Product Viewed",
            Duration::hours(24),
            ["category".to_string()],
        );
        s.observe(
            &event(
                "a",
                "Product Viewed",
                5,
                json!({"category": "c", "sku": "x"}),
            ),
            &t,
        );
        let kept = &s.recent["Product Viewed"].exact[0].props;
        assert_eq!(kept.get("category"), Some(&json!("c")));
        assert!(kept.get("sku").is_none());
    }
    #[test]
    fn least_recently_seen_names_go_first_and_referred_ones_stay() {
        let mut s = UserState::new("w", "u1");
        let mut t = Tracking::default();
        t.refer("Order Completed");
        t.refer("*");
        // Seen at 10, 20, 30, 40, 50; `Order Completed` is the oldest but referred to.
        let names = ["Order Completed", "B", "A", "C", "D"];
        for (i, name) in names.iter().enumerate() {
            let at = 10 * (i as i64 + 1);
            s.observe(&event(&format!("m{i}"), name, at, json!({})), &t);
        }
        // `C` comes again later than the others, so it is the most recent of them.
        s.observe(&event("m9", "C", 60, json!({})), &t);
        // A late event for `B` does not make it recent: its last occurrence is still 20.
        s.observe(&event("m10", "B", 5, json!({})), &t);

        assert_eq!(
            s.bound_event_names(5, &t),
            0,
            "within the limit, nothing goes"
        );
        assert_eq!(s.bound_event_names(3, &t), 2);
        let kept: Vec<&str> = s.events.keys().map(String::as_str).collect();
        assert_eq!(kept, ["C", "D", "Order Completed"]);
        assert_eq!(s.event_names_evicted, 2);

        // A limit below the referred names keeps just those.
        assert_eq!(s.bound_event_names(0, &t), 2);
        let kept: Vec<&str> = s.events.keys().map(String::as_str).collect();
        assert_eq!(kept, ["Order Completed"]);
        assert_eq!(s.bound_event_names(0, &t), 0);
        assert_eq!(s.event_names_evicted, 4);
    }

    #[test]
    fn names_seen_at_the_same_instant_go_in_name_order() {
        let mut s = UserState::new("w", "u1");
        let t = Tracking::default();
        for (i, name) in ["b", "c", "a"].iter().enumerate() {
            s.observe(&event(&format!("m{i}"), name, 7, json!({})), &t);
        }
        assert_eq!(s.bound_event_names(1, &t), 2);
        assert_eq!(s.events.keys().collect::<Vec<_>>(), ["c"]);
    }

    fn identify(id: &str, at: i64, traits: serde_json::Value) -> Event {
        Event {
            kind: EventKind::Identify,
            traits: traits.as_object().cloned().unwrap_or_default(),
            ..event(id, "", at, json!({}))
        }
    }

    fn small_limits() -> StateLimits {
        StateLimits {
            trait_bytes: 1_000,
            ..StateLimits::default()
        }
    }

    #[test]
    fn traits_that_do_not_fit_are_dropped_and_counted() {
        let mut s = UserState::new("w", "u1");
        let t = Tracking::default();
        let limits = small_limits();
        let big = "x".repeat(300);
        // Each trait costs its name (2 bytes) plus 302 (the quoted string): three fit in 1,000.
        for i in 0..5 {
            let e = identify(&format!("m{i}"), 10 + i, json!({ format!("k{i}"): big }));
            assert!(s.observe_within(&e, &t, &limits));
        }
        assert_eq!(s.traits.keys().collect::<Vec<_>>(), ["k0", "k1", "k2"]);
        assert_eq!(s.traits_bytes(), 3 * 304);
        assert_eq!(s.traits_dropped, 2);

        // A kept trait may still change, to a value of any size that fits.
        let e = identify("m5", 20, json!({"k0": "y".repeat(380)}));
        s.observe_within(&e, &t, &limits);
        assert_eq!(s.trait_value("k0"), Some(&json!("y".repeat(380))));
        let e = identify("m6", 21, json!({"k1": "z".repeat(400)}));
        s.observe_within(&e, &t, &limits);
        assert_eq!(
            s.trait_value("k1"),
            Some(&json!(big)),
            "would not fit: kept"
        );
        assert_eq!(s.traits_dropped, 3);

        // An update older than the stored value is ignored as before, not counted as dropped.
        let e = identify("m7", 1, json!({"k2": "z".repeat(900)}));
        s.observe_within(&e, &t, &limits);
        assert_eq!(s.traits_dropped, 3);
        assert!(s.traits_bytes() <= limits.trait_bytes);
    }

    #[test]
    fn opt_outs_and_shrinking_changes_apply_past_the_limit() {
        let mut s = UserState::new("w", "u1");
        let t = Tracking::default();
        // Set without a limit, as a record written before the limit was lowered would be.
        s.set_trait("notes", json!("n".repeat(2_000)), Ts(1));
        let limits = small_limits();

        let e = identify(
            "m1",
            10,
            json!({
                "unsubscribed": true,
                "email_opt_out": true,
                "consent": {"sms": false},
                "plan": "pro",
                "sms_opt_out": "y".repeat(50),
            }),
        );
        s.observe_within(&e, &t, &limits);
        assert_eq!(s.trait_value("unsubscribed"), Some(&json!(true)));
        assert_eq!(s.trait_value("email_opt_out"), Some(&json!(true)));
        assert_eq!(s.trait_value("consent"), Some(&json!({"sms": false})));
        assert_eq!(s.trait_value("plan"), None);
        assert_eq!(
            s.trait_value("sms_opt_out"),
            None,
            "not a boolean: no exemption"
        );
        assert_eq!(s.traits_dropped, 2);

        // Shrinking the oversized trait applies, and then new traits fit again.
        s.observe_within(&identify("m2", 11, json!({"notes": "short"})), &t, &limits);
        s.observe_within(&identify("m3", 12, json!({"plan": "pro"})), &t, &limits);
        assert_eq!(s.trait_value("notes"), Some(&json!("short")));
        assert_eq!(s.trait_value("plan"), Some(&json!("pro")));
        assert_eq!(s.traits_dropped, 2);
    }

    #[test]
    fn a_merge_keeps_the_traits_within_the_limit() {
        let t = Tracking::default();
        let limits = small_limits();
        let big = "x".repeat(300);
        let mut ours = UserState::new("w", "u1");
        let mut theirs = UserState::new("w", "anon");
        for i in 0..3 {
            ours.set_trait(&format!("a{i}"), json!(big), Ts(1));
            theirs.set_trait(&format!("b{i}"), json!(big), Ts(2));
        }
        theirs.set_trait("unsubscribed", json!(true), Ts(2));

        ours.absorb(&theirs, &t, &limits);
        assert_eq!(ours.trait_value("unsubscribed"), Some(&json!(true)));
        assert!(ours.trait_value("b0").is_none());
        assert_eq!(ours.traits_dropped, 3);
        assert!(ours.traits_bytes() <= limits.trait_bytes);
    }
}
