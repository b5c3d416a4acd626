//! Conditions on a user's behavioral state, shared by segments, journey entries and branches.
//!
//! Window rule, everywhere a `within` appears: an occurrence at `t` is inside the window that
//! ends at `now` when `now - within < t <= now`. An occurrence exactly `within` old has just
//! left. So "at least 2 orders within 7d" stops being true at the millisecond the older of
//! the last two orders is exactly 7 days old.
//!
//! Besides its truth now, every condition can say when its truth could next change with no
//! new event at all ([`Condition::next_change`]): a window sliding past an occurrence, an
//! inactivity period running out, a funnel attempt expiring. Segments set a timer for that
//! instant instead of polling.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use beckon_core::{Duration, FunnelTrack, Props, Tracking, Ts, UserState};
use serde::Deserialize;
use serde_json::Value;

/// The longest window a count may use. Longer windows would need more buckets per user than
/// the state's memory bound allows.
pub const MAX_WINDOW: Duration = Duration(90 * 86_400_000);

/// The event gateway delivery reports use for opens, the default of `engaged`.
pub const MESSAGE_OPENED: &str = "Message Opened";

/// A condition, written in YAML as a single-key map.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "ConditionRepr")]
pub enum Condition {
    Did(DidSpec),
    DidNot(DidSpec),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Trait(NamedTest),
    /// A property of the event being handled (or of the journey's entry event).
    Property(NamedTest),
    FirstDone(DoneSpec),
    LastDone(DoneSpec),
    Inactive(InactiveSpec),
    Funnel(FunnelSpec),
    /// Membership of a segment, as kept in the user's state.
    Segment(String),
    /// The user opened (or clicked) a message of this journey's step.
    Engaged(EngagedSpec),
}

/// The YAML shape of a condition. YAML enums would otherwise need `!tags`, which nobody
/// writes by hand.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionRepr {
    #[serde(default)]
    did: Option<DidSpec>,
    #[serde(default)]
    did_not: Option<DidSpec>,
    #[serde(default)]
    all: Option<Vec<Condition>>,
    #[serde(default)]
    any: Option<Vec<Condition>>,
    #[serde(default)]
    not: Option<Box<Condition>>,
    #[serde(default, rename = "trait")]
    trait_: Option<NamedTest>,
    #[serde(default)]
    property: Option<NamedTest>,
    #[serde(default)]
    first_done: Option<DoneSpec>,
    #[serde(default)]
    last_done: Option<DoneSpec>,
    #[serde(default)]
    inactive: Option<InactiveSpec>,
    #[serde(default)]
    funnel: Option<FunnelSpec>,
    #[serde(default)]
    segment: Option<String>,
    #[serde(default)]
    engaged: Option<EngagedSpec>,
}

impl TryFrom<ConditionRepr> for Condition {
    type Error = String;

    fn try_from(r: ConditionRepr) -> Result<Self, Self::Error> {
        let found: Vec<Condition> = [
            r.did.map(Condition::Did),
            r.did_not.map(Condition::DidNot),
            r.all.map(Condition::All),
            r.any.map(Condition::Any),
            r.not.map(Condition::Not),
            r.trait_.map(Condition::Trait),
            r.property.map(Condition::Property),
            r.first_done.map(Condition::FirstDone),
            r.last_done.map(Condition::LastDone),
            r.inactive.map(Condition::Inactive),
            r.funnel.map(Condition::Funnel),
            r.segment.map(Condition::Segment),
            r.engaged.map(Condition::Engaged),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut found = found.into_iter();
        match (found.next(), found.next()) {
            (Some(c), None) => Ok(c),
            _ => Err(
                "expected exactly one of did, did_not, all, any, not, trait, property, \
                 first_done, last_done, inactive, funnel, segment, engaged"
                    .into(),
            ),
        }
    }
}

/// "Did `event` (matching filters) at least / at most / exactly N times within a window."
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DidSpec {
    pub event: String,
    #[serde(default, rename = "where")]
    pub filter: BTreeMap<String, Value>,
    /// Properties that must equal those of the event being evaluated (e.g. same category).
    #[serde(default)]
    pub same: Vec<String>,
    /// Window ending now. Without it the user's whole history counts.
    #[serde(default)]
    pub within: Option<Duration>,
    #[serde(default)]
    pub at_least: Option<u64>,
    #[serde(default)]
    pub at_most: Option<u64>,
    #[serde(default)]
    pub exactly: Option<u64>,
}

/// A test on one value: a trait, or an event property. Written flat:
/// `{name: plan, in: [pro, team]}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "NamedTestRepr")]
pub struct NamedTest {
    pub name: String,
    pub test: Test,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedTestRepr {
    name: String,
    #[serde(default)]
    equals: Option<Value>,
    #[serde(default)]
    not_equals: Option<Value>,
    #[serde(default)]
    exists: Option<bool>,
    #[serde(default)]
    gt: Option<Value>,
    #[serde(default)]
    gte: Option<Value>,
    #[serde(default)]
    lt: Option<Value>,
    #[serde(default)]
    lte: Option<Value>,
    #[serde(default, rename = "in")]
    one_of: Option<Vec<Value>>,
}

impl From<NamedTestRepr> for NamedTest {
    fn from(r: NamedTestRepr) -> Self {
        NamedTest {
            name: r.name,
            test: Test {
                equals: r.equals,
                not_equals: r.not_equals,
                exists: r.exists,
                gt: r.gt,
                gte: r.gte,
                lt: r.lt,
                lte: r.lte,
                one_of: r.one_of,
            },
        }
    }
}

/// Comparisons on a value. Numbers compare as numbers, strings as strings (so ISO dates
/// compare by time); comparing a number with a string is false. A missing or null value
/// fails every test except `exists: false`. With no test at all, the value must exist.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Test {
    #[serde(default)]
    pub equals: Option<Value>,
    #[serde(default)]
    pub not_equals: Option<Value>,
    #[serde(default)]
    pub exists: Option<bool>,
    #[serde(default)]
    pub gt: Option<Value>,
    #[serde(default)]
    pub gte: Option<Value>,
    #[serde(default)]
    pub lt: Option<Value>,
    #[serde(default)]
    pub lte: Option<Value>,
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<Value>>,
}

const TEST_KEYS: [&str; 8] = [
    "equals",
    "not_equals",
    "exists",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
];

/// "The first (or last) time the user did `event`" was `within` a window ending now, and/or
/// `before` / `after` an instant (RFC 3339).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoneSpec {
    pub event: String,
    #[serde(default)]
    pub within: Option<Duration>,
    #[serde(default)]
    pub before: Option<Instant>,
    #[serde(default)]
    pub after: Option<Instant>,
}

/// An RFC 3339 instant in a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant(pub Ts);

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ts::parse_rfc3339(&text)
            .map(Instant)
            .map_err(serde::de::Error::custom)
    }
}

/// "No `event` (any event when absent) for `for`." Measured from the last occurrence, or from
/// the first time the user was seen when they never did it, so a user who never opens the app
/// becomes inactive `for` after their first event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InactiveSpec {
    #[serde(rename = "for")]
    pub period: Duration,
    #[serde(default)]
    pub event: Option<String>,
}

/// Progress through ordered steps: the current attempt has reached at least `reached` steps
/// and fewer than `not_reached`. With `within`, an attempt counts only while its first step is
/// inside the window.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "FunnelRepr")]
pub struct FunnelSpec {
    pub track: FunnelTrack,
    pub reached: Option<u32>,
    pub not_reached: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FunnelRepr {
    steps: Vec<String>,
    #[serde(default)]
    reached: Option<u32>,
    #[serde(default)]
    not_reached: Option<u32>,
    #[serde(default)]
    within: Option<Duration>,
}

impl TryFrom<FunnelRepr> for FunnelSpec {
    type Error = String;

    fn try_from(r: FunnelRepr) -> Result<Self, Self::Error> {
        let n = r.steps.len() as u32;
        if n < 2 {
            return Err("a funnel needs at least two steps".into());
        }
        if r.reached.is_none() && r.not_reached.is_none() {
            return Err("a funnel needs `reached`, `not_reached` or both".into());
        }
        if r.reached.is_some_and(|x| x == 0 || x > n)
            || r.not_reached.is_some_and(|x| x == 0 || x > n)
        {
            return Err(format!(
                "`reached` and `not_reached` must be step numbers from 1 to {n}"
            ));
        }
        let within = r.within.map_or(String::new(), |w| format!(" within {w}"));
        let key = format!("{}{within}", r.steps.join(" > "));
        Ok(FunnelSpec {
            track: FunnelTrack {
                key,
                steps: r.steps,
                within: r.within,
            },
            reached: r.reached,
            not_reached: r.not_reached,
        })
    }
}

/// The user opened a message sent by `step` of the journey being evaluated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngagedSpec {
    pub step: String,
    /// The engagement event; `Message Opened` by default.
    #[serde(default)]
    pub event: Option<String>,
    /// Default: 30 days.
    #[serde(default)]
    pub within: Option<Duration>,
}

impl EngagedSpec {
    fn event(&self) -> &str {
        self.event.as_deref().unwrap_or(MESSAGE_OPENED)
    }

    fn within(&self) -> Duration {
        self.within.unwrap_or(Duration(30 * 86_400_000))
    }
}

/// What a condition is evaluated against.
pub struct Context<'a> {
    pub state: &'a UserState,
    pub now: Ts,
    /// Properties of the event being handled (for `same` and `property`), or of the
    /// journey's entry event.
    pub props: &'a Props,
    /// The journey being evaluated, for `engaged`; empty for segments.
    pub journey: &'a str,
}

impl Condition {
    pub fn eval(&self, cx: &Context<'_>) -> bool {
        match self {
            Condition::Did(d) => d.eval(cx),
            Condition::DidNot(d) => !d.eval(cx),
            Condition::All(cs) => cs.iter().all(|c| c.eval(cx)),
            Condition::Any(cs) => cs.iter().any(|c| c.eval(cx)),
            Condition::Not(c) => !c.eval(cx),
            Condition::Trait(t) => t.test.eval(cx.state.trait_value(&t.name)),
            Condition::Property(p) => p.test.eval(cx.props.get(&p.name)),
            Condition::FirstDone(d) => d.eval(cx, |s| s.first),
            Condition::LastDone(d) => d.eval(cx, |s| s.last),
            Condition::Inactive(i) => i
                .since(cx)
                .is_some_and(|t| cx.now >= t.saturating_add(i.period)),
            Condition::Funnel(f) => f.eval(cx),
            Condition::Segment(id) => cx.state.segments.get(id).is_some_and(|m| m.member),
            Condition::Engaged(e) => {
                let opened = cx.state.occurrences_within(e.event(), cx.now, e.within());
                opened
                    .filter(|o| o.props.get("journey").and_then(Value::as_str) == Some(cx.journey))
                    .any(|o| o.props.get("step").and_then(Value::as_str) == Some(&e.step))
            }
        }
    }

    /// The earliest instant after `now` at which this condition's truth could change with no
    /// new event, if any. It may be early (the truth is then simply re-checked), never late.
    pub fn next_change(&self, cx: &Context<'_>) -> Option<Ts> {
        let after = |t: Ts| (t > cx.now).then_some(t);
        match self {
            Condition::Did(d) | Condition::DidNot(d) => {
                let within = d.within?;
                d.counted(cx)
                    .map(|o| o.at.saturating_add(within))
                    .filter(|t| *t > cx.now)
                    .min()
            }
            Condition::All(cs) | Condition::Any(cs) => {
                cs.iter().filter_map(|c| c.next_change(cx)).min()
            }
            Condition::Not(c) => c.next_change(cx),
            Condition::FirstDone(d) => d.next_change(cx, |s| s.first),
            Condition::LastDone(d) => d.next_change(cx, |s| s.last),
            Condition::Inactive(i) => after(i.since(cx)?.saturating_add(i.period)),
            Condition::Funnel(f) => cx.state.funnel_reached(&f.track, cx.now).1.and_then(after),
            Condition::Engaged(e) => {
                let within = e.within();
                let opened = cx.state.occurrences_within(e.event(), cx.now, within);
                opened
                    .map(|o| o.at.saturating_add(within))
                    .filter(|t| *t > cx.now)
                    .min()
            }
            Condition::Trait(_) | Condition::Property(_) | Condition::Segment(_) => None,
        }
    }

    /// Registers the history this condition needs to be evaluated.
    pub fn track(&self, tracking: &mut Tracking) {
        match self {
            Condition::Did(d) | Condition::DidNot(d) => {
                tracking.refer(&d.event);
                if let Some(within) = d.within {
                    let props = d.filter.keys().chain(d.same.iter()).cloned();
                    tracking.track(&d.event, within, props);
                }
            }
            Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| c.track(tracking)),
            Condition::Not(c) => c.track(tracking),
            Condition::Funnel(f) => tracking.track_funnel(f.track.clone()),
            Condition::Engaged(e) => {
                let props = ["journey".to_string(), "step".to_string()];
                tracking.track(e.event(), e.within(), props);
            }
            // Counts and first and last times are read from the per-name statistics.
            Condition::FirstDone(d) | Condition::LastDone(d) => tracking.refer(&d.event),
            Condition::Inactive(i) => {
                if let Some(event) = &i.event {
                    tracking.refer(event);
                }
            }
            Condition::Trait(_) | Condition::Property(_) | Condition::Segment(_) => {}
        }
    }

    /// Segments this condition reads.
    pub fn segments<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Condition::Segment(id) => out.push(id),
            Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| c.segments(out)),
            Condition::Not(c) => c.segments(out),
            _ => {}
        }
    }

    /// Problems that parsing cannot see, as (field, message).
    pub fn check(&self, field: &str, out: &mut Vec<(String, String)>) {
        let window = |w: Option<Duration>, name: &str, out: &mut Vec<(String, String)>| {
            if let Some(w) = w
                && (w.0 <= 0 || w > MAX_WINDOW)
            {
                out.push((
                    format!("{field}.{name}"),
                    format!("expected a window from 1ms to 90d, found {w}"),
                ));
            }
        };
        match self {
            Condition::Did(d) | Condition::DidNot(d) => {
                let filtered = !d.filter.is_empty() || !d.same.is_empty();
                if filtered && d.within.is_none() {
                    out.push((
                        format!("{field}.within"),
                        "a window is required when filtering on properties".into(),
                    ));
                }
                let bounds = [d.at_least, d.at_most, d.exactly].iter().flatten().count();
                if d.exactly.is_some() && bounds > 1 {
                    out.push((
                        format!("{field}.exactly"),
                        "exactly cannot be combined with at_least or at_most".into(),
                    ));
                }
                window(d.within, "within", out);
            }
            Condition::All(cs) | Condition::Any(cs) => {
                for (i, c) in cs.iter().enumerate() {
                    c.check(&format!("{field}[{i}]"), out);
                }
            }
            Condition::Not(c) => c.check(field, out),
            Condition::FirstDone(d) | Condition::LastDone(d) => window(d.within, "within", out),
            Condition::Inactive(i) => window(Some(i.period), "for", out),
            Condition::Funnel(f) => window(f.track.within, "within", out),
            Condition::Engaged(e) => window(e.within, "within", out),
            Condition::Trait(_) | Condition::Property(_) | Condition::Segment(_) => {}
        }
    }
}

impl DidSpec {
    /// The remembered occurrences that count: inside the window, matching the filters.
    fn counted<'a>(
        &'a self,
        cx: &'a Context<'_>,
    ) -> impl Iterator<Item = &'a beckon_core::state::Occurrence> {
        let within = self.within.unwrap_or(Duration::ZERO);

        // The values `same` compares against are looked up once, not per occurrence.
        let wanted: Vec<Option<&serde_json::Value>> =
            self.same.iter().map(|p| cx.props.get(p)).collect();
        // Newest first: whether a count reaches its cap does not depend on the order, and
        // the usual "3 views today" reaches it after the latest few.
        cx.state
            .occurrences_within_newest_first(&self.event, cx.now, within)
            .filter(|o| props_match(&o.props, &self.filter))
            .filter(move |o| {
                self.same
                    .iter()
                    .zip(&wanted)
                    .all(|(p, want)| want.is_some() && o.props.get(p) == *want)
            })
    }

    /// Counts up to `cap`: enough to decide the condition without scanning every occurrence.
    fn count_capped(&self, cx: &Context<'_>, cap: u64) -> u64 {
        if self.within.is_none() {
            return cx.state.events.get(&self.event).map_or(0, |s| s.count);
        }
        let mut n = 0;
        for o in self.counted(cx) {
            n += u64::from(o.count);
            if n >= cap {
                break;
            }
        }
        n
    }

    fn eval(&self, cx: &Context<'_>) -> bool {
        if let Some(exact) = self.exactly {
            return self.count_capped(cx, exact.saturating_add(1)) == exact;
        }
        let at_least = self
            .at_least
            .unwrap_or(if self.at_most.is_some() { 0 } else { 1 });
        let cap = match self.at_most {
            Some(max) => max.saturating_add(1).max(at_least),
            None => at_least,
        };
        let n = self.count_capped(cx, cap);
        n >= at_least && self.at_most.is_none_or(|max| n <= max)
    }
}

impl DoneSpec {
    fn eval(&self, cx: &Context<'_>, pick: fn(&beckon_core::state::EventStats) -> Ts) -> bool {
        let Some(t) = cx.state.events.get(&self.event).map(pick) else {
            return false;
        };
        let inside = self
            .within
            .is_none_or(|w| cx.now.saturating_sub(w) < t && t <= cx.now);
        inside && self.before.is_none_or(|b| t < b.0) && self.after.is_none_or(|a| t > a.0)
    }

    fn next_change(
        &self,
        cx: &Context<'_>,
        pick: fn(&beckon_core::state::EventStats) -> Ts,
    ) -> Option<Ts> {
        let t = cx.state.events.get(&self.event).map(pick)?;
        let leaves = t.saturating_add(self.within?);
        (leaves > cx.now).then_some(leaves)
    }
}

impl InactiveSpec {
    /// The instant inactivity is measured from.
    fn since(&self, cx: &Context<'_>) -> Option<Ts> {
        let last = match &self.event {
            Some(name) => cx.state.events.get(name).map(|s| s.last),
            None => cx.state.last_seen,
        };
        last.or(cx.state.first_seen)
    }
}

impl FunnelSpec {
    fn eval(&self, cx: &Context<'_>) -> bool {
        let (reached, _) = cx.state.funnel_reached(&self.track, cx.now);
        self.reached.is_none_or(|r| reached >= r) && self.not_reached.is_none_or(|n| reached < n)
    }
}

impl Test {
    pub fn eval(&self, value: Option<&Value>) -> bool {
        let value = value.filter(|v| !v.is_null());
        if let Some(want) = self.exists {
            if value.is_some() != want {
                return false;
            }
            if !want {
                return true;
            }
        }
        let Some(v) = value else {
            return false;
        };
        let cmp = |want: &Option<Value>, ok: fn(Ordering) -> bool| {
            want.as_ref().is_none_or(|w| compare(v, w).is_some_and(ok))
        };
        self.equals.as_ref().is_none_or(|w| loose_eq(v, w))
            && self.not_equals.as_ref().is_none_or(|w| !loose_eq(v, w))
            && cmp(&self.gt, Ordering::is_gt)
            && cmp(&self.gte, Ordering::is_ge)
            && cmp(&self.lt, Ordering::is_lt)
            && cmp(&self.lte, Ordering::is_le)
            && self
                .one_of
                .as_ref()
                .is_none_or(|l| l.iter().any(|w| loose_eq(v, w)))
    }

    /// Reads a `where` value written as comparisons (`{gte: 90}`); `None` for a plain value.
    fn from_filter(want: &Value) -> Option<Test> {
        let obj = want.as_object()?;
        if obj.is_empty() || !obj.keys().all(|k| TEST_KEYS.contains(&k.as_str())) {
            return None;
        }
        serde_json::from_value(want.clone()).ok()
    }
}

/// Equality that treats `1` and `1.0` as equal.
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => compare(a, b) == Some(Ordering::Equal),
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
        _ => None,
    }
}

/// True when every filter property is present in `props` and matches: equal to a plain
/// value, or passing comparisons written as a map (`percent: {gte: 90}`).
pub fn props_match(props: &Props, filter: &BTreeMap<String, Value>) -> bool {
    filter.iter().all(|(k, want)| match want {
        Value::Object(_) => match Test::from_filter(want) {
            Some(test) => test.eval(props.get(k)),
            None => props.get(k) == Some(want),
        },
        _ => props.get(k) == Some(want),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn comparisons_on_values() {
        let t: Test = serde_json::from_value(json!({"gte": 90})).unwrap_or_default();
        assert!(t.eval(Some(&json!(90))));
        assert!(t.eval(Some(&json!(95.5))));
        assert!(!t.eval(Some(&json!(89))));
        assert!(!t.eval(Some(&json!("95"))), "a string is not a number");
        assert!(!t.eval(None));
        let t: Test = serde_json::from_value(json!({"in": ["pro", "team"]})).unwrap_or_default();
        assert!(t.eval(Some(&json!("pro"))) && !t.eval(Some(&json!("free"))));
        let t: Test = serde_json::from_value(json!({"exists": false})).unwrap_or_default();
        assert!(t.eval(None) && t.eval(Some(&Value::Null)) && !t.eval(Some(&json!(1))));
    }

    #[test]
    fn filters_mix_plain_values_and_comparisons() {
        let props = json!({"percent": 92, "video": "intro"});
        let props = props.as_object().cloned().unwrap_or_default();
        let f: BTreeMap<String, Value> =
            serde_json::from_value(json!({"percent": {"gte": 90}, "video": "intro"}))
                .unwrap_or_default();
        assert!(props_match(&props, &f));
        let f: BTreeMap<String, Value> =
            serde_json::from_value(json!({"percent": {"gt": 92}})).unwrap_or_default();
        assert!(!props_match(&props, &f));
    }
}
