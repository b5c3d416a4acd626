//! The YAML form of journey definitions, as people write them.
//!
//! Unknown fields are errors everywhere, so a misspelt `timout:` is caught on apply instead of
//! silently meaning "no timeout".

use std::collections::BTreeMap;

use beckon_core::Duration;
use serde::Deserialize;

use crate::condition::Condition;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneySpec {
    /// Must be `journey` when present; lets segments and journeys share a folder.
    #[serde(default)]
    pub kind: Option<String>,
    pub id: String,
    pub version: u32,
    pub workspace: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub entry: EntrySpec,
    /// Reaching the goal ends the journey at once and counts a conversion.
    #[serde(default)]
    pub goal: Option<EventMatch>,
    /// Any of these ends the journey at once, without a conversion.
    #[serde(default)]
    pub exit_on: Vec<EventMatch>,
    pub steps: Vec<StepSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySpec {
    /// Enter when this event arrives.
    #[serde(default)]
    pub event: Option<String>,
    /// Enter on the first event ever seen from a user.
    #[serde(default)]
    pub first_seen: bool,
    /// Property filters on the entry event: each property must equal the given value.
    #[serde(default, rename = "where")]
    pub filter: BTreeMap<String, serde_json::Value>,
    /// A condition on the user's state, checked after the entry event was applied.
    #[serde(default, rename = "if")]
    pub condition: Option<Condition>,
    #[serde(default)]
    pub reentry: Reentry,
}

/// When a user who was in the journey before may enter again. Written as `never`,
/// `after_exit` or `{cooldown: 24h}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ReentryRepr")]
pub enum Reentry {
    /// Once per user, ever.
    Never,
    /// Whenever the entry matches and the user is not in the journey now.
    #[default]
    AfterExit,
    /// Not within this long after the last entry.
    Cooldown(Duration),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ReentryRepr {
    Word(String),
    Cooldown(CooldownRepr),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CooldownRepr {
    cooldown: Duration,
}

impl TryFrom<ReentryRepr> for Reentry {
    type Error = String;

    fn try_from(r: ReentryRepr) -> Result<Self, Self::Error> {
        match r {
            ReentryRepr::Word(w) if w == "never" => Ok(Reentry::Never),
            ReentryRepr::Word(w) if w == "after_exit" => Ok(Reentry::AfterExit),
            ReentryRepr::Word(w) => {
                Err(format!("expected never, after_exit or {{cooldown: <duration>}}, found {w:?}"))
            }
            ReentryRepr::Cooldown(c) => Ok(Reentry::Cooldown(c.cooldown)),
        }
    }
}

/// An event name with optional property filters. Written as a plain name, or as
/// `{event: Name, where: {...}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "EventMatchRepr")]
pub struct EventMatch {
    pub event: String,
    pub filter: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EventMatchRepr {
    Name(String),
    Full(EventMatchFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventMatchFull {
    event: String,
    #[serde(default, rename = "where")]
    filter: BTreeMap<String, serde_json::Value>,
}

impl From<EventMatchRepr> for EventMatch {
    fn from(r: EventMatchRepr) -> Self {
        match r {
            EventMatchRepr::Name(event) => EventMatch {
                event,
                filter: BTreeMap::new(),
            },
            EventMatchRepr::Full(f) => EventMatch {
                event: f.event,
                filter: f.filter,
            },
        }
    }
}

/// One step. Exactly one of the step kinds must be given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub id: String,
    #[serde(default)]
    pub delay: Option<Duration>,
    #[serde(default)]
    pub wait_for: Option<WaitForSpec>,
    #[serde(default)]
    pub branch: Option<BranchSpec>,
    #[serde(default)]
    pub message: Option<MessageSpec>,
    /// `exit: true` ends the journey here.
    #[serde(default)]
    pub exit: Option<bool>,
    /// Where to go after this step; the next step in the list when absent.
    #[serde(default)]
    pub next: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitForSpec {
    /// The event to wait for; `"*"` means any event at all (activity).
    pub event: String,
    #[serde(default, rename = "where")]
    pub filter: BTreeMap<String, serde_json::Value>,
    pub timeout: Duration,
    /// Step to go to when the event comes; `exit` ends the journey. Default: the next step.
    #[serde(default)]
    pub on_event: Option<String>,
    /// Step to go to when the timeout passes first. Default: the next step.
    #[serde(default)]
    pub on_timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchSpec {
    #[serde(rename = "if")]
    pub condition: Condition,
    pub then: String,
    /// Default: the next step.
    #[serde(default, rename = "else")]
    pub otherwise: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Push,
    InApp,
    Email,
    Sms,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::InApp => "in_app",
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Webhook => "webhook",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageSpec {
    pub channel: Channel,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    pub body: String,
}
