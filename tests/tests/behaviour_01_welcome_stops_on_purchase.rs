//! Behaviour 1: a purchase in the middle of the welcome series' two-day delay ends it at once;
//! the tips email never goes out and no timer is left behind.

use beckon_core::DecisionKind;
use beckon_journey::Sim;
use beckon_journey::sim::track;
use beckon_tests::{at, behaviour_engine};
use serde_json::json;

const DAY: i64 = 24 * 60;

#[test]
fn purchase_mid_delay_stops_the_series_and_counts_a_conversion() {
    let engine = behaviour_engine("01-welcome-stops-on-purchase");
    let mut sim = Sim::new(&engine, "default");
    sim.event(track("ada", "Signed Up", at(0), json!({})));
    sim.event(track("ada", "Order Completed", at(DAY), json!({})));
    sim.advance(at(10 * DAY));

    let sent: Vec<_> = sim
        .sent_to("ada")
        .iter()
        .map(|m| (m.step.as_str(), m.at))
        .collect();
    assert_eq!(sent, [("welcome-push", at(0))]);
    assert_eq!(sim.pending(), 0, "the delay's timer was cancelled");
    let kinds: Vec<_> = sim.decisions_of("ada").iter().map(|d| d.kind).collect();
    assert!(kinds.contains(&DecisionKind::ExitedOnGoal));
    assert!(kinds.contains(&DecisionKind::Converted));
}

#[test]
fn without_a_purchase_the_email_follows_two_days_later() {
    let engine = behaviour_engine("01-welcome-stops-on-purchase");
    let mut sim = Sim::new(&engine, "default");
    sim.event(track("bo", "Signed Up", at(0), json!({})));
    sim.advance(at(10 * DAY));
    let sent: Vec<_> = sim
        .sent_to("bo")
        .iter()
        .map(|m| (m.step.as_str(), m.at))
        .collect();
    assert_eq!(sent, [("welcome-push", at(0)), ("tips-email", at(2 * DAY))]);
}
