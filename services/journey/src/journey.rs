//! Checked, compiled definitions: journeys with steps resolved to indices and templates
//! compiled, segments, and the workspace's sending policy.

use std::collections::BTreeMap;

use ahash::AHashMap;
use beckon_core::{Duration, Tracking};

use crate::condition::Condition;
use crate::error::SpecError;
use crate::localtime::{Hours, LocalTime};
use crate::spec::{Channel, EventMatch, LiveActivityEvent, OnCap, Reentry, SegmentEdge};
use crate::template::Template;

/// Where control goes after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Step(usize),
    /// The journey ends here as an exit (`exit` in specs).
    Exit,
    /// The journey ran off its last step: completed.
    End,
}

#[derive(Debug, Clone)]
pub struct Message {
    pub channel: Channel,
    pub title: Option<Template>,
    pub subject: Option<Template>,
    pub body: Template,
    pub transactional: bool,
    pub on_cap: OnCap,
    pub send_window: Option<Hours>,
}

/// A value of a Live Activity's content: fixed, or a template rendered at send time.
#[derive(Debug, Clone)]
pub enum LiveValue {
    Fixed(serde_json::Value),
    Text(Template),
}

#[derive(Debug, Clone)]
pub struct LiveActivity {
    pub event: LiveActivityEvent,
    pub content_state: Vec<(String, LiveValue)>,
    pub attributes_type: Option<String>,
    pub attributes: Vec<(String, LiveValue)>,
    pub dismiss_after: Option<Duration>,
    pub stale_after: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct WaitUntil {
    pub time: Option<LocalTime>,
    pub date_trait: Option<String>,
    /// Milliseconds added to the date (negative: before it).
    pub offset: i64,
    pub timezone_trait: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Arm {
    pub name: String,
    pub percent: u32,
    pub next: Target,
}

#[derive(Debug, Clone)]
pub enum StepKind {
    Delay(Duration),
    /// Calendar days in the user's time zone, keeping the local time of day.
    DelayDays(u32),
    WaitFor {
        event: String,
        filter: BTreeMap<String, serde_json::Value>,
        timeout: Duration,
        on_event: Target,
        on_timeout: Target,
    },
    WaitUntil(WaitUntil),
    Branch {
        condition: Box<Condition>,
        then: Target,
        otherwise: Target,
    },
    Split(Vec<Arm>),
    Message(Message),
    LiveActivity(LiveActivity),
    SetTraits(serde_json::Map<String, serde_json::Value>),
    Exit,
}

impl StepKind {
    /// Steps that stop and wait for a timer.
    pub fn waits(&self) -> bool {
        matches!(
            self,
            StepKind::Delay(_)
                | StepKind::DelayDays(_)
                | StepKind::WaitFor { .. }
                | StepKind::WaitUntil(_)
        )
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub kind: StepKind,
    pub next: Target,
}

/// What starts a journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryTrigger {
    Event(String),
    FirstSeen,
    Segment { id: String, edge: SegmentEdge },
    Api,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub trigger: EntryTrigger,
    pub filter: BTreeMap<String, serde_json::Value>,
    pub condition: Option<Condition>,
    pub reentry: Reentry,
    pub key: Option<String>,
    pub limit: Option<(u32, Duration)>,
}

#[derive(Debug, Clone)]
pub struct Journey {
    pub id: String,
    pub version: u32,
    pub workspace: String,
    pub name: String,
    pub entry: Entry,
    pub goal: Option<EventMatch>,
    pub exit_on: Vec<EventMatch>,
    pub conversion_window: Duration,
    pub holdout: u32,
    pub context: serde_json::Value,
    pub steps: Vec<Step>,
    pub(crate) index: AHashMap<String, usize>,
    /// Snake-case event names templates read as `last.<name>`.
    pub(crate) last_events: Vec<String>,
    /// What the loop checks refuse in a journey loaded as published before they existed;
    /// empty for every other journey. Loading such a journey is not refused (running
    /// services must start with what they have published), and its loops are paced instead.
    pub refused_loops: Vec<SpecError>,
    /// What the template lint refuses in a journey loaded as published before that lint
    /// existed; empty for every other journey. Its templates render as they are: the budget
    /// the lint enforces holds at render time anyway.
    pub refused_templates: Vec<SpecError>,
    /// The entry, goal and `wait_for` event names refused, in a journey loaded as published
    /// before that check existed, for reading as a name reserved for the gateway's reports
    /// without being written as it (`message opened`); empty for every other journey. Ingest
    /// refuses such names from clients, so no event reaches the steps waiting on them.
    pub refused_names: Vec<SpecError>,
    /// Where an instance of a journey with `refused_loops` is held for
    /// [`crate::cycle::MIN_LOOP_WAIT`] before going on, as (from, to) step indexes: every loop
    /// of the journey passes through one, so none goes round faster than that.
    pub(crate) paced: Vec<(usize, usize)>,
}

impl Journey {
    /// Everything the checks added since a version may have been published refuse in this
    /// journey (its loops, its templates, its event names), in the order of the file. Empty
    /// unless it was loaded as published before: a spec being linted or published is refused
    /// for these.
    pub fn refused_by_newer_checks(&self) -> Vec<SpecError> {
        let mut all: Vec<SpecError> = self
            .refused_loops
            .iter()
            .chain(&self.refused_templates)
            .chain(&self.refused_names)
            .cloned()
            .collect();
        all.sort_by_key(|e| (e.line, e.column));
        all
    }

    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Whether going from step `from` to step `to` closes a loop that is paced.
    pub(crate) fn is_paced(&self, from: usize, to: usize) -> bool {
        self.paced.contains(&(from, to))
    }

    /// Registers the history this journey's conditions and templates need, and every event
    /// name it refers to: its entry, goal, exit and wait events.
    pub fn track(&self, tracking: &mut Tracking) {
        if let EntryTrigger::Event(event) = &self.entry.trigger {
            tracking.refer(event);
        }
        if let Some(c) = &self.entry.condition {
            c.track(tracking);
        }
        for m in self.goal.iter().chain(&self.exit_on) {
            tracking.refer(&m.event);
        }
        for step in &self.steps {
            match &step.kind {
                StepKind::Branch { condition, .. } => condition.track(tracking),
                StepKind::WaitFor { event, .. } => tracking.refer(event),
                _ => {}
            }
        }
        for name in &self.last_events {
            tracking.track_last(name);
        }
    }
}

/// A compiled segment.
#[derive(Debug, Clone)]
pub struct Segment {
    pub id: String,
    pub version: u32,
    pub workspace: String,
    pub name: String,
    pub condition: Condition,
}

/// A frequency cap: at most `max` messages per rolling `per`, on `channel` or all channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cap {
    pub channel: Option<Channel>,
    pub max: u32,
    pub per: Duration,
}

/// A workspace's sending rules.
#[derive(Debug, Clone)]
pub struct Policy {
    pub workspace: String,
    pub timezone_trait: String,
    pub default_timezone: String,
    pub caps: Vec<Cap>,
    pub quiet_hours: Option<Hours>,
    pub quiet_channels: Option<Vec<Channel>>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            workspace: String::new(),
            timezone_trait: "timezone".into(),
            default_timezone: "UTC".into(),
            caps: Vec::new(),
            quiet_hours: None,
            quiet_channels: None,
        }
    }
}

impl Policy {
    /// Whether quiet hours hold back messages on `channel`.
    pub fn quiet_applies(&self, channel: Channel) -> bool {
        match &self.quiet_channels {
            Some(list) => list.contains(&channel),
            None => channel != Channel::Webhook,
        }
    }
}

/// Everything loaded from a folder of specs.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    pub journeys: Vec<Journey>,
    pub segments: Vec<Segment>,
    pub policies: Vec<Policy>,
}

impl Definitions {
    /// Only the definitions of one workspace.
    pub fn for_workspace(self, workspace: &str) -> Definitions {
        Definitions {
            journeys: self
                .journeys
                .into_iter()
                .filter(|j| j.workspace == workspace)
                .collect(),
            segments: self
                .segments
                .into_iter()
                .filter(|s| s.workspace == workspace)
                .collect(),
            policies: self
                .policies
                .into_iter()
                .filter(|p| p.workspace == workspace)
                .collect(),
        }
    }
}
