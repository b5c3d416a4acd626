//! Behaviour 11: opting out of email during a wait means the email is not sent.

use beckon_core::DecisionKind;
use beckon_journey::Sim;
use beckon_journey::sim::{identify, track};
use beckon_tests::{at, behaviour_engine};
use serde_json::json;

const DAY: i64 = 24 * 60;

#[test]
fn consent_is_checked_when_the_email_is_due() {
    let engine = behaviour_engine("11-opt-out-during-wait");
    let mut sim = Sim::new(&engine, "default");
    sim.event(track("out", "Trial Started", at(0), json!({})));
    sim.event(identify("out", at(DAY), json!({"email_opt_out": true})));
    sim.event(track("in", "Trial Started", at(0), json!({})));
    sim.advance(at(5 * DAY));

    assert!(sim.sent_to("out").is_empty());
    let skipped = sim
        .decisions_of("out")
        .into_iter()
        .find(|d| d.kind == DecisionKind::Skipped)
        .map(|d| (d.at, d.reason.clone()));
    assert_eq!(
        skipped,
        Some((
            at(2 * DAY),
            "not sent: email_opt_out is true at send time".to_string()
        ))
    );
    assert_eq!(sim.sent_to("in").len(), 1);
}
