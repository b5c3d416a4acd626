//! Behaviour 7: copy built from an earlier event's properties.

use beckon_journey::Sim;
use beckon_journey::sim::track;
use beckon_tests::{at, behaviour_engine};
use serde_json::json;

const DAY: i64 = 24 * 60;

#[test]
fn the_last_article_read_shapes_the_email() {
    let engine = behaviour_engine("07-personalized-copy");
    let mut sim = Sim::new(&engine, "default");
    sim.event(track(
        "reader",
        "Article Viewed",
        at(0),
        json!({"topic": "retirement"}),
    ));
    sim.event(track(
        "reader",
        "Article Viewed",
        at(60),
        json!({"topic": "budgeting tools"}),
    ));
    sim.event(track("reader", "Trial Started", at(6 * DAY), json!({})));
    sim.event(track("new", "Trial Started", at(6 * DAY), json!({})));

    let body = &sim.sent_to("reader")[0].body;
    assert_eq!(
        body,
        "Since you checked out budgeting tools last week, start with our guide on it."
    );
    assert_eq!(
        sim.sent_to("new")[0].body,
        "Start with our getting-started guide."
    );
}
