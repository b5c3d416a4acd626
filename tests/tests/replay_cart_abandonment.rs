//! Cart abandonment: an order within the hour cancels the reminder; no order means a push
//! exactly one hour after the add.

use beckon_tests::{Events, at, replay_examples, sent};
use serde_json::json;

#[test]
fn order_within_the_hour_cancels_the_cart_push() {
    let events = Events::new()
        .track(
            "buyer",
            "Product Added",
            at(0),
            json!({"name": "Red shoes"}),
        )
        .track(
            "buyer",
            "Order Completed",
            at(10),
            json!({"order_id": "o1"}),
        );
    let out = replay_examples(&events);

    assert!(sent(&out, "buyer", "cart-abandonment").is_empty());
    let cart = out
        .report
        .journeys
        .iter()
        .find(|j| j.id == "cart-abandonment");
    assert_eq!(cart.map(|j| (j.entered, j.exited_on_goal)), Some((1, 1)));
}

#[test]
fn no_order_means_a_push_exactly_one_hour_after_the_add() {
    let events = Events::new()
        .track(
            "browser",
            "Product Viewed",
            at(0),
            json!({"name": "Red shoes"}),
        )
        .track(
            "browser",
            "Product Added",
            at(3),
            json!({"name": "Red shoes"}),
        )
        .track(
            "browser",
            "Product Viewed",
            at(30),
            json!({"name": "Blue hat"}),
        );
    let out = replay_examples(&events);

    let pushes = sent(&out, "browser", "cart-abandonment");
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].at, at(63));
    assert_eq!(pushes[0].channel, "push");
    assert_eq!(pushes[0].body, "You left Red shoes in your cart");
}

#[test]
fn an_order_after_the_reminder_counts_no_second_push() {
    let events = Events::new()
        .track(
            "late",
            "Product Added",
            at(0),
            json!({"product_id": "sku-9"}),
        )
        .track("late", "Order Completed", at(90), json!({}));
    let out = replay_examples(&events);

    let pushes = sent(&out, "late", "cart-abandonment");
    assert_eq!(pushes.len(), 1, "the reminder went out before the order");
    assert_eq!(
        pushes[0].body, "You left sku-9 in your cart",
        "falls back to the product id"
    );
}
