//! Segment membership follows the window rule to the millisecond, changes by time alone with
//! no event, and does not flicker on late trait updates.
//!
//! Window rule: an occurrence at `t` is inside the window ending at `now` when
//! `now - within < t <= now`.

use beckon_core::{DecisionKind, Ts};
use beckon_journey::Sim;
use beckon_journey::sim::{identify, track};
use beckon_tests::{at, at_ms, engine_from_yaml};
use serde_json::json;

const WEEK_MS: i64 = 7 * 24 * 3_600_000;

const BUYERS: &str = "
kind: segment
id: repeat-buyers
version: 1
workspace: default
condition:
  did:
    event: Order Completed
    within: 7d
    at_least: 2
";

/// (kind, at) of one user's changes in one segment.
fn changes(sim: &Sim<'_>, user: &str, segment: &str) -> Vec<(DecisionKind, Ts)> {
    sim.decisions_of(user)
        .into_iter()
        .filter(|d| d.journey == segment)
        .filter(|d| {
            matches!(
                d.kind,
                DecisionKind::SegmentEntered | DecisionKind::SegmentLeft
            )
        })
        .map(|d| (d.kind, d.at))
        .collect()
}

#[test]
fn an_order_exactly_one_window_old_no_longer_counts() {
    let engine = engine_from_yaml(BUYERS);
    let mut sim = Sim::new(&engine, "default");
    sim.event(track("u", "Order Completed", at_ms(0), json!({})));
    sim.event(track("u", "Order Completed", at_ms(WEEK_MS), json!({})));
    sim.advance(at_ms(3 * WEEK_MS));
    assert_eq!(
        changes(&sim, "u", "repeat-buyers"),
        [],
        "the first order left as the second came"
    );
}

#[test]
fn an_order_a_millisecond_inside_counts_and_leaves_by_time_alone() {
    let engine = engine_from_yaml(BUYERS);
    let mut sim = Sim::new(&engine, "default");
    sim.event(track("u", "Order Completed", at_ms(0), json!({})));
    sim.event(track("u", "Order Completed", at_ms(WEEK_MS - 1), json!({})));
    sim.advance(at_ms(3 * WEEK_MS));
    assert_eq!(
        changes(&sim, "u", "repeat-buyers"),
        [
            (DecisionKind::SegmentEntered, at_ms(WEEK_MS - 1)),
            (DecisionKind::SegmentLeft, at_ms(WEEK_MS)),
        ],
        "in for exactly one millisecond, out with no event"
    );
    let state = sim.user("u").expect("user exists");
    assert!(
        !state.segments.contains_key("repeat-buyers"),
        "nothing left pending"
    );
    assert_eq!(sim.pending(), 0, "no timer left behind: nothing polls");
}

#[test]
fn leaving_follows_the_older_of_the_last_two_orders() {
    let engine = engine_from_yaml(BUYERS);
    let mut sim = Sim::new(&engine, "default");
    let day = WEEK_MS / 7;
    for d in [0, 2, 4] {
        sim.event(track("u", "Order Completed", at_ms(d * day), json!({})));
    }
    sim.advance(at_ms(4 * WEEK_MS));
    // Two orders inside from day 2 until the order of day 2 is a week old (day 9): the day-0
    // order leaving at day 7 leaves two inside.
    assert_eq!(
        changes(&sim, "u", "repeat-buyers"),
        [
            (DecisionKind::SegmentEntered, at_ms(2 * day)),
            (DecisionKind::SegmentLeft, at_ms(9 * day)),
        ]
    );
}

const DORMANT: &str = "
kind: segment
id: dormant
version: 1
workspace: default
condition:
  inactive:
    for: 3d
    event: Application Opened
";

#[test]
fn inactivity_is_entered_with_no_event_at_all_and_left_at_the_next_open() {
    let engine = engine_from_yaml(DORMANT);
    let mut sim = Sim::new(&engine, "default");
    let three_days = 3 * WEEK_MS / 7;

    // First sight of the user: a timer is set for three days later.
    sim.event(track("u", "Product Viewed", at_ms(0), json!({})));
    assert_eq!(sim.pending(), 1);
    sim.advance(at_ms(three_days + 5 * 3_600_000));
    assert_eq!(
        changes(&sim, "u", "dormant"),
        [(DecisionKind::SegmentEntered, at_ms(three_days))]
    );

    let open = at_ms(three_days + 5 * 3_600_000 + 1);
    sim.event(track("u", "Application Opened", open, json!({})));
    assert_eq!(
        changes(&sim, "u", "dormant"),
        [
            (DecisionKind::SegmentEntered, at_ms(three_days)),
            (DecisionKind::SegmentLeft, open)
        ],
        "left at once on the open"
    );
    // And back in three days after that open, by time alone.
    sim.advance(open.saturating_add(beckon_core::Duration(three_days)));
    assert_eq!(changes(&sim, "u", "dormant").len(), 3);
}

#[test]
fn an_older_identify_changes_no_trait_and_no_segment_flickers() {
    let yaml = "
kind: segment
id: pro-users
version: 1
workspace: default
condition:
  trait:
    name: plan
    in: [pro, team]
";
    let engine = engine_from_yaml(yaml);
    let mut sim = Sim::new(&engine, "default");
    sim.event(identify("u", at(60), json!({"plan": "pro"})));
    // A retried identify from earlier arrives late.
    sim.event(identify("u", at(30), json!({"plan": "free"})));
    sim.advance(at(120));

    let state = sim.user("u").expect("user exists");
    assert_eq!(state.trait_value("plan"), Some(&json!("pro")));
    assert_eq!(
        changes(&sim, "u", "pro-users"),
        [(DecisionKind::SegmentEntered, at(60))]
    );
}

#[test]
fn funnel_progress_and_journeys_started_on_leaving_a_segment() {
    let yaml = "
kind: segment
id: stuck-at-plan
version: 1
workspace: default
condition:
  funnel:
    steps: [Signup Started, Email Verified, Plan Chosen, Payment Added]
    reached: 3
    not_reached: 4
    within: 2d
---
id: plan-chosen-thanks
version: 1
workspace: default
entry:
  segment: stuck-at-plan
  on: exit
steps:
  - id: note
    message:
      channel: in_app
      body: Thanks for finishing sign-up.
";
    let engine = engine_from_yaml(yaml);
    let mut sim = Sim::new(&engine, "default");
    sim.event(track("u", "Signup Started", at(0), json!({})));
    sim.event(track("u", "Plan Chosen", at(1), json!({})));
    assert!(
        changes(&sim, "u", "stuck-at-plan").is_empty(),
        "out of order: still at step 1"
    );
    sim.event(track("u", "Email Verified", at(2), json!({})));
    sim.event(track("u", "Plan Chosen", at(3), json!({})));
    sim.event(track("u", "Payment Added", at(4), json!({})));
    assert_eq!(
        changes(&sim, "u", "stuck-at-plan"),
        [
            (DecisionKind::SegmentEntered, at(3)),
            (DecisionKind::SegmentLeft, at(4))
        ]
    );
    let notes: Vec<_> = sim.sent_to("u").iter().map(|m| m.at).collect();
    assert_eq!(notes, [at(4)], "the exit edge started the journey");
}
