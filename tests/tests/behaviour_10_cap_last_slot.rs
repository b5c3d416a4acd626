//! Behaviour 10: two journeys due in the same second with one push left under the cap:
//! exactly one push goes out; the other is deferred, and the explanation says why.

use beckon_core::DecisionKind;
use beckon_journey::Sim;
use beckon_journey::sim::{identify, track};
use beckon_tests::{at, behaviour_engine};
use serde_json::json;

#[test]
fn only_one_journey_takes_the_last_slot() {
    let engine = behaviour_engine("10-cap-last-slot");
    let mut sim = Sim::new(&engine, "default");
    sim.event(identify("u", at(0), json!({"timezone": "Europe/Berlin"})));
    sim.event(track("u", "Order Shipped", at(0), json!({})));
    sim.event(track("u", "Cart Viewed", at(10), json!({})));
    sim.advance(at(70));

    let pushes: Vec<_> = sim
        .sent_to("u")
        .iter()
        .map(|m| (m.journey.as_str(), m.at))
        .collect();
    assert_eq!(
        pushes,
        [("order-update", at(0)), ("cart-tip", at(70))],
        "one push at 70"
    );

    let deferred: Vec<_> = sim
        .decisions_of("u")
        .into_iter()
        .filter(|d| d.kind == DecisionKind::Deferred)
        .collect();
    assert_eq!(deferred.len(), 1);
    assert_eq!(deferred[0].journey, "shipping-promo");
    assert!(
        deferred[0]
            .reason
            .starts_with("deferred: capped at 2 of 2 pushes in 1d; next try "),
        "{}",
        deferred[0].reason
    );

    // The slot frees 24 hours after the first push; the deferred promo goes out then.
    sim.advance(at(3 * 24 * 60));
    let late: Vec<_> = sim
        .sent_to("u")
        .iter()
        .map(|m| (m.journey.as_str(), m.at))
        .collect();
    assert_eq!(late.last(), Some(&("shipping-promo", at(24 * 60))));

    let explained = beckon::explain::render(
        &sim.decisions_of("u")
            .into_iter()
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert!(
        explained.contains("capped at 2 of 2 pushes in 1d"),
        "{explained}"
    );
}
