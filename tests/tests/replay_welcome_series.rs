//! Welcome series: push at once, email a day later, in-app two days later; the first order
//! ends it, even in the middle of a delay.

use beckon_tests::{Events, at, replay_examples, sent};
use serde_json::json;

const DAY: i64 = 24 * 60;

#[test]
fn full_series_fires_at_the_right_virtual_times() {
    let events = Events::new().identify("newbie", at(0), json!({"first_name": "Ada"}));
    let out = replay_examples(&events);

    let series: Vec<_> = sent(&out, "newbie", "welcome")
        .iter()
        .map(|m| (m.channel.as_str(), m.at))
        .collect();
    assert_eq!(
        series,
        [("push", at(0)), ("email", at(DAY)), ("in_app", at(2 * DAY))]
    );
    let email = sent(&out, "newbie", "welcome")[1];
    assert_eq!(
        email.body,
        "<p>Hello Ada, here is how to find what you love.</p>"
    );
}

#[test]
fn an_order_mid_delay_stops_the_rest_of_the_series() {
    let events = Events::new()
        .track("buyer", "Product Viewed", at(0), json!({}))
        .track("buyer", "Order Completed", at(DAY / 2), json!({}));
    let out = replay_examples(&events);

    let channels: Vec<_> = sent(&out, "buyer", "welcome")
        .iter()
        .map(|m| m.channel.clone())
        .collect();
    assert_eq!(channels, ["push"]);
    assert!(
        out.messages
            .iter()
            .all(|m| !(m.journey == "welcome" && m.at > at(DAY / 2)))
    );
}

#[test]
fn an_order_in_the_second_delay_stops_the_in_app_message() {
    let events = Events::new().identify("mid", at(0), json!({})).track(
        "mid",
        "Order Completed",
        at(DAY + 60),
        json!({}),
    );
    let out = replay_examples(&events);

    let channels: Vec<_> = sent(&out, "mid", "welcome")
        .iter()
        .map(|m| m.channel.clone())
        .collect();
    assert_eq!(channels, ["push", "email"], "nothing after the first order");
    let welcome = out.report.journeys.iter().find(|j| j.id == "welcome");
    assert_eq!(welcome.map(|j| j.exited_on_goal), Some(1));
}

/// A reported unsubscribe from email stops the series' email and nothing else: applying
/// `Message Unsubscribed` sets `email_opt_out`, which the consent check reads at send time.
#[test]
fn an_unsubscribe_from_email_stops_the_welcome_email() {
    let events = Events::new()
        .identify("q", at(0), json!({"email": "q@example.com"}))
        .track(
            "q",
            "Message Unsubscribed",
            at(10),
            json!({"channel": "email", "journey": "welcome", "step": "welcome-push"}),
        );
    let out = replay_examples(&events);

    let series: Vec<_> = sent(&out, "q", "welcome")
        .iter()
        .map(|m| (m.channel.as_str(), m.at))
        .collect();
    assert_eq!(series, [("push", at(0)), ("in_app", at(2 * DAY))]);
}
