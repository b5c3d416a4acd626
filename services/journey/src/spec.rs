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
    /// A goal this long after an entry still counts as a conversion, even after the user left
    /// the journey. Default: 7 days.
    #[serde(default)]
    pub conversion_window: Option<Duration>,
    /// Percentage of users (0 to 100) kept out of the journey to measure its effect. The arm
    /// is a hash of the user id and the journey id, so it never changes between versions.
    #[serde(default)]
    pub holdout: Option<u32>,
    /// Constants templates read as `journey.context.<name>` (a list of popular items, say).
    #[serde(default)]
    pub context: serde_json::Map<String, serde_json::Value>,
    pub steps: Vec<StepSpec>,
}

/// A segment: users for whom a condition is true now. Kept true as events arrive and as time
/// passes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSpec {
    pub kind: String,
    pub id: String,
    pub version: u32,
    pub workspace: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub condition: Condition,
}

/// A workspace's sending rules: frequency caps, quiet hours, the time-zone trait.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub kind: String,
    pub id: String,
    #[serde(default)]
    pub version: Option<u32>,
    pub workspace: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The trait holding a user's IANA time zone. Default: `timezone`.
    #[serde(default)]
    pub timezone_trait: Option<String>,
    /// Used when the user has no valid time zone. Default: UTC.
    #[serde(default)]
    pub default_timezone: Option<String>,
    #[serde(default)]
    pub caps: Vec<CapSpec>,
    #[serde(default)]
    pub quiet_hours: Option<HoursSpec>,
}

/// At most `max` messages per rolling `per`, on one channel or (without `channel`) across all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapSpec {
    #[serde(default)]
    pub channel: Option<Channel>,
    pub max: u32,
    pub per: Duration,
}

/// A span of local time of day, `from` inclusive, `to` exclusive; may wrap past midnight.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursSpec {
    pub from: String,
    pub to: String,
    /// Channels it applies to; all but webhook when absent.
    #[serde(default)]
    pub channels: Option<Vec<Channel>>,
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
    /// Enter when the user enters (or, with `on: exit`, leaves) this segment.
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub on: Option<SegmentEdge>,
    /// Enter when a backend asks (an API trigger naming this journey).
    #[serde(default)]
    pub api: bool,
    /// One instance per value of this entry property (a cart id, say).
    #[serde(default)]
    pub key: Option<String>,
    /// At most `count` entries per rolling `per`.
    #[serde(default)]
    pub limit: Option<LimitSpec>,
    /// Property filters on the entry event: each property must equal the given value.
    #[serde(default, rename = "where")]
    pub filter: BTreeMap<String, serde_json::Value>,
    /// A condition on the user's state, checked after the entry event was applied.
    #[serde(default, rename = "if")]
    pub condition: Option<Condition>,
    #[serde(default)]
    pub reentry: Reentry,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentEdge {
    #[default]
    Enter,
    Exit,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    pub count: u32,
    pub per: Duration,
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
            ReentryRepr::Word(w) => Err(format!(
                "expected never, after_exit or {{cooldown: <duration>}}, found {w:?}"
            )),
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
    pub delay: Option<DelaySpec>,
    #[serde(default)]
    pub wait_for: Option<WaitForSpec>,
    #[serde(default)]
    pub wait_until: Option<WaitUntilSpec>,
    #[serde(default)]
    pub split: Option<Vec<ArmSpec>>,
    /// Traits to set on the user, e.g. `{onboarded: true}`.
    #[serde(default)]
    pub set_traits: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub webhook: Option<WebhookSpec>,
    #[serde(default)]
    pub branch: Option<BranchSpec>,
    #[serde(default)]
    pub message: Option<MessageSpec>,
    /// Starts, updates or ends an iOS Live Activity.
    #[serde(default)]
    pub live_activity: Option<LiveActivitySpec>,
    /// `exit: true` ends the journey here.
    #[serde(default)]
    pub exit: Option<bool>,
    /// Where to go after this step; the next step in the list when absent.
    #[serde(default)]
    pub next: Option<String>,
}

/// A delay: a plain duration (`2d`, exactly 48 hours), or `{days: 2}`, calendar days in the
/// user's time zone that keep the local time of day across daylight-saving changes.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "DelayRepr")]
pub enum DelaySpec {
    Span(Duration),
    Calendar(CalendarDelay),
}

/// What a delay may be written as. The text is parsed here rather than by `Duration` inside
/// an untagged enum, whose error would hide why a text is not a duration.
#[derive(Deserialize)]
#[serde(untagged)]
enum DelayRepr {
    Text(String),
    Calendar(CalendarDelay),
    Other(serde::de::IgnoredAny),
}

impl TryFrom<DelayRepr> for DelaySpec {
    type Error = String;

    fn try_from(r: DelayRepr) -> Result<Self, Self::Error> {
        match r {
            DelayRepr::Text(text) => text
                .parse()
                .map(DelaySpec::Span)
                .map_err(|e: beckon_core::CoreError| e.to_string()),
            DelayRepr::Calendar(c) => Ok(DelaySpec::Calendar(c)),
            DelayRepr::Other(_) => {
                Err("expected a duration such as 2d or 90m, or {days: <calendar days>}".into())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarDelay {
    pub days: u32,
}

/// Wait until a local time of day (`time: "09:00"`), or until a date trait plus an offset
/// (`date_trait: renewal_date, offset: -3d`, at `time` on that day when given).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitUntilSpec {
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default)]
    pub date_trait: Option<String>,
    #[serde(default)]
    pub offset: Option<SignedDuration>,
    /// The trait holding the time zone; the policy's (default `timezone`) when absent.
    #[serde(default)]
    pub timezone_trait: Option<String>,
}

/// A duration with an optional sign: `-3d`, `+2h`, `90m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedDuration(pub i64);

impl<'de> Deserialize<'de> for SignedDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let (sign, rest) = match text.strip_prefix('-') {
            Some(rest) => (-1, rest),
            None => (1, text.strip_prefix('+').unwrap_or(&text)),
        };
        let span: Duration = rest.parse().map_err(serde::de::Error::custom)?;
        Ok(SignedDuration(sign * span.0))
    }
}

/// One arm of a random split: `percent` of users (a stable hash) go to `next`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmSpec {
    pub arm: String,
    pub percent: u32,
    pub next: String,
}

/// A call to a backend: a message on the `webhook` channel, with the URL as its title.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub url: String,
    pub body: String,
}

/// What a Live Activity step asks of the activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveActivityEvent {
    Start,
    Update,
    End,
}

/// A Live Activity step: the activity's new content state (string values are Liquid
/// templates, so `status: "{{ event.status }}"` follows an order), sent at once as an APNs
/// `liveactivity` push. Status updates are not marketing: caps and quiet hours do not apply.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveActivitySpec {
    pub event: LiveActivityEvent,
    pub content_state: serde_json::Map<String, serde_json::Value>,
    /// `start` only: the app's `ActivityAttributes` type and its values (templates too).
    #[serde(default)]
    pub attributes_type: Option<String>,
    #[serde(default)]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
    /// `end` only: how long the ended activity stays on the Lock Screen.
    #[serde(default)]
    pub dismiss_after: Option<Duration>,
    /// When the content counts as out of date unless updated again.
    #[serde(default)]
    pub stale_after: Option<Duration>,
}

/// What a message step does when a frequency cap or quiet hours hold it back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCap {
    /// Try again when the cap frees a slot or the quiet hours end.
    #[default]
    Defer,
    /// Give up on this message and move on.
    Drop,
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
    /// Receipts and the like: exempt from frequency caps, quiet hours and send windows.
    #[serde(default)]
    pub transactional: bool,
    #[serde(default)]
    pub on_cap: OnCap,
    /// Local hours this message may go out in; held back until the window opens otherwise.
    #[serde(default)]
    pub send_window: Option<HoursSpec>,
}
