//! Conditions on a user's behavioral state, shared by journey entries and branches.

use std::collections::BTreeMap;

use beckon_core::{Duration, Props, Tracking, Ts, UserState};
use serde::Deserialize;

/// A condition, written in YAML as a single-key map: `did`, `did_not`, `all`, `any`, `not` or
/// `trait`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "ConditionRepr")]
pub enum Condition {
    Did(DidSpec),
    DidNot(DidSpec),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Trait(TraitSpec),
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
    trait_: Option<TraitSpec>,
}

impl TryFrom<ConditionRepr> for Condition {
    type Error = String;

    fn try_from(r: ConditionRepr) -> Result<Self, Self::Error> {
        let mut found = Vec::new();
        if let Some(d) = r.did {
            found.push(Condition::Did(d));
        }
        if let Some(d) = r.did_not {
            found.push(Condition::DidNot(d));
        }
        if let Some(cs) = r.all {
            found.push(Condition::All(cs));
        }
        if let Some(cs) = r.any {
            found.push(Condition::Any(cs));
        }
        if let Some(c) = r.not {
            found.push(Condition::Not(c));
        }
        if let Some(t) = r.trait_ {
            found.push(Condition::Trait(t));
        }
        match (found.pop(), found.is_empty()) {
            (Some(c), true) => Ok(c),
            _ => Err("expected exactly one of did, did_not, all, any, not, trait".into()),
        }
    }
}

/// "Did `event` (matching filters) at least / at most / exactly N times within a window."
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DidSpec {
    pub event: String,
    #[serde(default, rename = "where")]
    pub filter: BTreeMap<String, serde_json::Value>,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraitSpec {
    pub name: String,
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    #[serde(default)]
    pub exists: Option<bool>,
}

/// What a condition is evaluated against.
pub struct Context<'a> {
    pub state: &'a UserState,
    pub now: Ts,
    /// Properties of the event being handled (for `same`), or of the journey's entry event.
    pub props: &'a Props,
}

impl Condition {
    pub fn eval(&self, cx: &Context<'_>) -> bool {
        match self {
            Condition::Did(d) => d.eval(cx),
            Condition::DidNot(d) => !d.eval(cx),
            Condition::All(cs) => cs.iter().all(|c| c.eval(cx)),
            Condition::Any(cs) => cs.iter().any(|c| c.eval(cx)),
            Condition::Not(c) => !c.eval(cx),
            Condition::Trait(t) => t.eval(cx),
        }
    }

    /// Registers the history this condition needs to be evaluated.
    pub fn track(&self, tracking: &mut Tracking) {
        match self {
            Condition::Did(d) | Condition::DidNot(d) => {
                if let Some(within) = d.within {
                    let props = d.filter.keys().chain(d.same.iter()).cloned();
                    tracking.track(&d.event, within, props);
                }
            }
            Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| c.track(tracking)),
            Condition::Not(c) => c.track(tracking),
            Condition::Trait(_) => {}
        }
    }

    /// Problems that parsing cannot see, as (field, message).
    pub fn check(&self, field: &str, out: &mut Vec<(String, String)>) {
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
            }
            Condition::All(cs) | Condition::Any(cs) => {
                for (i, c) in cs.iter().enumerate() {
                    c.check(&format!("{field}[{i}]"), out);
                }
            }
            Condition::Not(c) => c.check(field, out),
            Condition::Trait(_) => {}
        }
    }
}

impl DidSpec {
    fn count(&self, cx: &Context<'_>) -> u64 {
        let Some(within) = self.within else {
            return cx.state.events.get(&self.event).map_or(0, |s| s.count);
        };
        cx.state
            .occurrences_within(&self.event, cx.now, within)
            .filter(|o| props_match(&o.props, &self.filter))
            .filter(|o| {
                self.same
                    .iter()
                    .all(|p| o.props.get(p).is_some() && o.props.get(p) == cx.props.get(p))
            })
            .count() as u64
    }

    fn eval(&self, cx: &Context<'_>) -> bool {
        let n = self.count(cx);
        if let Some(exact) = self.exactly {
            return n == exact;
        }
        let at_least = self.at_least.unwrap_or(if self.at_most.is_some() { 0 } else { 1 });
        n >= at_least && self.at_most.is_none_or(|max| n <= max)
    }
}

impl TraitSpec {
    fn eval(&self, cx: &Context<'_>) -> bool {
        let value = cx.state.trait_value(&self.name).filter(|v| !v.is_null());
        if let Some(want) = self.exists {
            if value.is_some() != want {
                return false;
            }
        }
        match &self.equals {
            Some(want) => value == Some(want),
            None => self.exists.is_some() || value.is_some(),
        }
    }
}

/// True when every filter property is present in `props` with an equal value.
pub fn props_match(props: &Props, filter: &BTreeMap<String, serde_json::Value>) -> bool {
    filter.iter().all(|(k, want)| props.get(k) == Some(want))
}
