//! Behaviour 9: a daily 09:00 local send in America/New_York goes out once each day at 09:00
//! local, including both 2026 daylight-saving change days.

use beckon_journey::Sim;
use beckon_journey::sim::{identify, track};
use beckon_tests::{behaviour_engine, utc};
use serde_json::json;

fn sends(start: &str, until: &str) -> Vec<String> {
    let engine = behaviour_engine("09-daily-local-send");
    let mut sim = Sim::new(&engine, "default");
    let t0 = utc(start);
    sim.event(identify("u", t0, json!({"timezone": "America/New_York"})));
    sim.event(track(
        "u",
        "Digest Subscribed",
        t0.saturating_add(beckon_core::Duration(1)),
        json!({}),
    ));
    sim.advance(utc(until));
    sim.sent_to("u").iter().map(|m| m.at.to_string()).collect()
}

#[test]
fn spring_forward_keeps_nine_local() {
    // 2026-03-08: clocks jump from 02:00 EST to 03:00 EDT.
    let got = sends("2026-03-06T20:00:00Z", "2026-03-10T12:00:00Z");
    assert_eq!(
        got,
        [
            "2026-03-07T14:00:00.000Z", // 09:00 EST
            "2026-03-08T13:00:00.000Z", // 09:00 EDT, the change day
            "2026-03-09T13:00:00.000Z",
        ]
    );
}

#[test]
fn fall_back_keeps_nine_local() {
    // 2026-11-01: clocks fall back from 02:00 EDT to 01:00 EST.
    let got = sends("2026-10-30T20:00:00Z", "2026-11-03T12:00:00Z");
    assert_eq!(
        got,
        [
            "2026-10-31T13:00:00.000Z", // 09:00 EDT
            "2026-11-01T14:00:00.000Z", // 09:00 EST, the change day
            "2026-11-02T14:00:00.000Z",
        ]
    );
}

#[test]
fn subscribing_at_nine_sharp_waits_for_tomorrow() {
    let got = sends("2026-06-01T13:00:00Z", "2026-06-02T18:00:00Z");
    assert_eq!(got, ["2026-06-02T13:00:00.000Z"]);
}
