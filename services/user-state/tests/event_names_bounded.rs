//! A client that makes up a new event name for every event does not grow a user's record
//! without end: past the limit, the least recently seen names are forgotten, the names the
//! loaded journeys and segments refer to stay, and the record written to Redis stays small.

mod support;

use std::sync::Arc;

use beckon_core::{Clock, Event, EventKind, Props, StateLimits, Ts, VirtualClock};
use beckon_gateway::{Gateway, RecordingChannel};
use beckon_journey::Engine;
use beckon_scheduler::MemoryTimers;
use beckon_telemetry::{MetricsEndpoint, TelemetryConfig};
use beckon_testkit::RedisServer;
use beckon_user_state::redis::RedisStateStore;
use beckon_user_state::{Outlet, PartitionWorker, StateStore, Timers};

const LIMIT: usize = 100;
const MADE_UP: usize = 3_000;
const START: i64 = 1_780_000_000_000;

/// Every way a definition names an event: entry, goal, exit, wait, and the conditions that
/// read per-name statistics (a count with no window, first and last times, inactivity).
const SPECS: &str = "\
id: onboarding
version: 1
workspace: w
entry: {event: Signed Up}
goal: Order Completed
exit_on: [Account Deleted]
steps:
  - id: wait-for-cart
    wait_for: {event: Cart Viewed, timeout: 30d, on_timeout: exit}
  - id: check
    branch:
      if: {first_done: {event: Tutorial Finished}}
      then: exit
      else: exit
---
kind: segment
id: curious
version: 1
workspace: w
condition:
  all:
    - did: {event: Pricing Viewed, at_least: 2}
    - last_done: {event: Docs Read}
    - not: {inactive: {for: 7d, event: App Opened}}
";

const REFERRED: [&str; 8] = [
    "Signed Up",
    "Order Completed",
    "Account Deleted",
    "Cart Viewed",
    "Tutorial Finished",
    "Pricing Viewed",
    "Docs Read",
    "App Opened",
];

fn event(id: usize, name: &str, at: i64) -> Event {
    Event {
        kind: EventKind::Track,
        message_id: format!("m{id}"),
        user: "flood".to_string(),
        anonymous_id: None,
        name: name.to_string(),
        properties: Props::new(),
        traits: Props::new(),
        timestamp: Ts(at),
        previous_id: None,
    }
}

fn evicted_total(endpoint: &MetricsEndpoint) -> f64 {
    support::scraped(endpoint, "beckon_state_event_names_evicted_total", &[]).unwrap_or(0.0)
}

#[actix_rt::test]
async fn made_up_names_are_forgotten_and_referred_names_stay() {
    let server = RedisServer::start_own(Default::default()).expect("redis-server");
    let client = redis::Client::open(server.url()).expect("client");
    let con = client.get_connection_manager().await.expect("connect");
    let store = Arc::new(RedisStateStore::new(con, server.namespace(), 1));

    let defs = beckon_journey::load_definitions_str("specs.yaml", SPECS).expect("specs");
    let limits = StateLimits {
        event_names: LIMIT,
        ..StateLimits::default()
    };
    let engine = Arc::new(Engine::from_definitions(defs).with_state_limits(limits));
    let clock = VirtualClock::new(Ts(START));
    let telemetry = beckon_telemetry::build(
        TelemetryConfig::new("user-state"),
        Arc::new(clock.clone()) as Arc<dyn Clock>,
    )
    .expect("telemetry");
    let outlet: Arc<dyn Outlet> =
        Arc::new(Gateway::new().with("push", Arc::new(RecordingChannel::new())));
    let mut worker = PartitionWorker::new(
        0,
        engine.clone(),
        store.clone() as Arc<dyn StateStore>,
        Timers::Local(Box::new(MemoryTimers::new())),
        outlet,
    )
    .with_metrics(telemetry.metrics());

    // The referred names come first, so they are the least recently seen of all.
    let mut n = 0;
    for name in REFERRED {
        worker
            .on_event("w", event(n, name, START + n as i64))
            .await
            .expect("apply");
        n += 1;
    }
    // Then a flood of names nobody refers to, written to Redis every 500 events as a live
    // partition writes after each batch.
    for i in 0..MADE_UP {
        let name = format!("Clicked button {i}");
        worker
            .on_event("w", event(n, &name, START + n as i64))
            .await
            .expect("apply");
        n += 1;
        if i % 500 == 499 {
            worker.flush().await.expect("write");
        }
    }
    worker.flush().await.expect("write");

    let stored = store.load("w", "flood").await.expect("load").expect("user");
    assert_eq!(stored.events.len(), LIMIT);
    for name in REFERRED {
        assert!(stored.events.contains_key(name), "{name} was forgotten");
    }
    // What is left of the made-up names are the most recent ones.
    let kept_made_up = LIMIT - REFERRED.len();
    for i in MADE_UP - kept_made_up..MADE_UP {
        let name = format!("Clicked button {i}");
        assert!(stored.events.contains_key(&name), "{name} was forgotten");
    }
    assert_eq!(stored.total_events, (REFERRED.len() + MADE_UP) as u64);
    let evicted = (REFERRED.len() + MADE_UP - LIMIT) as u64;
    assert_eq!(stored.event_names_evicted, evicted);
    assert_eq!(evicted_total(&telemetry.metrics_endpoint()), evicted as f64);

    // An explanation of the user says so, with the count and the limit.
    let notes = engine.notes(&stored);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].starts_with(&format!("{evicted} event names were forgotten")));
    assert!(notes[0].contains(&format!("limit of {LIMIT} distinct names")));

    // The record holds about a hundred names, not three thousand: well under 32 KiB, where
    // the unbounded record was over 200 KiB for this flood.
    let bytes = serde_json::to_vec(&stored).expect("json").len();
    assert!(bytes < 32 * 1024, "record of {bytes} bytes");

    // The segment still reads the statistics it needs: two pricing views are counted.
    worker
        .on_event("w", event(n, "Pricing Viewed", START + n as i64))
        .await
        .expect("apply");
    worker.flush().await.expect("write");
    let stored = store.load("w", "flood").await.expect("load").expect("user");
    assert_eq!(stored.events["Pricing Viewed"].count, 2);
    assert!(stored.segments.get("curious").is_some_and(|m| m.member));
}
