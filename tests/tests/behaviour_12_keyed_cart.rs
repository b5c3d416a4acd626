//! Behaviour 12: two carts, one checked out: one reminder, for the other cart.

use beckon_core::DecisionKind;
use beckon_journey::Sim;
use beckon_journey::sim::track;
use beckon_tests::{at, behaviour_engine};
use serde_json::json;

#[test]
fn the_order_ends_only_its_own_cart() {
    let engine = behaviour_engine("12-keyed-cart");
    let mut sim = Sim::new(&engine, "default");
    sim.event(track(
        "u",
        "Product Added",
        at(0),
        json!({"cart_id": "A", "name": "Lamp"}),
    ));
    sim.event(track(
        "u",
        "Product Added",
        at(5),
        json!({"cart_id": "B", "name": "Rug"}),
    ));
    sim.event(track(
        "u",
        "Product Added",
        at(6),
        json!({"cart_id": "A", "name": "Bulb"}),
    ));
    sim.event(track(
        "u",
        "Order Completed",
        at(20),
        json!({"cart_id": "A"}),
    ));
    sim.advance(at(24 * 60));

    let sent = sim.sent_to("u");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].at, at(65));
    assert_eq!(sent[0].body, "Cart B still has Rug in it.");
    let refused = sim
        .decisions_of("u")
        .into_iter()
        .find(|d| d.kind == DecisionKind::NotEntered)
        .map(|d| d.reason.clone());
    assert_eq!(
        refused.as_deref(),
        Some("not entered: already in the journey for A")
    );
}
