//! Merging an anonymous id into a known user, through the evaluator alone: the steps a
//! merge takes (merge-out to the anonymous id, merge-in with its snapshot to the known user)
//! are forwarded effects, which the simulator applies the way the partition logs would.

use beckon_core::{
    DecisionKind, Effect, Event, EventKind, MergeIn, MergeOut, MergeStage, Props, Trigger, Ts,
    UserState,
};
use beckon_journey::sim::{identify, track};
use beckon_journey::{Engine, Sim, load_definitions_str};
use serde_json::json;

const DEFS: &str = "
id: onboarding
version: 1
workspace: default
entry:
  event: Signed Up
steps:
  - id: wait
    delay: 2d
  - id: nudge
    message:
      channel: push
      body: Still there?
---
kind: segment
id: pricing-curious
version: 1
workspace: default
condition:
  did: {event: Pricing, within: 7d, at_least: 3}
---
id: sales-touch
version: 1
workspace: default
entry: {segment: pricing-curious}
steps:
  - id: ping
    message:
      channel: push
      body: Questions about pricing?
";

fn engine() -> Engine {
    match load_definitions_str("merge.yaml", DEFS) {
        Ok(defs) => Engine::from_definitions(defs),
        Err(e) => panic!("{}", e[0]),
    }
}

fn at(minutes: i64) -> Ts {
    Ts(1_780_000_000_000 + minutes * 60_000)
}

fn page(user: &str, id: &str, minute: i64) -> Event {
    Event {
        kind: EventKind::Page,
        message_id: id.to_string(),
        user: user.to_string(),
        anonymous_id: None,
        name: "Pricing".into(),
        properties: Props::new(),
        traits: Props::new(),
        timestamp: at(minute),
        previous_id: None,
    }
}

fn identify_as(known: &str, anonymous: &str, minute: i64, traits: serde_json::Value) -> Event {
    let mut e = identify(known, at(minute), traits);
    e.message_id = format!("identify-{known}-{anonymous}-{minute}");
    e.anonymous_id = Some(anonymous.to_string());
    e
}

fn pricing_count(sim: &Sim<'_>, user: &str) -> u64 {
    sim.user(user)
        .and_then(|s| s.events.get("Pricing"))
        .map_or(0, |s| s.count)
}

#[test]
fn anonymous_views_add_up_and_the_known_users_journey_stays() {
    let engine = engine();
    let mut sim = Sim::new(&engine, "default");
    sim.event(page("anon-1", "p1", 0));
    sim.event(page("anon-1", "p2", 1));
    sim.event(track("user-1", "Signed Up", at(2), json!({})));
    sim.event(page("user-1", "p3", 3));
    assert_eq!(sim.user("user-1").map(|s| s.journeys.len()), Some(1));

    sim.event(identify_as("user-1", "anon-1", 4, json!({})));

    let known = sim.user("user-1").expect("known user");
    assert_eq!(pricing_count(&sim, "user-1"), 3);
    let running: Vec<&str> = known.journeys.iter().map(|j| j.journey.as_str()).collect();
    assert_eq!(running, ["onboarding"], "the known user's journey stays");
    assert_eq!(known.merged.get("anon-1"), Some(&MergeStage::Done));
    assert!(known.segments["pricing-curious"].member);
    let tombstone = sim.user("anon-1").expect("tombstone");
    assert_eq!(tombstone.merged_into.as_deref(), Some("user-1"));
    assert_eq!(tombstone.total_events, 0);

    // Three views only after the merge: the segment entry fires for the merged user.
    let entered = sim
        .decisions_of("user-1")
        .iter()
        .any(|d| d.kind == DecisionKind::SegmentEntered && d.journey == "pricing-curious");
    assert!(entered);
    assert_eq!(sim.sent_to("user-1")[0].body, "Questions about pricing?");

    // The onboarding delay still runs for the known user.
    sim.advance(at(2 + 2 * 24 * 60));
    let bodies: Vec<&str> = sim
        .sent_to("user-1")
        .iter()
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(bodies, ["Questions about pricing?", "Still there?"]);
    assert!(sim.sent_to("anon-1").is_empty());
}

#[test]
fn later_events_for_the_old_id_reach_the_known_user() {
    let engine = engine();
    let mut sim = Sim::new(&engine, "default");
    sim.event(page("anon-2", "p1", 0));
    sim.event(identify_as("user-2", "anon-2", 1, json!({})));
    sim.event(page("anon-2", "p2", 2));
    sim.event(page("anon-2", "p2", 2));

    assert_eq!(
        pricing_count(&sim, "user-2"),
        2,
        "forwarded, a repeat applied once"
    );
    assert_eq!(pricing_count(&sim, "anon-2"), 0);
}

#[test]
fn a_running_journey_of_the_anonymous_id_moves_over_with_its_timer() {
    let engine = engine();
    let mut sim = Sim::new(&engine, "default");
    sim.event(track("anon-3", "Signed Up", at(0), json!({})));
    sim.event(identify_as("user-3", "anon-3", 10, json!({})));

    let known = sim.user("user-3").expect("known");
    let onboarding = &known.journeys[0];
    assert_eq!(onboarding.journey, "onboarding");
    assert_eq!(
        onboarding.due,
        Some(at(2 * 24 * 60)),
        "the delay keeps its due time"
    );
    assert!(sim.user("anon-3").is_some_and(|s| s.journeys.is_empty()));

    sim.advance(at(3 * 24 * 60));
    assert_eq!(sim.sent_to("user-3").len(), 1);
    assert!(
        sim.sent_to("anon-3").is_empty(),
        "the old id's timer was cancelled"
    );
}

#[test]
fn consent_takes_the_stricter_answer_and_devices_unite() {
    let engine = engine();
    let mut sim = Sim::new(&engine, "default");
    let mut old = identify(
        "anon-4",
        at(0),
        json!({
            "email_opt_out": true,
            "consent": {"push": false},
            "devices": {"ios": ["aaa"]},
            "plan": "free",
        }),
    );
    old.message_id = "old".into();
    sim.event(old);
    sim.event(identify_as(
        "user-4",
        "anon-4",
        5,
        json!({
            "email_opt_out": false,
            "consent": {"push": true, "email": true},
            "devices": {"ios": ["ccc"], "fcm": ["bbb"]},
            "plan": "pro",
        }),
    ));

    let known = sim.user("user-4").expect("known");
    let t = |name: &str| known.trait_value(name).cloned();
    assert_eq!(
        t("email_opt_out"),
        Some(json!(true)),
        "an opt-out is never undone"
    );
    assert_eq!(t("consent"), Some(json!({"push": false, "email": true})));
    assert_eq!(
        t("devices"),
        Some(json!({"ios": ["ccc", "aaa"], "fcm": ["bbb"]}))
    );
    assert_eq!(
        t("plan"),
        Some(json!("pro")),
        "other traits: the newer wins"
    );
}

#[test]
fn merging_the_same_pair_twice_changes_nothing() {
    let engine = engine();
    let mut known = UserState::new("default", "user-5");
    let mut anonymous = UserState::new("default", "anon-5");
    engine.apply(&mut anonymous, &Trigger::Event(page("anon-5", "p1", 0)));

    let out = MergeOut {
        user: "anon-5".into(),
        into: "user-5".into(),
        at: at(1),
        cause: "m1".into(),
    };
    let effects = engine.apply(&mut anonymous, &Trigger::MergeOut(out.clone()));
    let handover = effects
        .iter()
        .find_map(|e| match e {
            Effect::Forward {
                trigger: Trigger::MergeIn(m),
                ..
            } => Some(m.clone()),
            _ => None,
        })
        .expect("a merge-in");
    let tombstone = anonymous.clone();
    assert!(
        engine
            .apply(&mut anonymous, &Trigger::MergeOut(out))
            .is_empty()
    );
    assert_eq!(anonymous.merged_into, tombstone.merged_into);

    engine.apply(&mut known, &Trigger::MergeIn(handover.clone()));
    let once = known.clone();
    let again = engine.apply(&mut known, &Trigger::MergeIn(handover));
    assert!(again.is_empty());
    assert_eq!(known.events["Pricing"].count, 1);
    assert_eq!(known.version, once.version);
}

#[test]
fn a_tombstone_passes_a_late_merge_in_on() {
    let engine = engine();
    let mut tombstone = UserState::new("default", "anon-6");
    tombstone.merged_into = Some("user-6".into());
    let late = MergeIn {
        user: "anon-6".into(),
        from: "older-6".into(),
        at: at(0),
        cause: "m2".into(),
        snapshot: Box::new(UserState::new("default", "older-6")),
    };
    let effects = engine.apply(&mut tombstone, &Trigger::MergeIn(late));
    let [Effect::Forward { trigger, .. }] = effects.as_slice() else {
        panic!("one forward expected, got {effects:?}");
    };
    assert_eq!(trigger.user(), "user-6");
}

#[test]
fn a_message_id_applied_under_the_old_id_is_not_applied_again_under_the_known_one() {
    let engine = engine();
    let mut sim = Sim::new(&engine, "default");
    sim.event(page("anon-7", "retried", 0));
    sim.event(identify_as("user-7", "anon-7", 1, json!({})));

    // A client retries the same message, now sending it with the user id.
    sim.event(page("user-7", "retried", 0));
    assert_eq!(pricing_count(&sim, "user-7"), 1);
}
