//! Live Activity steps: an order's status events start, update and end an activity, each a
//! `live_activity` message whose body is what the APNs adapter sends; bad steps are lint
//! errors with their line and field.

use beckon_core::Ts;
use beckon_journey::sim::track;
use beckon_journey::{Engine, Sim, load_definitions_str};
use serde_json::{Value, json};

/// The order-tracking example journey.
const ORDER: &str = include_str!("../../../examples/live-activities/order-tracking.yaml");

fn engine(yaml: &str) -> Engine {
    match load_definitions_str("order.yaml", yaml) {
        Ok(defs) => Engine::from_definitions(defs),
        Err(e) => panic!("{}", e[0]),
    }
}

fn at(minute: i64) -> Ts {
    Ts(1_780_000_000_000 + minute * 60_000)
}

fn body(sim: &Sim<'_>, n: usize) -> Value {
    let sent = sim.sent_to("ada");
    let message = sent
        .get(n)
        .unwrap_or_else(|| panic!("message {n} of {sent:?}"));
    assert_eq!(message.channel, "live_activity");
    serde_json::from_str(&message.body).unwrap_or(Value::Null)
}

#[test]
fn order_status_events_drive_one_activity_from_start_to_end() {
    let engine = engine(ORDER);
    let mut sim = Sim::new(&engine, "default");
    let placed = json!({"order_id": "A-17", "eta": "12:30"});
    sim.event(track("ada", "Order Placed", at(0), placed));
    let start = body(&sim, 0);
    assert_eq!(start["event"], "start");
    assert_eq!(start["attributes-type"], "OrderAttributes");
    assert_eq!(start["attributes"], json!({"order_id": "A-17"}));
    assert_eq!(
        start["content-state"],
        json!({"status": "placed", "eta": "12:30"})
    );

    let cooking = json!({"order_id": "A-17", "status": "cooking", "eta": "12:35"});
    sim.event(track("ada", "Order Status Changed", at(5), cooking));
    let update = body(&sim, 1);
    assert_eq!(update["event"], "update");
    assert_eq!(
        update["content-state"],
        json!({"status": "cooking", "eta": "12:35"})
    );
    assert!(update.get("dismissal-date").is_none());

    let delivered = json!({"order_id": "A-17", "status": "delivered", "eta": "12:31"});
    sim.event(track("ada", "Order Status Changed", at(30), delivered));
    let end = body(&sim, 2);
    assert_eq!(end["event"], "end");
    assert_eq!(end["content-state"]["status"], "delivered");
    // Dismissed an hour after the delivery, in unix seconds.
    assert_eq!(end["dismissal-date"], json!(at(90).0 / 1_000));
    assert_eq!(sim.sent_to("ada").len(), 3);

    // Each push of the activity has its own idempotency key.
    let keys: std::collections::BTreeSet<_> = sim
        .sent_to("ada")
        .iter()
        .map(|m| m.idempotency_key.clone())
        .collect();
    assert_eq!(keys.len(), 3);
}

#[test]
fn bad_live_activity_steps_are_located() {
    let no_type = ORDER.replace("      attributes_type: OrderAttributes\n", "");
    let errs = load_definitions_str("order.yaml", &no_type)
        .err()
        .unwrap_or_default();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field, "steps[0].live_activity.attributes_type");
    assert!(errs[0].line > 1 && errs[0].column > 1, "{}", errs[0]);

    let bad_event = ORDER.replacen("event: start", "event: begin", 1);
    let errs = load_definitions_str("order.yaml", &bad_event)
        .err()
        .unwrap_or_default();
    let text = errs.first().map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("begin"), "{text}");
    let line = ORDER
        .lines()
        .position(|l| l.contains("event: start"))
        .map_or(0, |p| p + 1);
    assert_eq!(errs[0].line as usize, line, "{text}");

    let bad_template = ORDER.replace("status: placed", "status: \"{{ oops\"");
    let errs = load_definitions_str("order.yaml", &bad_template)
        .err()
        .unwrap_or_default();
    assert_eq!(errs[0].field, "steps[0].live_activity.content_state.status");
}
