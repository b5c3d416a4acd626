//! A checked, compiled journey: steps resolved to indices, templates compiled.

use std::collections::BTreeMap;

use ahash::AHashMap;
use beckon_core::{Duration, Tracking};

use crate::condition::Condition;
use crate::spec::{Channel, EventMatch, Reentry};
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
}

#[derive(Debug, Clone)]
pub enum StepKind {
    Delay(Duration),
    WaitFor {
        event: String,
        filter: BTreeMap<String, serde_json::Value>,
        timeout: Duration,
        on_event: Target,
        on_timeout: Target,
    },
    Branch {
        condition: Condition,
        then: Target,
        otherwise: Target,
    },
    Message(Message),
    Exit,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub kind: StepKind,
    pub next: Target,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub event: Option<String>,
    pub first_seen: bool,
    pub filter: BTreeMap<String, serde_json::Value>,
    pub condition: Option<Condition>,
    pub reentry: Reentry,
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
    pub steps: Vec<Step>,
    pub(crate) index: AHashMap<String, usize>,
}

impl Journey {
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Registers the history this journey's conditions need.
    pub fn track(&self, tracking: &mut Tracking) {
        if let Some(c) = &self.entry.condition {
            c.track(tracking);
        }
        for step in &self.steps {
            if let StepKind::Branch { condition, .. } = &step.kind {
                condition.track(tracking);
            }
        }
    }
}
