//! A journey's record keeps its latest goal or exit event and which instances it came after,
//! so a message still waiting for its provider can be found moot however long the user's
//! decision log has grown since: after a goal or an exit event, whether the instance was
//! running then or had already completed, never after plain completion, and never for an
//! instance of another key that went on running.

use beckon_core::{Effect, Trigger, Ts, UserState};
use beckon_journey::sim::track;
use beckon_journey::{Engine, load_definitions_str};
use serde_json::json;

const CART: &str = "
id: cart
version: 1
workspace: default
entry:
  event: Product Added
  key: cart_id
  reentry: after_exit
goal: Order Completed
exit_on: [Cart Emptied]
steps:
  - id: remind
    message:
      channel: push
      body: \"Cart {{ entry.cart_id }}\"
  - id: hold
    wait_for:
      event: Never Happens
      timeout: 1h
      on_event: exit
      on_timeout: exit
";

const NOTIFY: &str = "
id: notify
version: 1
workspace: default
entry:
  event: Hook Me
  reentry: after_exit
goal: Stop Hook
exit_on: [Mute Hook]
steps:
  - id: notify
    message:
      channel: webhook
      body: hello
";

fn engine(yaml: &str) -> Engine {
    match load_definitions_str("test.yaml", yaml) {
        Ok(defs) => Engine::from_definitions(defs),
        Err(e) => panic!("{}", e[0]),
    }
}

fn at(s: i64) -> Ts {
    Ts(1_780_000_000_000 + s * 1_000)
}

/// Applies one event of user `u`, `s` seconds in.
fn apply(engine: &Engine, state: &mut UserState, name: &str, s: i64, props: serde_json::Value) {
    engine.apply(state, &Trigger::Event(track("u", name, at(s), props)));
}

/// Applies one event that sends exactly one message, and returns its instance.
fn sent_instance(engine: &Engine, state: &mut UserState, name: &str, s: i64) -> u64 {
    let effects = engine.apply(state, &Trigger::Event(track("u", name, at(s), json!({}))));
    let instances: Vec<u64> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(m) => m.instance,
            _ => None,
        })
        .collect();
    assert_eq!(instances.len(), 1, "{effects:?}");
    instances[0]
}

fn covers(state: &UserState, journey: &str, instance: u64) -> bool {
    state
        .history
        .get(journey)
        .and_then(|h| h.goal_or_exit.as_ref())
        .is_some_and(|mark| mark.covers(instance))
}

#[test]
fn a_goal_after_the_last_step_completed_still_makes_its_message_moot() {
    let engine = engine(NOTIFY);
    let mut state = UserState::new("default", "u");

    let first = sent_instance(&engine, &mut state, "Hook Me", 0);
    assert!(state.journeys.is_empty(), "the message was the last step");
    assert!(
        !covers(&state, "notify", first),
        "plain completion is no reason"
    );

    // A busy user: hundreds of decisions later the goal's record is still there.
    for n in 0..150 {
        let again = sent_instance(&engine, &mut state, "Hook Me", 1 + n);
        assert!(!covers(&state, "notify", again));
    }
    apply(&engine, &mut state, "Stop Hook", 200, json!({}));
    let mark = state.history["notify"].goal_or_exit.clone();
    let Some(mark) = mark else {
        panic!("the goal was not kept: {:?}", state.history)
    };
    assert_eq!(mark.reason, "goal Stop Hook happened");
    assert_eq!(mark.at, at(200));
    assert!(mark.covers(first));

    // An instance entered after the goal is not covered by it; an exit event later is.
    let later = sent_instance(&engine, &mut state, "Hook Me", 201);
    assert!(!covers(&state, "notify", later));
    apply(&engine, &mut state, "Mute Hook", 202, json!({}));
    assert!(covers(&state, "notify", later));
    assert_eq!(
        state.history["notify"]
            .goal_or_exit
            .as_ref()
            .map(|m| m.reason.as_str()),
        Some("exit event Mute Hook happened")
    );

    // The record survives the store's round trip, and an old record without it still reads.
    let text = serde_json::to_string(&state).expect("encode");
    let back: UserState = serde_json::from_str(&text).expect("decode");
    assert!(covers(&back, "notify", later));
    let old = text.replace("\"goal_or_exit\"", "\"unknown_field\"");
    let old: UserState = serde_json::from_str(&old).expect("decode an older record");
    assert!(!covers(&old, "notify", later));
}

#[test]
fn an_order_of_one_cart_spares_the_reminder_of_another_running_cart() {
    let engine = engine(CART);
    let mut state = UserState::new("default", "u");
    let added = |cart: &str| json!({"cart_id": cart});

    let a = engine.apply(
        &mut state,
        &Trigger::Event(track("u", "Product Added", at(0), added("A"))),
    );
    let b = engine.apply(
        &mut state,
        &Trigger::Event(track("u", "Product Added", at(1), added("B"))),
    );
    let instance = |effects: &[Effect]| {
        effects.iter().find_map(|e| match e {
            Effect::Send(m) => m.instance,
            _ => None,
        })
    };
    let (Some(a), Some(b)) = (instance(&a), instance(&b)) else {
        panic!("both carts were reminded: {a:?} {b:?}")
    };

    apply(&engine, &mut state, "Order Completed", 2, added("A"));
    assert!(covers(&state, "cart", a), "cart A's reminder is moot");
    assert!(!covers(&state, "cart", b), "cart B is still open");
    assert_eq!(state.journeys.len(), 1, "{:?}", state.journeys);

    apply(&engine, &mut state, "Cart Emptied", 3, added("B"));
    assert!(covers(&state, "cart", a));
    assert!(covers(&state, "cart", b));
}
