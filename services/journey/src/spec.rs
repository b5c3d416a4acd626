//! The YAML form of journey definitions, as people write them.
//!
//! Unknown fields are errors everywhere, so a misspelt `timout:` is caught on apply instead of
//! silently meaning "no timeout".

use std::collections::BTreeMap;

use beckon_core::Duration;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::condition::Condition;

/// The longest span a journey or policy may give: a delay, a timeout, an offset from a date,
/// a window (about 100 years; segment windows stop at 90 days). A timer past the calendar
/// Beckon keeps (to the year 9999) can never be set, so a step waiting that long would wait
/// forever; a bound well inside the calendar is refused on lint and publish instead.
pub const MAX_WAIT: Duration = Duration(MAX_WAIT_DAYS as i64 * 86_400_000);

/// [`MAX_WAIT`] in calendar days, the bound of `delay: {days: N}`.
pub const MAX_WAIT_DAYS: u32 = 36_500;

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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SegmentEdge {
    #[default]
    Enter,
    Exit,
}

impl<'de> Deserialize<'de> for SegmentEdge {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_of(
            d,
            &[("enter", SegmentEdge::Enter), ("exit", SegmentEdge::Exit)],
        )
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    pub count: u32,
    pub per: Duration,
}

/// When a user who was in the journey before may enter again. Written as `never`,
/// `after_exit` or `{cooldown: 24h}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
#[serde(deny_unknown_fields)]
struct CooldownRepr {
    cooldown: Duration,
}

impl<'de> Deserialize<'de> for Reentry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WordOrMap {
            expecting: "never, after_exit or {cooldown: <duration>}",
            word: |w| match w {
                "never" => Ok(Reentry::Never),
                "after_exit" => Ok(Reentry::AfterExit),
                _ => Err(format!(
                    "expected never, after_exit or {{cooldown: <duration>}}, found {w:?}"
                )),
            },
            map: |c: CooldownRepr| Reentry::Cooldown(c.cooldown),
        })
    }
}

/// An event name with optional property filters. Written as a plain name, or as
/// `{event: Name, where: {...}}`.
#[derive(Debug, Clone)]
pub struct EventMatch {
    pub event: String,
    pub filter: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventMatchFull {
    event: String,
    #[serde(default, rename = "where")]
    filter: BTreeMap<String, serde_json::Value>,
}

impl<'de> Deserialize<'de> for EventMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WordOrMap {
            expecting: "an event name, or {event: <name>, where: {<property>: <value>}}",
            word: |name| {
                Ok(EventMatch {
                    event: name.to_string(),
                    filter: BTreeMap::new(),
                })
            },
            map: |f: EventMatchFull| EventMatch {
                event: f.event,
                filter: f.filter,
            },
        })
    }
}

/// A value written either as a word or as a mapping. serde's untagged enums would do, but
/// their error says only that nothing matched, not what the field takes nor where inside a
/// mapping the problem is.
struct WordOrMap<T, R> {
    /// What the field accepts, in the spec's terms.
    expecting: &'static str,
    word: fn(&str) -> Result<T, String>,
    map: fn(R) -> T,
}

impl<'de, T, R: Deserialize<'de>> Visitor<'de> for WordOrMap<T, R> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.word)(v).map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        R::deserialize(MapAccessDeserializer::new(map)).map(self.map)
    }
}

/// One of a few words, each standing for a value; anything else is refused with the words.
fn one_of<'de, D: Deserializer<'de>, T: Copy>(
    d: D,
    choices: &'static [(&'static str, T)],
) -> Result<T, D::Error> {
    struct Words<T: 'static>(&'static [(&'static str, T)]);

    impl<T: Copy> Visitor<'_> for Words<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let words: Vec<&str> = self.0.iter().map(|(w, _)| *w).collect();
            match words.split_last() {
                Some((last, [])) => f.write_str(last),
                Some((last, [one])) => write!(f, "{one} or {last}"),
                Some((last, rest)) => write!(f, "one of {} or {last}", rest.join(", ")),
                None => f.write_str("nothing"),
            }
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            match self.0.iter().find(|(w, _)| *w == v) {
                Some((_, value)) => Ok(*value),
                None => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
    }

    d.deserialize_str(Words(choices))
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
#[derive(Debug, Clone, Copy)]
pub enum DelaySpec {
    Span(Duration),
    Calendar(CalendarDelay),
}

impl<'de> Deserialize<'de> for DelaySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WordOrMap {
            expecting: "a duration such as 2d or 90m, or {days: <calendar days>}",
            word: |text| {
                text.parse()
                    .map(DelaySpec::Span)
                    .map_err(|e: beckon_core::CoreError| e.to_string())
            },
            map: DelaySpec::Calendar,
        })
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
        struct Text;

        impl Visitor<'_> for Text {
            type Value = SignedDuration;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration with an optional sign, such as -3d or +2h")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<SignedDuration, E> {
                let (sign, rest) = match text.strip_prefix('-') {
                    Some(rest) => (-1, rest),
                    None => (1, text.strip_prefix('+').unwrap_or(text)),
                };
                let span: Duration = rest.parse().map_err(E::custom)?;
                Ok(SignedDuration(sign * span.0))
            }
        }

        d.deserialize_str(Text)
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveActivityEvent {
    Start,
    Update,
    End,
}

impl<'de> Deserialize<'de> for LiveActivityEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_of(
            d,
            &[
                ("start", LiveActivityEvent::Start),
                ("update", LiveActivityEvent::Update),
                ("end", LiveActivityEvent::End),
            ],
        )
    }
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnCap {
    /// Try again when the cap frees a slot or the quiet hours end.
    #[default]
    Defer,
    /// Give up on this message and move on.
    Drop,
}

impl<'de> Deserialize<'de> for OnCap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_of(d, &[("defer", OnCap::Defer), ("drop", OnCap::Drop)])
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Push,
    InApp,
    Email,
    Sms,
    Webhook,
}

impl<'de> Deserialize<'de> for Channel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_of(
            d,
            &[
                ("push", Channel::Push),
                ("in_app", Channel::InApp),
                ("email", Channel::Email),
                ("sms", Channel::Sms),
                ("webhook", Channel::Webhook),
            ],
        )
    }
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
