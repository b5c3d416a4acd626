//! Behaviour 5: pricing viewed at least 3 times in 7 days brings an incentive, once.

use beckon_core::DecisionKind;
use beckon_journey::Sim;
use beckon_journey::sim::track;
use beckon_tests::{at, behaviour_engine};
use serde_json::json;

const DAY: i64 = 24 * 60;

#[test]
fn third_view_in_a_week_sends_the_incentive_once_ever() {
    let engine = behaviour_engine("05-pricing-intent");
    let mut sim = Sim::new(&engine, "default");
    for d in [0, 2, 4] {
        sim.event(track("u", "Pricing Viewed", at(d * DAY), json!({})));
    }
    // Leaves the segment by time alone, comes back with three more views later on.
    for d in [20, 21, 22] {
        sim.event(track("u", "Pricing Viewed", at(d * DAY), json!({})));
    }
    sim.advance(at(40 * DAY));

    let times: Vec<_> = sim.sent_to("u").iter().map(|m| m.at).collect();
    assert_eq!(
        times,
        [at(4 * DAY)],
        "sent at the third view, and only once"
    );
    let refused = sim
        .decisions_of("u")
        .into_iter()
        .find(|d| d.kind == DecisionKind::NotEntered)
        .map(|d| d.reason.clone());
    assert_eq!(
        refused.as_deref(),
        Some("not entered: re-entry is off and the user entered before")
    );
}

#[test]
fn three_views_spread_over_more_than_a_week_send_nothing() {
    let engine = behaviour_engine("05-pricing-intent");
    let mut sim = Sim::new(&engine, "default");
    for d in [0, 4, 8] {
        sim.event(track("u", "Pricing Viewed", at(d * DAY), json!({})));
    }
    sim.advance(at(20 * DAY));
    assert!(sim.sent_to("u").is_empty());
}
