//! Behaviour 3: seven days without Application Opened after Onboarding Completed earn a
//! push; an open on day 6 means none on day 7, and the seven days count from that open.

use beckon_journey::Sim;
use beckon_journey::sim::track;
use beckon_tests::{at, behaviour_engine};
use serde_json::json;

const DAY: i64 = 24 * 60;

#[test]
fn seven_quiet_days_earn_a_push_exactly_then() {
    let engine = behaviour_engine("03-inactive-after-onboarding");
    let mut sim = Sim::new(&engine, "default");
    sim.event(track("u", "Onboarding Completed", at(0), json!({})));
    sim.advance(at(30 * DAY));
    let times: Vec<_> = sim.sent_to("u").iter().map(|m| m.at).collect();
    assert_eq!(times, [at(7 * DAY)]);
}

#[test]
fn an_open_on_day_six_moves_the_push_to_seven_days_after_it() {
    let engine = behaviour_engine("03-inactive-after-onboarding");
    let mut sim = Sim::new(&engine, "default");
    sim.event(track("u", "Onboarding Completed", at(0), json!({})));
    sim.event(track("u", "Application Opened", at(6 * DAY), json!({})));
    sim.advance(at(7 * DAY + 1));
    assert!(sim.sent_to("u").is_empty(), "nothing on day 7");
    sim.advance(at(30 * DAY));
    let times: Vec<_> = sim.sent_to("u").iter().map(|m| m.at).collect();
    assert_eq!(times, [at(13 * DAY)]);
}
