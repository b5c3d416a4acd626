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

/// Sources send consent answers as text or numbers as often as booleans: each of these stops
/// the email, and the reason quotes the value as it was given.
#[test]
fn opt_outs_given_as_text_or_numbers_stop_the_email_too() {
    let engine = behaviour_engine("11-opt-out-during-wait");
    let answers = [
        (
            "yes",
            json!({"email_opt_out": "yes"}),
            "email_opt_out is \"yes\"",
        ),
        ("one", json!({"email_opt_out": 1}), "email_opt_out is 1"),
        (
            "text",
            json!({"unsubscribed": "TRUE"}),
            "unsubscribed is \"TRUE\"",
        ),
        (
            "no",
            json!({"consent": {"email": "no"}}),
            "consent.email is \"no\"",
        ),
    ];
    let mut sim = Sim::new(&engine, "default");
    for (user, traits, _) in &answers {
        sim.event(track(user, "Trial Started", at(0), json!({})));
        sim.event(identify(user, at(DAY), traits.clone()));
    }
    sim.event(track("unclear", "Trial Started", at(0), json!({})));
    sim.event(identify(
        "unclear",
        at(DAY),
        json!({"email_opt_out": "maybe"}),
    ));
    sim.advance(at(5 * DAY));

    for (user, _, why) in answers {
        assert!(sim.sent_to(user).is_empty(), "{user}");
        let skipped = sim
            .decisions_of(user)
            .into_iter()
            .find(|d| d.kind == DecisionKind::Skipped)
            .map(|d| d.reason.clone());
        assert_eq!(skipped, Some(format!("not sent: {why} at send time")));
    }
    assert_eq!(
        sim.sent_to("unclear").len(),
        1,
        "no answer is not an opt-out"
    );
}
