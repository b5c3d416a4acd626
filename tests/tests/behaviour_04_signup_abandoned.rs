//! Behaviour 4: sign-up abandoned at step 3 gets a reminder an hour later, unless completed.

use beckon_journey::Sim;
use beckon_journey::sim::track;
use beckon_tests::{at, behaviour_engine};
use serde_json::json;

#[test]
fn reminder_an_hour_after_step_three_unless_completed() {
    let engine = behaviour_engine("04-signup-abandoned");
    let mut sim = Sim::new(&engine, "default");
    sim.event(track(
        "stuck",
        "Signup Step Completed",
        at(0),
        json!({"step": 3}),
    ));
    sim.event(track(
        "done",
        "Signup Step Completed",
        at(0),
        json!({"step": 3}),
    ));
    sim.event(track("done", "Signup Completed", at(30), json!({})));
    sim.event(track(
        "early",
        "Signup Step Completed",
        at(0),
        json!({"step": 2}),
    ));
    sim.advance(at(24 * 60));

    let stuck: Vec<_> = sim
        .sent_to("stuck")
        .iter()
        .map(|m| (m.channel.as_str(), m.at))
        .collect();
    assert_eq!(stuck, [("email", at(60))]);
    assert!(sim.sent_to("done").is_empty());
    assert!(sim.sent_to("early").is_empty(), "step 2 is not step 3");
}
