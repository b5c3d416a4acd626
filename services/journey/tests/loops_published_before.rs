//! Journeys published before loops were checked: loading them as published keeps them, with
//! what the checks refuse noted, and the evaluator paces their loops so that none goes round
//! faster than a loop the checks let through. Loading them as new specs still refuses them.

use beckon_core::{DecisionKind, Ts};
use beckon_journey::sim::track;
use beckon_journey::{Engine, Sim, load_definitions_str, load_published_str};
use serde_json::json;

/// A reminder that comes round every millisecond: a message, then `delay: 1ms` back to it.
const FAST: &str = "
id: nag
version: 1
workspace: w
entry:
  event: Product Added
steps:
  - id: remind
    message:
      channel: push
      body: still there?
  - id: pause
    delay: 1ms
    next: remind
";

/// A loop that never waits: a message whose `next` is itself.
const TIGHT: &str = "
id: spin
version: 1
workspace: w
entry:
  event: Signed Up
steps:
  - id: hello
    message:
      channel: push
      body: hello
    next: hello
";

fn at(ms: i64) -> Ts {
    Ts(Ts::parse_rfc3339("2026-06-01T10:00:00Z")
        .unwrap_or(Ts::MIN)
        .0
        + ms)
}

fn published(yaml: &str) -> Engine {
    match load_published_str("stored.yaml", yaml) {
        Ok(defs) => Engine::from_definitions(defs),
        Err(e) => panic!("{}", e[0]),
    }
}

#[test]
fn a_new_spec_with_such_a_loop_is_still_refused() {
    for (yaml, words) in [
        (FAST, "loop after waiting only 1ms"),
        (TIGHT, "goes back to itself without waiting"),
    ] {
        let errors = load_definitions_str("new.yaml", yaml).expect_err("refused loop");
        assert!(errors[0].message.contains(words), "{}", errors[0]);
    }
}

#[test]
fn a_published_journey_with_such_a_loop_loads_and_says_why_it_would_be_refused() {
    let defs = load_published_str("stored.yaml", FAST).expect("published journey loads");
    let j = &defs.journeys[0];
    assert_eq!((j.id.as_str(), j.version), ("nag", 1));
    assert_eq!(j.refused_loops.len(), 1);
    let why = j.refused_loops[0].to_string();
    assert!(why.contains("loop after waiting only 1ms"), "{why}");
    assert!(why.contains("at least 1m"), "{why}");

    // A journey that passes every check has nothing noted.
    let fine = FAST.replace("delay: 1ms", "delay: 1h");
    let defs = load_published_str("stored.yaml", &fine).expect("loads");
    assert!(defs.journeys[0].refused_loops.is_empty());

    // Other errors still refuse a stored journey: only the loop checks are newer than it.
    let broken = FAST.replace("channel: push", "channel: pigeon");
    assert!(load_published_str("stored.yaml", &broken).is_err());
}

#[test]
fn a_millisecond_loop_goes_round_once_a_minute() {
    let engine = published(FAST);
    let mut sim = Sim::new(&engine, "w");
    sim.event(track("u", "Product Added", at(0), json!({})));
    sim.advance(at(10 * 60_000));

    // At 0 the first reminder; each round after it is held a minute before `remind`.
    let sent: Vec<Ts> = sim.sent_to("u").iter().map(|m| m.at).collect();
    let every_minute: Vec<Ts> = (0..=9).map(|m| at(m * 60_000 + m)).collect();
    assert_eq!(sent, every_minute);
    let held = sim
        .decisions_of("u")
        .into_iter()
        .filter(|d| d.kind == DecisionKind::Step && d.reason.starts_with("held until"))
        .count();
    assert_eq!(held, 10);
    assert_eq!(
        sim.pending(),
        1,
        "the instance waits, paced, for its next round"
    );
    let state = sim.user("u").expect("user");
    assert_eq!(state.journeys.len(), 1);
    assert!(state.journeys[0].paced);
    assert_eq!(state.journeys[0].step, "remind");
}

#[test]
fn a_loop_that_never_waits_is_held_instead_of_running_within_one_trigger() {
    let engine = published(TIGHT);
    let mut sim = Sim::new(&engine, "w");
    sim.event(track("u", "Signed Up", at(0), json!({})));
    assert_eq!(
        sim.sent_to("u").len(),
        1,
        "one message, not one per step allowed"
    );

    sim.advance(at(3 * 60_000));
    let sent: Vec<Ts> = sim.sent_to("u").iter().map(|m| m.at).collect();
    assert_eq!(sent, vec![at(0), at(60_000), at(120_000), at(180_000)]);
    let keys: std::collections::HashSet<&str> = sim
        .sent_to("u")
        .iter()
        .map(|m| m.idempotency_key.as_str())
        .collect();
    assert_eq!(keys.len(), 4, "each round is a message of its own");
}

#[test]
fn a_goal_ends_a_paced_instance() {
    let yaml = FAST.replace(
        "entry:\n  event: Product Added\n",
        "entry:\n  event: Product Added\ngoal:\n  event: Order Completed\n",
    );
    let engine = published(&yaml);
    let mut sim = Sim::new(&engine, "w");
    sim.event(track("u", "Product Added", at(0), json!({})));
    sim.event(track("u", "Order Completed", at(30_000), json!({})));
    sim.advance(at(10 * 60_000));
    assert_eq!(sim.sent_to("u").len(), 1);
    assert!(sim.user("u").expect("user").journeys.is_empty());
}
