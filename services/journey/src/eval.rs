//! The evaluator: (user state, trigger) in, new state and effects out.
//!
//! Order of work for an event, chosen so that stopping wins over sending:
//! 1. the event is folded into the behavioral state (a repeated message id stops here);
//! 2. goals and exit events end running instances and cancel their timers;
//! 3. instances waiting for this event move on;
//! 4. journeys whose entry matches start new instances.
//!
//! A timer whose id no longer matches its instance (the instance exited, or moved on) is stale
//! and does nothing, which is what makes a timer fired twice apply once.

use std::sync::Arc;

use ahash::AHashMap;
use beckon_core::{
    Decision, DecisionKind, Effect, Event, EventKind, JourneyInstance, OutboundMessage, Props,
    Timer, Tracking, Trigger, Ts, UserState,
};
use serde_json::{Value, json};

use crate::condition::{Context, props_match};
use crate::journey::{Journey, Message, StepKind, Target};
use crate::spec::{Channel, Reentry};
use crate::template::Escape;

/// Steps one trigger may run for one instance before the instance is stopped; guards against
/// loops with no waiting step in them.
const MAX_STEPS_PER_TRIGGER: usize = 64;

/// Published journeys, ready to evaluate. Cheap to share between threads.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    /// The newest version of each journey, in id order, for entries.
    latest: Vec<Arc<Journey>>,
    /// Every version, for instances that entered an older one.
    versions: AHashMap<(String, u32), Arc<Journey>>,
    tracking: Tracking,
}

impl Engine {
    pub fn new(journeys: Vec<Journey>) -> Engine {
        let mut engine = Engine::default();
        let mut latest: AHashMap<String, Arc<Journey>> = AHashMap::new();
        for j in journeys {
            j.track(&mut engine.tracking);
            let j = Arc::new(j);
            engine.versions.insert((j.id.clone(), j.version), j.clone());
            let newer = latest.get(&j.id).is_none_or(|cur| cur.version < j.version);
            if newer {
                latest.insert(j.id.clone(), j);
            }
        }
        engine.latest = latest.into_values().collect();
        engine.latest.sort_by(|a, b| a.id.cmp(&b.id));
        engine
    }

    pub fn journeys(&self) -> &[Arc<Journey>] {
        &self.latest
    }

    pub fn tracking(&self) -> &Tracking {
        &self.tracking
    }

    /// Applies a trigger to a user and returns what must happen as a result.
    pub fn apply(&self, state: &mut UserState, trigger: &Trigger) -> Vec<Effect> {
        let mut run = Run {
            engine: self,
            effects: Vec::new(),
        };
        match trigger {
            Trigger::Event(event) => run.on_event(state, event),
            Trigger::Timer(timer) => run.on_timer(state, timer),
        }
        run.effects
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

impl Run<'_> {
    fn on_event(&mut self, state: &mut UserState, event: &Event) {
        if !state.observe(event, &self.engine.tracking) {
            return;
        }
        let now = event.timestamp;

        // Goals and exits first: a purchase ends the cart reminder before anything else runs.
        let mut i = 0;
        while i < state.journeys.len() {
            let Some(j) = self.journey_of(&state.journeys[i]) else {
                i += 1;
                continue;
            };
            let end = if j.goal.as_ref().is_some_and(|g| event_matches(event, &g.event, &g.filter))
            {
                Some(End::Goal)
            } else if j.exit_on.iter().any(|x| event_matches(event, &x.event, &x.filter)) {
                Some(End::Exit)
            } else {
                None
            };
            match end {
                Some(end) => {
                    let reason = format!("{} happened", event.name);
                    self.finish(state, i, end, now, reason);
                }
                None => i += 1,
            }
        }

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
            let Some(StepKind::WaitFor { on_event, .. }) = self.current_kind(&j, &state.journeys[i])
            else {
                continue;
            };
            self.cancel_timer(&state.workspace, &state.user, &mut state.journeys[i]);
            self.go(state, i, &j, on_event, now, &event.properties);
        }

        if event.kind != EventKind::Alias {
            self.enter(state, event);
        }
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

        let target = match self.current_kind(&j, &state.journeys[i]) {
            Some(StepKind::WaitFor { on_timeout, .. }) => on_timeout,
            _ => self.step_of(&j, &state.journeys[i]).map_or(Target::End, |s| j.steps[s].next),
        };
        let props = state.journeys[i].entry.clone();
        self.go(state, i, &j, target, timer.due, &props);
    }

    fn enter(&mut self, state: &mut UserState, event: &Event) {
        let now = event.timestamp;
        for j in &self.engine.latest {
            let entry = &j.entry;
            let matches = match &entry.event {
                Some(name) => event_matches(event, name, &entry.filter),
                None => entry.first_seen && state.total_events == 1,
            };
            if !matches {
                continue;
            }

            if let Some(why) = self.blocked(state, j, now) {
                self.decide(state, now, &j.id, "", DecisionKind::NotEntered, why);
                continue;
            }
            if let Some(cond) = &entry.condition {
                let cx = Context {
                    state,
                    now,
                    props: &event.properties,
                };
                if !cond.eval(&cx) {
                    continue;
                }
            }

            let id = state.next_instance;
            state.next_instance += 1;
            let hist = state.history.entry(j.id.clone()).or_default();
            hist.entries += 1;
            hist.last_entered = now;
            state.journeys.push(JourneyInstance {
                journey: j.id.clone(),
                version: j.version,
                id,
                key: None,
                step: j.steps.first().map(|s| s.id.clone()).unwrap_or_default(),
                entered_at: now,
                step_at: now,
                timer: None,
                due: None,
                entry: event.properties.clone(),
                visits: 0,
            });
            self.decide(state, now, &j.id, "", DecisionKind::Entered, event.name.clone());

            let i = state.journeys.len() - 1;
            let first = if j.steps.is_empty() { Target::End } else { Target::Step(0) };
            self.go(state, i, j, first, now, &event.properties);
        }
    }

    /// The re-entry rule that keeps the user out, if any.
    fn blocked(&self, state: &UserState, j: &Journey, now: Ts) -> Option<String> {
        if state.journeys.iter().any(|x| x.journey == j.id) {
            return Some("already in the journey".into());
        }
        let hist = state.history.get(&j.id)?;
        match j.entry.reentry {
            Reentry::Never => Some("re-entry is off and the user entered before".into()),
            Reentry::AfterExit => None,
            Reentry::Cooldown(d) => (now < hist.last_entered.saturating_add(d))
                .then(|| format!("re-entry cool-down of {d} since {}", hist.last_entered)),
        }
    }

    /// Runs instance `i` from `target` until it waits or ends.
    fn go(
        &mut self,
        state: &mut UserState,
        i: usize,
        j: &Journey,
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
            let step = &j.steps[s];
            {
                let inst = &mut state.journeys[i];
                inst.step = step.id.clone();
                inst.step_at = now;
                inst.visits += 1;
            }
            self.decide(state, now, &j.id, &step.id, DecisionKind::Step, String::new());

            target = match &step.kind {
                StepKind::Delay(d) => return self.wait(state, i, now.saturating_add(*d)),
                StepKind::WaitFor { timeout, .. } => {
                    return self.wait(state, i, now.saturating_add(*timeout));
                }
                StepKind::Branch {
                    condition,
                    then,
                    otherwise,
                } => {
                    let cx = Context { state, now, props };
                    if condition.eval(&cx) { *then } else { *otherwise }
                }
                StepKind::Message(m) => {
                    self.message(state, i, j, &step.id, m, now, props);
                    step.next
                }
                StepKind::Exit => Target::Exit,
            };
        }
        self.finish(state, i, End::Exit, now, "step limit reached: the journey loops".into());
    }

    fn wait(&mut self, state: &mut UserState, i: usize, due: Ts) {
        let inst = &mut state.journeys[i];
        let id = format!("{}:{}:{}", inst.journey, inst.id, inst.visits);
        inst.timer = Some(id.clone());
        inst.due = Some(due);
        self.effects.push(Effect::SetTimer(Timer {
            id,
            workspace: state.workspace.clone(),
            user: state.user.clone(),
            due,
            journey: inst.journey.clone(),
            instance: inst.id,
        }));
    }

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
    ) {
        let inst = &state.journeys[i];
        let data = template_data(state, inst, j, props);
        let escape = if m.channel == Channel::Email { Escape::Html } else { Escape::None };
        let render = |t: &crate::template::Template| t.render(data.clone(), escape);

        let rendered = (|| {
            let body = render(&m.body)?;
            let title = m.title.as_ref().map(render).transpose()?;
            let subject = m.subject.as_ref().map(render).transpose()?;
            Ok::<_, crate::template::RenderError>((body, title, subject))
        })();

        match rendered {
            Ok((body, title, subject)) => {
                let key = format!(
                    "{}:{}:{}:{}:{}:{}",
                    state.workspace, state.user, j.id, inst.id, step, inst.visits
                );
                self.effects.push(Effect::Send(OutboundMessage {
                    idempotency_key: key,
                    workspace: state.workspace.clone(),
                    user_id: state.user.clone(),
                    journey: j.id.clone(),
                    version: j.version,
                    step: step.to_string(),
                    channel: m.channel.as_str().to_string(),
                    at: now,
                    title,
                    subject,
                    body,
                }));
                let channel = m.channel.as_str().to_string();
                self.decide(state, now, &j.id, step, DecisionKind::Sent, channel);
            }
            Err(e) => {
                tracing::debug!(journey = %j.id, step, error = %e, "message skipped");
                self.decide(state, now, &j.id, step, DecisionKind::Skipped, e.to_string());
            }
        }
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
        self.decide(state, now, &inst.journey, &inst.step, kind, reason);
    }

    fn cancel_timer(&mut self, workspace: &str, user: &str, inst: &mut JourneyInstance) {
        inst.due = None;
        if let Some(id) = inst.timer.take() {
            self.effects.push(Effect::CancelTimer {
                workspace: workspace.to_string(),
                user: user.to_string(),
                id,
            });
        }
    }

    fn decide(
        &mut self,
        state: &mut UserState,
        at: Ts,
        journey: &str,
        step: &str,
        kind: DecisionKind,
        reason: String,
    ) {
        let d = Decision {
            at,
            journey: journey.to_string(),
            step: step.to_string(),
            kind,
            reason,
        };
        state.record(d.clone());
        self.effects.push(Effect::Record(d));
    }

    fn journey_of(&self, inst: &JourneyInstance) -> Option<Arc<Journey>> {
        self.engine
            .versions
            .get(&(inst.journey.clone(), inst.version))
            .cloned()
    }

    fn step_of(&self, j: &Journey, inst: &JourneyInstance) -> Option<usize> {
        j.step_index(&inst.step)
    }

    fn current_kind(&self, j: &Journey, inst: &JourneyInstance) -> Option<StepKind> {
        self.step_of(j, inst).map(|s| j.steps[s].kind.clone())
    }

    fn waits_for(&self, inst: &JourneyInstance, event: &Event) -> bool {
        if inst.timer.is_none() {
            return false;
        }
        let Some(j) = self.journey_of(inst) else {
            return false;
        };
        let Some(s) = self.step_of(&j, inst) else {
            return false;
        };
        match &j.steps[s].kind {
            StepKind::WaitFor { event: name, filter, .. } => {
                // The event that started a wait does not end it.
                event.timestamp >= inst.step_at && event_matches(event, name, filter)
            }
            _ => false,
        }
    }
}

/// Whether `event` is an event named `name` (or any event for `*`) matching `filter`.
fn event_matches(
    event: &Event,
    name: &str,
    filter: &std::collections::BTreeMap<String, Value>,
) -> bool {
    (name == "*" || event.name == name) && props_match(&event.properties, filter)
}

fn template_data(state: &UserState, inst: &JourneyInstance, j: &Journey, props: &Props) -> Value {
    let user: serde_json::Map<String, Value> = state
        .traits
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    json!({
        "user": user,
        "event": props,
        "entry": inst.entry,
        "journey": {
            "id": j.id,
            "name": j.name,
            "version": j.version,
            "entered_at": inst.entered_at.to_string(),
        },
    })
}
