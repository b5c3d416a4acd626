//! The evaluator: (user state, trigger) in, new state and effects out.
//!
//! Order of work for an event, chosen so that stopping wins over sending:
//! 1. the event is folded into the behavioral state (a repeated message id stops here);
//! 2. goals and exit events end running instances and cancel their timers; a goal also
//!    counts a conversion, even for a user who already left, within the attribution window;
//! 3. instances waiting for this event move on;
//! 4. segment memberships are brought up to date, and journeys entered on a segment change
//!    start;
//! 5. journeys whose entry event matches start new instances.
//!
//! A timer whose id no longer matches its instance (the instance exited, or moved on) is stale
//! and does nothing, which is what makes a timer fired twice apply once.
//!
//! Keyed journeys (`entry.key: cart_id`) run one instance per key value. An event that carries
//! the key property reaches only the instance with that key (its goal, exits and waits); an
//! event without it reaches every instance of the journey.

use std::fmt::Write as _;
use std::sync::Arc;

use ahash::AHashMap;
use beckon_core::{
    ApiEntry, Decision, DecisionKind, Effect, Event, EventKind, HOLDOUT_ARM, JourneyInstance,
    Membership, MergeIn, MergeOut, MergeStage, OutboundMessage, Props, StateLimits, Timer,
    TimerKind, Tracking, Trigger, Ts, UserState,
};
use serde_json::{Value, json};

use crate::condition::{Context, props_match};
use crate::cycle::MIN_LOOP_WAIT;
use crate::journey::{
    Definitions, EntryTrigger, Journey, LiveActivity, LiveValue, Message, Policy, Segment,
    StepKind, Target, WaitUntil,
};
use crate::localtime;
use crate::spec::{Channel, LiveActivityEvent, OnCap, Reentry, SegmentEdge};
use crate::template::Escape;

use beckon_core::delivery;
use beckon_core::ids::{MAX_ID_BYTES, MAX_KEY_BYTES, MAX_WORKSPACE_BYTES};

/// The channel Live Activity steps send on.
pub const LIVE_ACTIVITY: &str = "live_activity";

/// Steps one trigger may run for one instance before the instance is stopped. Loading refuses
/// loops with no waiting step in them, and paces every loop of a journey published before it
/// did, so this only guards against what those cannot see; README and SPECS give the number.
const MAX_STEPS_PER_TRIGGER: usize = 64;

/// Most bytes a journey id and one of its step ids may take together, so that the key of
/// every message sent from the step fits [`MAX_KEY_BYTES`] whatever the workspace, user id
/// and counters: the longest workspace and user id, the longest instance number (`u64`) and
/// visit count (`u32`) in digits, and the five `:` between the parts of [`send_key`].
pub const MAX_JOURNEY_AND_STEP_ID_BYTES: usize =
    MAX_KEY_BYTES - MAX_WORKSPACE_BYTES - MAX_ID_BYTES - 20 - 10 - 5;

/// A message's idempotency key: one per user, instance, step and visit of the step, so a
/// retried send is delivered once and a loop's next round is a new message.
fn send_key(
    workspace: &str,
    user: &str,
    journey: &str,
    instance: u64,
    step: &str,
    visits: u32,
) -> String {
    let parts = [workspace, user, journey, step];
    let mut key = String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 36);
    for part in &parts[..3] {
        key.push_str(part);
        key.push(':');
    }
    push_decimal(&mut key, instance);
    key.push(':');
    key.push_str(step);
    key.push(':');
    push_decimal(&mut key, u64::from(visits));
    key
}

/// An instance's timer id for one visit of its step: `<journey>:<instance>:<visit>`.
fn timer_id(journey: &str, instance: u64, visits: u32) -> String {
    let mut id = String::with_capacity(journey.len() + 32);
    id.push_str(journey);
    id.push(':');
    push_decimal(&mut id, instance);
    id.push(':');
    push_decimal(&mut id, u64::from(visits));
    id
}

/// Appends `n` in decimal. Keys and timer ids are built at every send and wait, where going
/// through the formatting machinery cost several times the copying itself.
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// Whether a journey takes new users and sends. Engine-level: a published version never
/// changes, but an operator can stop using it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JourneyStatus {
    #[default]
    Active,
    /// No new entries; users in flight keep moving, but their messages are skipped.
    Paused,
    /// No new entries; users in flight leave at their next trigger.
    Archived,
}

/// Published definitions, ready to evaluate. Cheap to share between threads.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    /// The newest version of each journey, in id order, for entries.
    latest: Vec<Arc<Journey>>,
    latest_index: AHashMap<String, usize>,
    /// Every version, by id then version, for instances that entered an older one. Two
    /// levels, so a lookup borrows the instance's journey id instead of copying it.
    versions: AHashMap<String, AHashMap<u32, Arc<Journey>>>,
    /// The newest version of each segment, in id order.
    segments: Vec<Arc<Segment>>,
    policy: Policy,
    status: AHashMap<String, JourneyStatus>,
    tracking: Tracking,
    /// Bounds on each user's state; the deployment's, not the definitions'.
    limits: StateLimits,
    /// Event names any journey has as its goal: most events are none of them, and skip the
    /// conversion check at the cost of a few string comparisons.
    goal_events: Vec<String>,
    /// Event names any journey has as its goal or an exit event, for the same reason.
    end_events: Vec<String>,
}

/// The evaluator in force now. A new release of the definitions replaces it whole; a trigger
/// being evaluated keeps the one it started with.
///
/// The state limits of the first engine stay in force: they are the deployment's setting, and
/// an engine built from a new release (which knows nothing of them) takes them on.
#[derive(Clone)]
pub struct CurrentEngine {
    engine: Arc<arc_swap::ArcSwap<Engine>>,
    limits: StateLimits,
}

impl CurrentEngine {
    pub fn new(engine: Arc<Engine>) -> CurrentEngine {
        CurrentEngine {
            limits: engine.limits,
            engine: Arc::new(arc_swap::ArcSwap::new(engine)),
        }
    }

    /// The engine in force, cheaply, for one evaluation.
    pub fn get(&self) -> arc_swap::Guard<Arc<Engine>> {
        self.engine.load()
    }

    /// Puts a new engine in force for every evaluation that starts from now on.
    pub fn replace(&self, engine: Arc<Engine>) {
        let engine = if engine.limits == self.limits {
            engine
        } else {
            Arc::new(Arc::unwrap_or_clone(engine).with_state_limits(self.limits))
        };
        self.engine.store(engine);
    }
}

impl From<Arc<Engine>> for CurrentEngine {
    fn from(engine: Arc<Engine>) -> CurrentEngine {
        CurrentEngine::new(engine)
    }
}

impl From<Engine> for CurrentEngine {
    fn from(engine: Engine) -> CurrentEngine {
        CurrentEngine::new(Arc::new(engine))
    }
}

impl Engine {
    pub fn new(journeys: Vec<Journey>) -> Engine {
        Engine::from_definitions(Definitions {
            journeys,
            ..Definitions::default()
        })
    }

    /// An engine for one workspace's definitions: journeys, segments and at most one policy
    /// (the first wins).
    pub fn from_definitions(defs: Definitions) -> Engine {
        let mut engine = Engine::default();
        let mut latest: AHashMap<String, Arc<Journey>> = AHashMap::new();
        for j in defs.journeys {
            j.track(&mut engine.tracking);
            let j = Arc::new(j);
            engine
                .versions
                .entry(j.id.clone())
                .or_default()
                .insert(j.version, j.clone());
            let newer = latest.get(&j.id).is_none_or(|cur| cur.version < j.version);
            if newer {
                latest.insert(j.id.clone(), j);
            }
        }
        engine.latest = latest.into_values().collect();
        engine.latest.sort_by(|a, b| a.id.cmp(&b.id));
        engine.latest_index = engine
            .latest
            .iter()
            .enumerate()
            .map(|(i, j)| (j.id.clone(), i))
            .collect();
        for j in engine.versions.values().flat_map(|v| v.values()) {
            if let Some(g) = &j.goal
                && !engine.goal_events.contains(&g.event)
            {
                engine.goal_events.push(g.event.clone());
            }
        }
        engine.goal_events.sort();
        for j in engine.versions.values().flat_map(|v| v.values()) {
            let names = j.goal.iter().chain(&j.exit_on).map(|m| &m.event);
            for name in names {
                if !engine.end_events.contains(name) {
                    engine.end_events.push(name.clone());
                }
            }
        }
        engine.end_events.sort();

        let mut segments: AHashMap<String, Arc<Segment>> = AHashMap::new();
        for s in defs.segments {
            s.condition.track(&mut engine.tracking);
            let newer = segments
                .get(&s.id)
                .is_none_or(|cur| cur.version < s.version);
            if newer {
                segments.insert(s.id.clone(), Arc::new(s));
            }
        }
        engine.segments = segments.into_values().collect();
        engine.segments.sort_by(|a, b| a.id.cmp(&b.id));

        if let Some(policy) = defs.policies.into_iter().next() {
            if let Some(longest) = policy.caps.iter().map(|c| c.per).max() {
                engine.tracking.track_sends(longest);
            }
            engine.policy = policy;
        }
        engine
    }

    pub fn journeys(&self) -> &[Arc<Journey>] {
        &self.latest
    }

    pub fn segments(&self) -> &[Arc<Segment>] {
        &self.segments
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn tracking(&self) -> &Tracking {
        &self.tracking
    }

    /// What an explanation of `state` should say besides its decisions: whether conditions
    /// may have seen less than the user did.
    pub fn notes(&self, state: &UserState) -> Vec<String> {
        let mut notes = Vec::new();
        if state.event_names_evicted > 0 {
            notes.push(format!(
                "{} event names were forgotten from this user's statistics to stay within the \
                 limit of {} distinct names per user, least recently seen first. Names the \
                 journeys and segments refer to are never forgotten; a condition published \
                 later on a forgotten name counts only what came after it was forgotten.",
                state.event_names_evicted, self.limits.event_names
            ));
        }
        if state.traits_dropped > 0 {
            notes.push(format!(
                "{} trait changes were dropped because they would have taken this user's \
                 traits past the limit of {} bytes (names plus values as JSON); the traits \
                 kept the values they had. Opt-outs and consent always apply.",
                state.traits_dropped, self.limits.trait_bytes
            ));
        }
        notes
    }

    /// The same engine, bounding users' state by `limits` instead of the defaults.
    pub fn with_state_limits(mut self, limits: StateLimits) -> Engine {
        self.limits = limits;
        self
    }

    pub fn state_limits(&self) -> StateLimits {
        self.limits
    }

    /// Pauses, resumes or archives a journey (all its versions).
    pub fn set_status(&mut self, journey: &str, status: JourneyStatus) {
        self.status.insert(journey.to_string(), status);
    }

    pub fn status(&self, journey: &str) -> JourneyStatus {
        self.status.get(journey).copied().unwrap_or_default()
    }

    /// Applies a trigger to a user and returns what must happen as a result.
    pub fn apply(&self, state: &mut UserState, trigger: &Trigger) -> Vec<Effect> {
        // Forgetting leaves nothing to evaluate: the user is empty again, a tombstone included
        // (it forwards nothing more). Timers and stored data are let go of by whoever keeps
        // them, in the same log order.
        if let Trigger::Forget(_) = trigger {
            *state = UserState::new(&state.workspace, &state.user);
            return Vec::new();
        }
        let mut run = Run {
            engine: self,
            effects: Vec::new(),
        };
        if let Some(into) = state.merged_into.clone() {
            run.forward(state, trigger, &into);
            return run.effects;
        }
        match trigger {
            Trigger::Event(event) => run.on_event(state, event),
            Trigger::MergeOut(m) => run.merge_out(state, m),
            Trigger::MergeIn(m) => run.merge_in(state, m),
            Trigger::Timer(timer) => match timer.kind() {
                TimerKind::Journey => run.on_timer(state, timer),
                TimerKind::Segment => {
                    state.version += 1;
                    let why = Why::Time;
                    run.update_segments(state, timer.due.max(state.clock), &Props::new(), why);
                }
            },
            Trigger::Api(call) => run.on_api(state, call),
            Trigger::Forget(_) => {}
        }
        state.clock = state.clock.max(trigger.at());

        // After the evaluation, which saw every name this trigger brought; names definitions
        // refer to are kept, so what they decide later does not change.
        state.bound_event_names(self.limits.event_names, &self.tracking);
        run.effects
    }

    fn journey_by_id(&self, id: &str) -> Option<&Arc<Journey>> {
        self.latest_index.get(id).and_then(|&i| self.latest.get(i))
    }
}

struct Run<'e> {
    engine: &'e Engine,
    effects: Vec<Effect>,
}

/// Why an instance ended.
#[derive(Clone, Copy)]
enum End {
    Goal,
    Exit,
    Completed,
}

/// What moved segment memberships, for explanations.
#[derive(Clone, Copy)]
enum Why<'a> {
    Event(&'a str),
    Time,
    Merge(&'a str),
}

/// What a message step did.
enum Sent {
    /// Sent, or given up on for good: the instance moves on.
    Done,
    /// Held back; try again at this instant.
    Deferred(Ts),
}

impl<'e> Run<'e> {
    fn on_event(&mut self, state: &mut UserState, event: &Event) {
        if !state.observe_within(event, &self.engine.tracking, &self.engine.limits) {
            return;
        }
        let now = event.timestamp;
        self.ask_for_merge(state, event);
        self.note_delivery(state, event);

        let ended = self.goals_and_exits(state, event);
        self.note_goal_or_exit(state, event, &ended);
        self.conversions_after_exit(state, event);

        // Instances waiting for this event move on. Collect first: running steps may end them.
        let waiting: Vec<u64> = state
            .journeys
            .iter()
            .filter(|inst| self.waits_for(inst, event))
            .map(|inst| inst.id)
            .collect();
        for id in waiting {
            let Some(i) = state.journeys.iter().position(|x| x.id == id) else {
                continue;
            };
            let Some(j) = self.journey_of(&state.journeys[i]) else {
                continue;
            };
            let Some(s) = self.step_of(j, &state.journeys[i]) else {
                continue;
            };
            let StepKind::WaitFor { on_event, .. } = j.steps[s].kind else {
                continue;
            };
            self.cancel_timer(&state.workspace, &state.user, &mut state.journeys[i]);
            let from = self.step_of(j, &state.journeys[i]);
            self.go(state, i, j, from, on_event, now, &event.properties);
        }

        if !self.engine.segments.is_empty() {
            let at = now.max(state.clock);
            self.update_segments(state, at, &event.properties, Why::Event(&event.name));
        }
        if event.kind != EventKind::Alias {
            self.enter_on_event(state, event);
        }
    }

    /// A gateway's report of what became of a sent message is noted beside the `sent`
    /// decision it is about, before anything the same event moves on (a journey waiting for
    /// `Message Failed`), so the record reads in the order things happened.
    fn note_delivery(&mut self, state: &mut UserState, event: &Event) {
        let Some(mut d) = beckon_core::delivery::note(event) else {
            return;
        };
        d.arm = state
            .journeys
            .iter()
            .find(|inst| inst.id == d.instance && inst.journey == d.journey)
            .and_then(|inst| inst.arm.clone());
        self.record(state, d);
    }

    /// An event naming a second id of the user (an alias's `previousId`, or the
    /// `anonymousId` next to a `userId`) asks that id's partition to hand its state over,
    /// once per id.
    fn ask_for_merge(&mut self, state: &mut UserState, event: &Event) {
        let other = match event.kind {
            EventKind::Alias => event.previous_id.as_deref(),
            _ => event.anonymous_id.as_deref(),
        };
        let Some(other) = other.filter(|o| !o.is_empty() && *o != state.user) else {
            return;
        };
        if state.merged.contains_key(other) {
            return;
        }
        state
            .merged
            .insert(other.to_string(), MergeStage::Requested);
        let request = MergeOut {
            user: other.to_string(),
            into: state.user.clone(),
            at: event.timestamp,
            cause: event.message_id.clone(),
        };
        self.effects.push(Effect::Forward {
            key: format!("merge-out:{}", event.message_id),
            trigger: Trigger::MergeOut(request),
        });
    }

    /// The id being merged away hands over a copy of its state, cancels its own timers and
    /// becomes a forwarding tombstone. Asked twice, it answers once.
    fn merge_out(&mut self, state: &mut UserState, m: &MergeOut) {
        if m.into == state.user {
            return;
        }
        let snapshot = state.clone();
        for inst in &mut state.journeys {
            self.cancel_timer(&snapshot.workspace, &snapshot.user, inst);
        }
        for (segment, membership) in &snapshot.segments {
            if membership.due.is_some() {
                self.effects.push(Effect::CancelTimer {
                    workspace: snapshot.workspace.clone(),
                    user: snapshot.user.clone(),
                    id: format!("{}{segment}", beckon_core::SEGMENT_TIMER_PREFIX),
                });
            }
        }

        let mut tombstone = UserState::new(&snapshot.workspace, &snapshot.user);
        tombstone.version = snapshot.version + 1;
        tombstone.clock = snapshot.clock.max(m.at);
        tombstone.merged_into = Some(m.into.clone());
        *state = tombstone;
        let reason = format!("merged into {}", m.into);
        self.record(state, decision(m.at, "", "", DecisionKind::Merged, reason));

        let handover = MergeIn {
            user: m.into.clone(),
            from: snapshot.user.clone(),
            at: m.at,
            cause: m.cause.clone(),
            snapshot: Box::new(snapshot),
        };
        self.effects.push(Effect::Forward {
            key: format!("merge-in:{}", handover.cause),
            trigger: Trigger::MergeIn(handover),
        });
    }

    /// The known user takes over the merged id's history and running journeys. Journeys the
    /// user is already in keep the user's own position; the other id's instance of them ends.
    fn merge_in(&mut self, state: &mut UserState, m: &MergeIn) {
        if m.from == state.user || state.merged.get(&m.from) == Some(&MergeStage::Done) {
            return;
        }
        let now = m.at.max(state.clock);
        let other = &m.snapshot;
        state.absorb(other, &self.engine.tracking, &self.engine.limits);
        state.merged.insert(m.from.clone(), MergeStage::Done);
        for id in other.merged.keys() {
            state.merged.entry(id.clone()).or_insert(MergeStage::Done);
        }
        let reason = format!("took over {}", m.from);
        self.record(state, decision(now, "", "", DecisionKind::Merged, reason));

        for inst in &other.journeys {
            let taken = state
                .journeys
                .iter()
                .any(|x| x.journey == inst.journey && x.key == inst.key);
            if taken {
                let reason = format!("{} was merged in while the user was in it", m.from);
                let d = decision(now, &inst.journey, &inst.step, DecisionKind::Exited, reason);
                self.record(state, d);
                continue;
            }
            let mut moved = inst.clone();
            moved.id = state.next_instance;
            state.next_instance += 1;
            moved.timer = None;
            moved.due = None;
            state.journeys.push(moved);
            let i = state.journeys.len() - 1;
            // A new instance id gives the timer a new id under the new user.
            if let Some(due) = inst.due.filter(|_| inst.timer.is_some()) {
                self.wait(state, i, due);
            }
            let reason = format!("moved over from {}", m.from);
            let d = self.about(
                decision(now, &inst.journey, &inst.step, DecisionKind::Merged, reason),
                &state.journeys[i],
            );
            self.record(state, d);
        }

        if !self.engine.segments.is_empty() {
            self.update_segments(state, now, &Props::new(), Why::Merge(&m.from));
        }
    }

    /// A tombstone passes what comes for it on to the user it was merged into. Its own
    /// timers were cancelled when it was merged; one that fires anyway does nothing.
    fn forward(&mut self, state: &mut UserState, trigger: &Trigger, into: &str) {
        let (key, trigger) = match trigger {
            Trigger::Event(e) => {
                let mut e = e.clone();
                e.user = into.to_string();
                (format!("fwd:{}", e.message_id), Trigger::Event(e))
            }
            Trigger::Api(a) => {
                let mut a = a.clone();
                a.user = into.to_string();
                let key = format!("fwd-api:{}:{}", a.journey, a.at.0);
                (key, Trigger::Api(a))
            }
            Trigger::MergeIn(m) => {
                let mut m = m.clone();
                m.user = into.to_string();
                (format!("fwd-merge-in:{}", m.cause), Trigger::MergeIn(m))
            }
            Trigger::MergeOut(m) => {
                if m.into != into {
                    let reason = format!("not merged into {}: already merged into {into}", m.into);
                    self.record(state, decision(m.at, "", "", DecisionKind::Merged, reason));
                }
                return;
            }
            Trigger::Timer(_) | Trigger::Forget(_) => return,
        };
        tracing::debug!(user = %state.user, into, "forwarded to the merged user");
        self.effects.push(Effect::Forward { key, trigger });
    }

    /// Goals and exit events first: a purchase ends the cart reminder before anything else.
    /// Returns the journeys it ended instances of, each with what ended them.
    fn goals_and_exits(&mut self, state: &mut UserState, event: &Event) -> Vec<(String, String)> {
        let now = event.timestamp;
        let mut ended: Vec<(String, String)> = Vec::new();
        let mut i = 0;
        while i < state.journeys.len() {
            let Some(j) = self.journey_of(&state.journeys[i]) else {
                i += 1;
                continue;
            };
            if !key_matches(j, &state.journeys[i], event) {
                i += 1;
                continue;
            }
            let goal = j
                .goal
                .as_ref()
                .is_some_and(|g| event_matches(event, &g.event, &g.filter));
            let end = if goal {
                Some(End::Goal)
            } else if j
                .exit_on
                .iter()
                .any(|x| event_matches(event, &x.event, &x.filter))
            {
                Some(End::Exit)
            } else {
                None
            };
            match end {
                Some(end) => {
                    if goal {
                        self.convert(state, j, now, &event.name);
                    }
                    let what = if goal { "goal" } else { "exit event" };
                    let reason = format!("{what} {} happened", event.name);
                    if !ended.iter().any(|(id, _)| *id == j.id) {
                        ended.push((j.id.clone(), reason.clone()));
                    }
                    self.finish(state, i, end, now, reason);
                }
                None => i += 1,
            }
        }
        ended
    }

    /// Notes a goal or exit event of every journey the user has been in, running or not, so
    /// that a message of theirs still waiting in the gateway's retry queue is withdrawn
    /// however many decisions later the gateway looks. `ended` is what
    /// [`Run::goals_and_exits`] ended with this event; an instance still running now was
    /// spared by it.
    fn note_goal_or_exit(
        &mut self,
        state: &mut UserState,
        event: &Event,
        ended: &[(String, String)],
    ) {
        let named = |n: &String| *n == event.name || n == "*";
        if ended.is_empty() && !self.engine.end_events.iter().any(named) {
            return;
        }

        let mut marks = Vec::new();
        for id in state.history.keys() {
            let done = ended.iter().find(|(j, _)| j == id);
            let reason = match done {
                Some((_, reason)) => reason.clone(),
                None => match self.engine.journey_by_id(id).and_then(|j| ends(j, event)) {
                    Some(reason) => reason,
                    None => continue,
                },
            };
            let spared = state
                .journeys
                .iter()
                .filter(|inst| inst.journey == *id)
                .map(|inst| inst.id)
                .collect();
            marks.push((id.clone(), spared, reason));
        }

        for (id, spared, reason) in marks {
            if let Some(h) = state.history.get_mut(&id) {
                h.goal_or_exit = Some(beckon_core::state::GoalOrExit {
                    at: event.timestamp,
                    below: state.next_instance,
                    spared,
                    reason,
                });
            }
        }
    }

    /// A goal reached after the user left still counts, within the attribution window.
    fn conversions_after_exit(&mut self, state: &mut UserState, event: &Event) {
        if !self.engine.goal_events.contains(&event.name) {
            return;
        }
        let now = event.timestamp;
        let mut converted = Vec::new();
        for (id, h) in &state.history {
            if h.converted || h.attribution_until.is_none_or(|until| now > until) {
                continue;
            }
            let Some(j) = self.engine.journey_by_id(id) else {
                continue;
            };
            if j.goal
                .as_ref()
                .is_some_and(|g| event_matches(event, &g.event, &g.filter))
            {
                converted.push(j.clone());
            }
        }
        for j in converted {
            self.convert(state, &j, now, &event.name);
        }
    }

    fn convert(&mut self, state: &mut UserState, j: &Journey, now: Ts, what: &str) {
        let Some(h) = state.history.get_mut(&j.id) else {
            return;
        };
        if h.converted || h.attribution_until.is_none_or(|until| now > until) {
            return;
        }
        h.converted = true;
        let arm = h.arm.clone();
        let reason = format!(
            "{what} within the {} attribution window",
            j.conversion_window
        );
        let mut d = decision(now, &j.id, "", DecisionKind::Converted, reason);
        d.arm = arm;
        self.record(state, d);
    }

    fn on_timer(&mut self, state: &mut UserState, timer: &Timer) {
        let Some(i) = state
            .journeys
            .iter()
            .position(|x| x.id == timer.instance && x.timer.as_deref() == Some(timer.id.as_str()))
        else {
            return;
        };
        let Some(j) = self.journey_of(&state.journeys[i]) else {
            return;
        };
        state.version += 1;
        state.journeys[i].timer = None;
        state.journeys[i].due = None;
        let now = timer.due;

        if self.engine.status(&j.id) == JourneyStatus::Archived {
            return self.finish(state, i, End::Exit, now, "the journey was archived".into());
        }
        let props = state.journeys[i].entry.clone();
        let step = self.step_of(j, &state.journeys[i]);

        // An instance paced on a loop now runs the step it was held before.
        if state.journeys[i].paced {
            state.journeys[i].paced = false;
            let target = step.map_or(Target::End, Target::Step);
            return self.go(state, i, j, None, target, now, &props);
        }

        // A held-back message is tried again in place; it did not move the user on.
        if state.journeys[i].deferred {
            state.journeys[i].deferred = false;
            if let Some(s) = step
                && let StepKind::Message(m) = &j.steps[s].kind
            {
                let step_id = j.steps[s].id.clone();
                match self.message(state, i, j, &step_id, m, now, &props) {
                    Sent::Deferred(due) => return self.hold(state, i, due),
                    Sent::Done => {
                        let next = j.steps[s].next;
                        return self.go(state, i, j, Some(s), next, now, &props);
                    }
                }
            }
        }

        let target = match step.map(|s| &j.steps[s].kind) {
            Some(StepKind::WaitFor { on_timeout, .. }) => *on_timeout,
            _ => step.map_or(Target::End, |s| j.steps[s].next),
        };
        self.go(state, i, j, step, target, now, &props);
    }

    fn on_api(&mut self, state: &mut UserState, call: &ApiEntry) {
        state.version += 1;
        let Some(j) = self.engine.journey_by_id(&call.journey).cloned() else {
            let reason = format!("no journey {} is published", call.journey);
            let d = decision(call.at, &call.journey, "", DecisionKind::NotEntered, reason);
            return self.record(state, d);
        };
        if j.entry.trigger != EntryTrigger::Api {
            let reason = "not entered: the journey does not allow API entry".to_string();
            let d = decision(call.at, &j.id, "", DecisionKind::NotEntered, reason);
            return self.record(state, d);
        }
        if !props_match(&call.properties, &j.entry.filter) {
            let reason = "not entered: API properties do not match the entry filter".to_string();
            let d = decision(call.at, &j.id, "", DecisionKind::NotEntered, reason);
            return self.record(state, d);
        }
        self.try_enter(state, &j, call.at, &call.properties, || {
            "entered by API call".into()
        });
    }

    fn enter_on_event(&mut self, state: &mut UserState, event: &Event) {
        let now = event.timestamp;
        for j in &self.engine.latest {
            let matches = match &j.entry.trigger {
                EntryTrigger::Event(name) => event_matches(event, name, &j.entry.filter),
                EntryTrigger::FirstSeen => state.total_events == 1,
                EntryTrigger::Segment { .. } | EntryTrigger::Api => false,
            };
            if !matches {
                continue;
            }
            // Worded only when needed: most matching events enter nothing.
            let why = || match &j.entry.trigger {
                EntryTrigger::FirstSeen => {
                    format!("entered on the first event seen ({})", event.name)
                }
                _ => format!("entered on {}", event.name),
            };
            self.try_enter(state, j, now, &event.properties, why);
        }
    }

    /// Enters `j` unless a rule keeps the user out; the decision says which.
    fn try_enter(
        &mut self,
        state: &mut UserState,
        j: &Arc<Journey>,
        now: Ts,
        props: &Props,
        why: impl FnOnce() -> String,
    ) {
        let status = self.engine.status(&j.id);
        if status != JourneyStatus::Active {
            let reason = format!("not entered: the journey is {}", status_word(status));
            return self.record(
                state,
                decision(now, &j.id, "", DecisionKind::NotEntered, reason),
            );
        }
        let key = match &j.entry.key {
            Some(k) => match props.get(k).and_then(key_text) {
                Some(v) => Some(v),
                None => {
                    let reason = format!("not entered: the entry has no {k} to key on");
                    let d = decision(now, &j.id, "", DecisionKind::NotEntered, reason);
                    return self.record(state, d);
                }
            },
            None => None,
        };
        if let Some(reason) = self.blocked(state, j, now, key.as_deref()) {
            let d = decision(now, &j.id, "", DecisionKind::NotEntered, reason);
            return self.record(state, d);
        }
        if let Some(cond) = &j.entry.condition {
            let cx = Context {
                state,
                now,
                props,
                journey: &j.id,
            };
            if !cond.eval(&cx) {
                return;
            }
        }

        let holdout = j.holdout > 0 && bucket(&[&j.id, &state.user]) < j.holdout;
        let arm = holdout.then(|| HOLDOUT_ARM.to_string());
        if !state.history.contains_key(&j.id) {
            state
                .history
                .insert(j.id.clone(), beckon_core::state::JourneyHistory::default());
        }
        let Some(hist) = state.history.get_mut(&j.id) else {
            return;
        };
        hist.entries += 1;
        hist.last_entered = now;
        hist.attribution_until = Some(now.saturating_add(j.conversion_window));
        hist.converted = false;
        hist.arm = arm.clone();
        if let Some((count, _)) = j.entry.limit {
            let log = state.entry_log.entry(j.id.clone()).or_default();
            log.at.push_back(now);
            while log.at.len() > count as usize {
                log.at.pop_front();
            }
        }

        let id = state.next_instance;
        state.next_instance += 1;
        if holdout {
            let mut d = decision(now, &j.id, "", DecisionKind::Entered, why());
            d.arm = arm.clone();
            d.instance = id;
            self.record(state, d);
            let reason = format!("held out: in the {}% holdout, sent nothing", j.holdout);
            let mut d = decision(now, &j.id, "", DecisionKind::Exited, reason);
            d.arm = arm;
            d.instance = id;
            if let Some(h) = state.history.get_mut(&j.id) {
                h.last_exit = Some(now);
            }
            return self.record(state, d);
        }

        state.journeys.push(JourneyInstance {
            journey: j.id.clone(),
            version: j.version,
            id,
            key,
            step: j.steps.first().map(|s| s.id.clone()).unwrap_or_default(),
            entered_at: now,
            step_at: now,
            timer: None,
            due: None,
            entry: props.clone(),
            visits: 0,
            deferred: false,
            paced: false,
            arm: None,
        });
        let i = state.journeys.len() - 1;
        let d = self.about(
            decision(now, &j.id, "", DecisionKind::Entered, why()),
            &state.journeys[i],
        );
        self.record(state, d);

        let first = if j.steps.is_empty() {
            Target::End
        } else {
            Target::Step(0)
        };
        self.go(state, i, j, None, first, now, props);
    }

    /// The re-entry rule or entry limit that keeps the user out, if any, as the reason of
    /// the `not_entered` decision. Worded straight into one string: on a busy journey most
    /// entries end here.
    fn blocked(
        &self,
        state: &UserState,
        j: &Journey,
        now: Ts,
        key: Option<&str>,
    ) -> Option<String> {
        let refused = |why: std::fmt::Arguments<'_>| {
            let mut reason = String::with_capacity(80);
            reason.push_str("not entered: ");
            // Writing into a string cannot fail.
            let _ = reason.write_fmt(why);
            reason
        };
        let inside = state
            .journeys
            .iter()
            .any(|x| x.journey == j.id && (key.is_none() || x.key.as_deref() == key));
        if inside {
            return Some(match key {
                Some(k) => refused(format_args!("already in the journey for {k}")),
                None => "not entered: already in the journey".into(),
            });
        }
        if let Some((count, per)) = j.entry.limit {
            let start = now.saturating_sub(per);
            let recent = state.entry_log.get(&j.id).map_or(0, |l| {
                l.at.iter().filter(|t| **t > start && **t <= now).count()
            });
            if recent >= count as usize {
                return Some(refused(format_args!(
                    "entry limit of {count} per {per} reached"
                )));
            }
        }
        let hist = state.history.get(&j.id)?;
        match j.entry.reentry {
            Reentry::Never => {
                Some("not entered: re-entry is off and the user entered before".into())
            }
            Reentry::AfterExit => None,
            Reentry::Cooldown(d) => (now < hist.last_entered.saturating_add(d)).then(|| {
                refused(format_args!(
                    "re-entry cool-down of {d} since {}",
                    hist.last_entered
                ))
            }),
        }
    }

    /// Brings every segment's membership up to date at `now`, sets or moves its timer, and
    /// starts journeys entered on a change.
    fn update_segments(&mut self, state: &mut UserState, now: Ts, props: &Props, why: Why<'_>) {
        let mut changes: Vec<(String, bool)> = Vec::new();
        for seg in &self.engine.segments {
            let cx = Context {
                state,
                now,
                props,
                journey: "",
            };
            let member = seg.condition.eval(&cx);
            let due = seg.condition.next_change(&cx);
            let prev = state.segments.get(&seg.id).copied().unwrap_or_default();

            if due != prev.due {
                match due {
                    Some(due) => {
                        let t = Timer::segment(&state.workspace, &state.user, &seg.id, due);
                        self.effects.push(Effect::SetTimer(t));
                    }
                    None => self.effects.push(Effect::CancelTimer {
                        workspace: state.workspace.clone(),
                        user: state.user.clone(),
                        id: format!("{}{}", beckon_core::SEGMENT_TIMER_PREFIX, seg.id),
                    }),
                }
            }
            let changed = member != prev.member;
            if member || due.is_some() {
                let since = if changed { now } else { prev.since };
                state
                    .segments
                    .insert(seg.id.clone(), Membership { member, since, due });
            } else {
                state.segments.remove(&seg.id);
            }
            if changed {
                let (kind, verb) = if member {
                    (DecisionKind::SegmentEntered, "entered")
                } else {
                    (DecisionKind::SegmentLeft, "left")
                };
                let cause = match why {
                    Why::Event(name) => format!("after {name}"),
                    Why::Time => "by time alone: a window slid past or a period ran out".into(),
                    Why::Merge(from) => format!("after {from} was merged in"),
                };
                let reason = format!("{verb} segment {} {cause}", seg.id);
                self.record(state, decision(now, &seg.id, "", kind, reason));
                changes.push((seg.id.clone(), member));
            }
        }

        for (segment, member) in changes {
            let edge = if member {
                SegmentEdge::Enter
            } else {
                SegmentEdge::Exit
            };
            for j in &self.engine.latest {
                let EntryTrigger::Segment { id, edge: want } = &j.entry.trigger else {
                    continue;
                };
                if *id == segment && *want == edge {
                    let verb = if member { "entering" } else { "leaving" };
                    let why = || format!("entered on {verb} segment {segment}");
                    self.try_enter(state, j, now, props, why);
                }
            }
        }
    }

    /// Runs instance `i` from `target` until it waits or ends. `from` is the step it leaves,
    /// if any: none when it enters the journey, or runs a step it was held before.
    #[allow(clippy::too_many_arguments)]
    fn go(
        &mut self,
        state: &mut UserState,
        i: usize,
        j: &Journey,
        mut from: Option<usize>,
        mut target: Target,
        now: Ts,
        props: &Props,
    ) {
        for _ in 0..MAX_STEPS_PER_TRIGGER {
            let s = match target {
                Target::Step(s) => s,
                Target::Exit => return self.finish(state, i, End::Exit, now, "exit step".into()),
                Target::End => {
                    return self.finish(state, i, End::Completed, now, "last step done".into());
                }
            };
            if from.is_some_and(|f| j.is_paced(f, s)) {
                return self.pace(state, i, j, s, now);
            }
            let step = &j.steps[s];
            {
                let inst = &mut state.journeys[i];
                inst.step.clone_from(&step.id);
                inst.step_at = now;
                inst.visits += 1;
            }
            let d = decision(now, &j.id, &step.id, DecisionKind::Step, String::new());
            let d = self.about(d, &state.journeys[i]);
            self.record(state, d);

            let next = match &step.kind {
                StepKind::Delay(d) => return self.wait(state, i, now.saturating_add(*d)),
                StepKind::DelayDays(days) => {
                    let (tz, _) = self.zone_of(state, None);
                    return self.wait(state, i, localtime::add_days(now, &tz, *days));
                }
                StepKind::WaitFor { timeout, .. } => {
                    return self.wait(state, i, now.saturating_add(*timeout));
                }
                StepKind::WaitUntil(w) => match self.wait_until(state, w, now) {
                    Ok(due) => return self.wait(state, i, due),
                    Err(why) => {
                        let d = decision(now, &j.id, &step.id, DecisionKind::Step, why);
                        let d = self.about(d, &state.journeys[i]);
                        self.record(state, d);
                        step.next
                    }
                },
                StepKind::Branch {
                    condition,
                    then,
                    otherwise,
                } => {
                    let cx = Context {
                        state,
                        now,
                        props,
                        journey: &j.id,
                    };
                    if condition.eval(&cx) {
                        *then
                    } else {
                        *otherwise
                    }
                }
                StepKind::Split(arms) => {
                    let b = bucket(&[&j.id, &step.id, &state.user]);
                    let mut upto = 0;
                    let arm = arms.iter().find(|a| {
                        upto += a.percent;
                        b < upto
                    });
                    match arm {
                        Some(arm) => {
                            state.journeys[i].arm = Some(arm.name.clone());
                            if let Some(h) = state.history.get_mut(&j.id) {
                                h.arm = Some(arm.name.clone());
                            }
                            arm.next
                        }
                        None => step.next,
                    }
                }
                StepKind::SetTraits(traits) => {
                    let limit = self.engine.limits.trait_bytes;
                    let mut total = state.traits_bytes();
                    for (name, value) in traits {
                        state.set_trait_within(name, value.clone(), now, limit, &mut total);
                    }
                    step.next
                }
                StepKind::Message(m) => match self.message(state, i, j, &step.id, m, now, props) {
                    Sent::Done => step.next,
                    Sent::Deferred(due) => return self.hold(state, i, due),
                },
                StepKind::LiveActivity(l) => {
                    self.live_activity(state, i, j, &step.id, l, now, props);
                    step.next
                }
                StepKind::Exit => Target::Exit,
            };
            (from, target) = (Some(s), next);
        }
        self.finish(
            state,
            i,
            End::Exit,
            now,
            "step limit reached: the journey loops".into(),
        );
    }

    /// When a `wait_until` step ends, or why it does not wait at all.
    fn wait_until(&self, state: &UserState, w: &WaitUntil, now: Ts) -> Result<Ts, String> {
        let (tz, _) = self.zone_of(state, w.timezone_trait.as_deref());
        let Some(name) = &w.date_trait else {
            let at = w.time.ok_or("no time to wait for")?;
            return Ok(localtime::next_local_time(now, &tz, at));
        };
        let Some(value) = state.trait_value(name).and_then(Value::as_str) else {
            return Err(format!("not waiting: the user has no {name} date"));
        };
        // Whole days of the offset are calendar days, so "3 days before, at 09:00" stays at
        // 09:00 local across a daylight-saving change; the rest is a plain span.
        const DAY: i64 = 86_400_000;
        let (days, rest) = (w.offset / DAY, w.offset % DAY);
        let due = match jiff::civil::Date::strptime("%Y-%m-%d", value) {
            Ok(date) => {
                let date = date
                    .checked_add(jiff::Span::new().days(days))
                    .unwrap_or(date);
                Ts(localtime::on_date(date, &tz, w.time).0.saturating_add(rest))
            }
            Err(_) => Ts::parse_rfc3339(value)
                .map(|t| Ts(t.0.saturating_add(w.offset)))
                .map_err(|_| format!("not waiting: {name} is not a date ({value:?})"))?,
        };
        if due <= now {
            return Err(format!("not waiting: {due} (from {name}) has passed"));
        }
        Ok(due)
    }

    /// The user's time zone: from the named trait (the policy's time-zone trait by default),
    /// else the policy's default zone. The second value is true when the trait was usable.
    fn zone_of(&self, state: &UserState, trait_name: Option<&str>) -> (jiff::tz::TimeZone, bool) {
        let policy = &self.engine.policy;
        let name = trait_name.unwrap_or(&policy.timezone_trait);
        if let Some(tz) = state
            .trait_value(name)
            .and_then(Value::as_str)
            .and_then(localtime::zone)
        {
            return (tz, true);
        }
        let fallback = localtime::zone(&policy.default_timezone);
        (fallback.unwrap_or(jiff::tz::TimeZone::UTC), false)
    }

    fn wait(&mut self, state: &mut UserState, i: usize, due: Ts) {
        let inst = &mut state.journeys[i];
        let id = timer_id(&inst.journey, inst.id, inst.visits);
        inst.timer = Some(id.clone());
        inst.due = Some(due);
        self.effects.push(Effect::SetTimer(Timer {
            id,
            workspace: state.workspace.clone(),
            user: state.user.clone(),
            due,
            journey: inst.journey.clone(),
            instance: inst.id,
            trace: None,
        }));
    }

    /// Holds the instance before step `to`, which closes a loop of a journey published before
    /// loops were checked, for [`MIN_LOOP_WAIT`]: it then goes round no faster than a loop
    /// the checks let through, however little the loop's own steps wait.
    fn pace(&mut self, state: &mut UserState, i: usize, j: &Journey, to: usize, now: Ts) {
        let due = now.saturating_add(MIN_LOOP_WAIT);
        let step = &j.steps[to].id;
        {
            let inst = &mut state.journeys[i];
            inst.step.clone_from(step);
            inst.step_at = now;
            inst.paced = true;
            // A visit number of its own gives the hold its own timer id.
            inst.visits += 1;
        }
        let reason = format!(
            "held until {due} before going round again: the journey's loops wait less than \
             {MIN_LOOP_WAIT}"
        );
        let d = decision(now, &j.id, step, DecisionKind::Step, reason);
        let d = self.about(d, &state.journeys[i]);
        self.record(state, d);
        self.wait(state, i, due);
    }

    /// Keeps the instance at its message step until `due`.
    fn hold(&mut self, state: &mut UserState, i: usize, due: Ts) {
        state.journeys[i].deferred = true;
        // A new visit number gives the retry its own timer id.
        state.journeys[i].visits += 1;
        self.wait(state, i, due);
    }

    /// Checks consent, quiet hours, send windows and caps at send time, then renders and
    /// sends. Caps live in the user's state and are checked here, one send after another, so
    /// two journeys can never both take the last slot.
    #[allow(clippy::too_many_arguments)]
    fn message(
        &mut self,
        state: &mut UserState,
        i: usize,
        j: &Journey,
        step: &str,
        m: &Message,
        now: Ts,
        props: &Props,
    ) -> Sent {
        let channel = m.channel.as_str();
        let skip = |run: &mut Self, state: &mut UserState, reason: String| {
            let d = decision(now, &j.id, step, DecisionKind::Skipped, reason);
            let d = run.about(d, &state.journeys[i]);
            run.record(state, d);
            Sent::Done
        };

        if self.engine.status(&j.id) == JourneyStatus::Paused {
            return skip(self, state, "not sent: the journey is paused".into());
        }
        if let Some(why) = no_consent(state, m) {
            return skip(self, state, format!("not sent: {why} at send time"));
        }
        if let Some((due, why)) = self.held_back(state, m, now) {
            if m.on_cap == OnCap::Drop {
                return skip(self, state, format!("dropped: {why}"));
            }
            let (tz, _) = self.zone_of(state, None);
            let until = localtime::describe(due, &tz);
            let reason = format!("deferred: {why}; next try {until}");
            let d = decision(now, &j.id, step, DecisionKind::Deferred, reason);
            let d = self.about(d, &state.journeys[i]);
            self.record(state, d);
            return Sent::Deferred(due);
        }

        let inst = &state.journeys[i];
        let templates = [Some(&m.body), m.title.as_ref(), m.subject.as_ref()];

        // Plain-text copy (most titles, many bodies) needs no template data at all.
        let dynamic = templates.iter().flatten().any(|t| !t.is_static());
        let data = if dynamic {
            let reads = |root: &str| templates.iter().flatten().any(|t| t.mentions(root));
            template_data(state, inst, j, props, reads)
        } else {
            Value::Null
        };
        // Only an email's body is HTML. A subject or a title is plain text, shown as it is:
        // escaped, a name like `Tom & Jerry` would reach the inbox as `Tom &amp; Jerry`.
        let body_escape = if m.channel == Channel::Email {
            Escape::Html
        } else {
            Escape::None
        };
        let render = |t: &crate::template::Template, escape: Escape| {
            if t.is_static() {
                Ok(t.source().to_string())
            } else {
                t.render(data.clone(), escape)
            }
        };
        let plain = |t: &crate::template::Template| render(t, Escape::None);
        let rendered = (|| {
            let body = render(&m.body, body_escape)?;
            let title = m.title.as_ref().map(plain).transpose()?;
            let subject = m.subject.as_ref().map(plain).transpose()?;
            Ok::<_, crate::template::RenderError>((body, title, subject))
        })();

        match rendered {
            Ok((body, title, subject)) => {
                let key = send_key(
                    &state.workspace,
                    &state.user,
                    &j.id,
                    inst.id,
                    step,
                    inst.visits,
                );
                self.effects.push(Effect::Send(OutboundMessage {
                    idempotency_key: key,
                    workspace: state.workspace.clone(),
                    user_id: state.user.clone(),
                    journey: j.id.clone(),
                    version: j.version,
                    instance: Some(inst.id),
                    step: step.to_string(),
                    channel: channel.to_string(),
                    at: now,
                    title,
                    subject,
                    body,
                    to: beckon_core::devices::contacts_for(state, channel),
                }));
                let window = self.engine.tracking.sends_window();
                if !m.transactional && window.0 > 0 {
                    state.remember_send(channel, now, window);
                }
                let mut reason = String::with_capacity(channel.len() + 5);
                reason.push_str(channel);
                reason.push_str(" sent");
                let d = decision(now, &j.id, step, DecisionKind::Sent, reason);
                let d = self.about(d, &state.journeys[i]);
                self.record(state, d);
            }
            Err(e) => {
                tracing::debug!(journey = %j.id, step, error = %e, "message skipped");
                return skip(self, state, format!("not sent: {e}"));
            }
        }
        Sent::Done
    }

    /// Renders a Live Activity's content and sends it on the `live_activity` channel, whose
    /// body is the JSON the APNs adapter turns into a `liveactivity` push.
    #[allow(clippy::too_many_arguments)]
    fn live_activity(
        &mut self,
        state: &mut UserState,
        i: usize,
        j: &Journey,
        step: &str,
        l: &LiveActivity,
        now: Ts,
        props: &Props,
    ) {
        let event = match l.event {
            LiveActivityEvent::Start => "start",
            LiveActivityEvent::Update => "update",
            LiveActivityEvent::End => "end",
        };
        let paused = self.engine.status(&j.id) == JourneyStatus::Paused;
        let inst = &state.journeys[i];
        let data = template_data(state, inst, j, props, |_| true);
        let render = |values: &[(String, LiveValue)]| {
            let mut out = serde_json::Map::new();
            for (key, value) in values {
                let v = match value {
                    LiveValue::Fixed(v) => v.clone(),
                    LiveValue::Text(t) => Value::from(t.render(data.clone(), Escape::None)?),
                };
                out.insert(key.clone(), v);
            }
            Ok::<_, crate::template::RenderError>(out)
        };
        let rendered =
            render(&l.content_state).and_then(|content| Ok((content, render(&l.attributes)?)));
        let (content, attributes) = match rendered {
            Ok(r) if !paused => r,
            outcome => {
                let reason = match outcome {
                    Err(e) => format!("not sent: {e}"),
                    Ok(_) => "not sent: the journey is paused".to_string(),
                };
                let d = decision(now, &j.id, step, DecisionKind::Skipped, reason);
                let d = self.about(d, &state.journeys[i]);
                self.record(state, d);
                return;
            }
        };

        // Dates are unix seconds, as ActivityKit reads them.
        let seconds = |after: beckon_core::Duration| now.saturating_add(after).0.div_euclid(1_000);
        let mut body = serde_json::Map::new();
        body.insert("event".into(), Value::from(event));
        body.insert("content-state".into(), Value::Object(content));
        if let Some(kind) = &l.attributes_type {
            body.insert("attributes-type".into(), Value::from(kind.clone()));
            body.insert("attributes".into(), Value::Object(attributes));
        }
        if let Some(after) = l.stale_after {
            body.insert("stale-date".into(), Value::from(seconds(after)));
        }
        if let Some(after) = l.dismiss_after {
            body.insert("dismissal-date".into(), Value::from(seconds(after)));
        }

        let inst = &state.journeys[i];
        let key = send_key(
            &state.workspace,
            &state.user,
            &j.id,
            inst.id,
            step,
            inst.visits,
        );
        self.effects.push(Effect::Send(OutboundMessage {
            idempotency_key: key,
            workspace: state.workspace.clone(),
            user_id: state.user.clone(),
            journey: j.id.clone(),
            version: j.version,
            instance: Some(inst.id),
            step: step.to_string(),
            channel: LIVE_ACTIVITY.to_string(),
            at: now,
            title: None,
            subject: None,
            body: Value::Object(body).to_string(),
            to: beckon_core::devices::contacts_for(state, LIVE_ACTIVITY),
        }));
        let reason = format!("live activity {event} sent");
        let d = decision(now, &j.id, step, DecisionKind::Sent, reason);
        let d = self.about(d, &state.journeys[i]);
        self.record(state, d);
    }

    /// Quiet hours, the step's send window or a frequency cap holding a message back: when to
    /// try again, and why.
    fn held_back(&self, state: &UserState, m: &Message, now: Ts) -> Option<(Ts, String)> {
        if m.transactional {
            return None;
        }
        let policy = &self.engine.policy;
        if policy.quiet_hours.is_some() || m.send_window.is_some() {
            let (tz, _) = self.zone_of(state, None);
            if let Some(q) = policy
                .quiet_hours
                .filter(|_| policy.quiet_applies(m.channel))
                && let Some(end) = localtime::inside(now, &tz, q)
            {
                let until = localtime::describe(end, &tz);
                return Some((end, format!("quiet hours until {until}")));
            }
            if let Some(w) = m.send_window
                && let Some(open) = localtime::outside(now, &tz, w)
            {
                let until = localtime::describe(open, &tz);
                return Some((open, format!("outside the send window until {until}")));
            }
        }

        let channel = m.channel.as_str();
        for cap in &policy.caps {
            if cap.channel.is_some_and(|c| c != m.channel) {
                continue;
            }
            let start = now.saturating_sub(cap.per);
            let inside: Vec<Ts> = state
                .sends
                .iter()
                .filter(|s| s.at > start && s.at <= now)
                .filter(|s| cap.channel.is_none() || s.channel == channel)
                .map(|s| s.at)
                .collect();
            let n = inside.len();
            if n >= cap.max as usize {
                // The slot frees when enough of the oldest sends leave the window.
                let oldest = inside.get(n - cap.max as usize).copied().unwrap_or(now);
                let free = oldest.saturating_add(cap.per);
                let what = cap.channel.map_or("messages", plural);
                let why = format!("capped at {n} of {} {what} in {}", cap.max, cap.per);
                return Some((free, why));
            }
        }
        None
    }

    fn finish(&mut self, state: &mut UserState, i: usize, end: End, now: Ts, reason: String) {
        let mut inst = state.journeys.remove(i);
        self.cancel_timer(&state.workspace, &state.user, &mut inst);
        if let Some(h) = state.history.get_mut(&inst.journey) {
            h.last_exit = Some(now);
        }
        let kind = match end {
            End::Goal => DecisionKind::ExitedOnGoal,
            End::Exit => DecisionKind::Exited,
            End::Completed => DecisionKind::Completed,
        };
        let d = self.about(
            decision(now, &inst.journey, &inst.step, kind, reason),
            &inst,
        );
        self.record(state, d);
    }

    fn cancel_timer(&mut self, workspace: &str, user: &str, inst: &mut JourneyInstance) {
        inst.due = None;
        inst.deferred = false;
        inst.paced = false;
        if let Some(id) = inst.timer.take() {
            self.effects.push(Effect::CancelTimer {
                workspace: workspace.to_string(),
                user: user.to_string(),
                id,
            });
        }
    }

    /// Adds the instance and its arm to a decision.
    fn about(&self, mut d: Decision, inst: &JourneyInstance) -> Decision {
        d.instance = inst.id;
        d.arm = inst.arm.clone();
        d
    }

    fn record(&mut self, state: &mut UserState, d: Decision) {
        state.record(d.clone());
        self.effects.push(Effect::Record(d));
    }

    /// The version of its journey an instance runs, borrowed from the engine: it is looked
    /// up for every instance at every event, where a counted copy cost two atomic updates.
    fn journey_of(&self, inst: &JourneyInstance) -> Option<&'e Arc<Journey>> {
        let engine: &'e Engine = self.engine;
        engine
            .versions
            .get(inst.journey.as_str())
            .and_then(|v| v.get(&inst.version))
    }

    fn step_of(&self, j: &Journey, inst: &JourneyInstance) -> Option<usize> {
        j.step_index(&inst.step)
    }

    fn waits_for(&self, inst: &JourneyInstance, event: &Event) -> bool {
        if inst.timer.is_none() || inst.deferred || inst.paced {
            return false;
        }
        let Some(j) = self.journey_of(inst) else {
            return false;
        };
        let Some(s) = self.step_of(j, inst) else {
            return false;
        };
        match &j.steps[s].kind {
            StepKind::WaitFor {
                event: name,
                filter,
                ..
            } => {
                // The event that started a wait does not end it.
                event.timestamp >= inst.step_at
                    && event_matches(event, name, filter)
                    && key_matches(j, inst, event)
            }
            _ => false,
        }
    }
}

fn decision(at: Ts, journey: &str, step: &str, kind: DecisionKind, reason: String) -> Decision {
    Decision {
        at,
        journey: journey.to_string(),
        step: step.to_string(),
        kind,
        reason,
        instance: 0,
        arm: None,
    }
}

fn status_word(status: JourneyStatus) -> &'static str {
    match status {
        JourneyStatus::Active => "active",
        JourneyStatus::Paused => "paused",
        JourneyStatus::Archived => "archived",
    }
}

fn plural(channel: Channel) -> &'static str {
    match channel {
        Channel::Push => "pushes",
        Channel::InApp => "in-app messages",
        Channel::Email => "emails",
        Channel::Sms => "SMS",
        Channel::Webhook => "webhooks",
    }
}

/// Why the user may not get `m`, from their traits at send time: `<channel>_opt_out` true,
/// `unsubscribed` true (all but transactional messages) or a `consent` map with the channel
/// set to false, each in any of the forms [`delivery::says_opted_out`] and
/// [`delivery::says_no_consent`] read.
fn no_consent(state: &UserState, m: &Message) -> Option<String> {
    let channel = m.channel.as_str();
    let opt_out = format!("{channel}_opt_out");
    if let Some(v) = state
        .trait_value(&opt_out)
        .filter(|v| delivery::says_opted_out(v))
    {
        return Some(format!("{opt_out} is {v}"));
    }
    if m.transactional {
        return None;
    }
    if let Some(v) = state
        .trait_value("unsubscribed")
        .filter(|v| delivery::says_opted_out(v))
    {
        return Some(format!("unsubscribed is {v}"));
    }
    let consent = state.trait_value("consent").and_then(|c| c.get(channel));
    consent
        .filter(|v| delivery::says_no_consent(v))
        .map(|v| format!("consent.{channel} is {v}"))
}

/// A stable number in `0..100` for the given parts (FNV-1a). The same user always lands in
/// the same holdout and arm of a journey, whatever the version.
fn bucket(parts: &[&str]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0u8]) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    (h % 100) as u32
}

/// A key property's value as text: strings as they are, numbers printed.
fn key_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether an event reaches an instance of a keyed journey (see the module notes).
fn key_matches(j: &Journey, inst: &JourneyInstance, event: &Event) -> bool {
    let Some(k) = &j.entry.key else {
        return true;
    };
    match event.properties.get(k).and_then(key_text) {
        Some(v) => inst.key.as_deref() == Some(v.as_str()),
        None => true,
    }
}

/// What `event` is to journey `j`, when it is its goal or one of its exit events: the goal
/// first, as for a running instance.
fn ends(j: &Journey, event: &Event) -> Option<String> {
    let goal = j
        .goal
        .as_ref()
        .is_some_and(|g| event_matches(event, &g.event, &g.filter));
    let exit = || {
        j.exit_on
            .iter()
            .any(|x| event_matches(event, &x.event, &x.filter))
    };
    let what = if goal {
        "goal"
    } else if exit() {
        "exit event"
    } else {
        return None;
    };
    Some(format!("{what} {} happened", event.name))
}

/// Whether `event` is an event named `name` (or any event for `*`) matching `filter`.
fn event_matches(
    event: &Event,
    name: &str,
    filter: &std::collections::BTreeMap<String, Value>,
) -> bool {
    (name == "*" || event.name == name) && props_match(&event.properties, filter)
}

/// The data templates render with: `user`, `event`, `entry`, `journey` and `last`. Only the
/// roots `reads` asks for are built: copying every trait and property, and formatting the
/// entry time, for a template that prints one property cost more than rendering it.
fn template_data(
    state: &UserState,
    inst: &JourneyInstance,
    j: &Journey,
    props: &Props,
    reads: impl Fn(&str) -> bool,
) -> Value {
    let mut data = serde_json::Map::new();
    if reads("user") {
        let user: serde_json::Map<String, Value> = state
            .traits
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect();
        data.insert("user".into(), Value::Object(user));
    }
    if reads("event") {
        data.insert("event".into(), Value::Object(props.clone()));
    }
    if reads("entry") {
        data.insert("entry".into(), Value::Object(inst.entry.clone()));
    }
    if reads("journey") {
        let journey = json!({
            "id": j.id,
            "name": j.name,
            "version": j.version,
            "entered_at": inst.entered_at.to_string(),
            "key": inst.key,
            "context": j.context,
        });
        data.insert("journey".into(), journey);
    }
    if !j.last_events.is_empty() && reads("last") {
        let mut last = serde_json::Map::new();
        for name in &j.last_events {
            if let Some(e) = state.last_events.get(name) {
                let mut props = e.props.clone();
                props.insert("at".into(), Value::from(e.at.to_string()));
                last.insert(name.clone(), Value::Object(props));
            }
        }
        data.insert("last".into(), Value::Object(last));
    }
    Value::Object(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_timer_ids_read_as_formatted_text() {
        for n in [0, 7, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            let mut text = String::from("x");
            push_decimal(&mut text, n);
            assert_eq!(text, format!("x{n}"));
        }
        assert_eq!(timer_id("win-back", 0, 12), "win-back:0:12");
        assert_eq!(
            timer_id("j", u64::MAX, u32::MAX),
            format!("j:{}:{}", u64::MAX, u32::MAX)
        );
        assert_eq!(
            send_key("default", "u 1", "welcome", 3, "welcome-push", 1),
            "default:u 1:welcome:3:welcome-push:1"
        );
    }
}
