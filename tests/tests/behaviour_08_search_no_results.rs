//! Behaviour 8: a search with no results gets a helpful message listing popular items.

use beckon_journey::Sim;
use beckon_journey::sim::track;
use beckon_tests::{at, behaviour_engine};
use serde_json::json;

#[test]
fn empty_search_lists_popular_items_at_most_hourly() {
    let engine = behaviour_engine("08-search-no-results");
    let mut sim = Sim::new(&engine, "default");
    sim.event(track(
        "u",
        "Products Searched",
        at(0),
        json!({"query": "kayak", "results": 0}),
    ));
    sim.event(track(
        "u",
        "Products Searched",
        at(5),
        json!({"query": "canoe", "results": 0}),
    ));
    sim.event(track(
        "u",
        "Products Searched",
        at(10),
        json!({"query": "tent", "results": 12}),
    ));
    sim.event(track(
        "u",
        "Products Searched",
        at(61),
        json!({"query": "raft", "results": 0}),
    ));

    let sent = sim.sent_to("u");
    assert_eq!(
        sent.len(),
        2,
        "the second empty search is inside the cool-down"
    );
    assert_eq!(sent[0].title.as_deref(), Some("Nothing for \"kayak\" yet"));
    assert_eq!(
        sent[0].body,
        "Popular right now: Running shoes, Rain jackets, Water bottles."
    );
    assert_eq!(sent[1].at, at(61));
}
