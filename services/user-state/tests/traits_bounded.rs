//! A client that adds a new large trait with every identify does not grow a user's record
//! without end: once the traits reach their size limit, the changes that would take them past
//! it are dropped and counted, small traits still fit in what is left, an opt-out always
//! applies, and the record written to Redis stays near the limit.

mod support;

use std::sync::Arc;

use beckon_core::{Clock, Duration, Event, EventKind, MAX_TRAIT_BYTES, Props, Ts, VirtualClock};
use beckon_gateway::{Gateway, RecordingChannel};
use beckon_journey::Engine;
use beckon_scheduler::MemoryTimers;
use beckon_telemetry::{LogRateLimiter, MetricsEndpoint, TelemetryConfig};
use beckon_testkit::RedisServer;
use beckon_user_state::redis::RedisStateStore;
use beckon_user_state::{Outlet, PartitionWorker, StateStore, Timers};
use serde_json::json;

const IDENTIFIES: usize = 1_500;
const TRAIT_VALUE_BYTES: usize = 20_000;
const START: i64 = 1_780_000_000_000;

fn identify(id: usize, traits: serde_json::Value) -> Event {
    Event {
        kind: EventKind::Identify,
        message_id: format!("m{id}"),
        user: "hoarder".to_string(),
        anonymous_id: None,
        name: String::new(),
        properties: Props::new(),
        traits: traits.as_object().cloned().unwrap_or_default(),
        timestamp: Ts(START + id as i64),
        previous_id: None,
    }
}

fn dropped_total(endpoint: &MetricsEndpoint) -> f64 {
    support::scraped(endpoint, "beckon_state_traits_dropped_total", &[]).unwrap_or(0.0)
}

#[actix_rt::test]
async fn traits_past_the_limit_are_dropped_and_the_record_stays_small() {
    let server = RedisServer::start_own(Default::default()).expect("redis-server");
    let client = redis::Client::open(server.url()).expect("client");
    let con = client.get_connection_manager().await.expect("connect");
    let store = Arc::new(RedisStateStore::new(con, server.namespace(), 1));

    // The default limits, as `serve` has them unless configured.
    let engine = Arc::new(Engine::new(Vec::new()));
    let clock = VirtualClock::new(Ts(START));
    let shared_clock = Arc::new(clock.clone()) as Arc<dyn Clock>;
    let telemetry =
        beckon_telemetry::build(TelemetryConfig::new("user-state"), shared_clock.clone())
            .expect("telemetry");
    let outlet: Arc<dyn Outlet> =
        Arc::new(Gateway::new().with("push", Arc::new(RecordingChannel::new())));
    let warnings = LogRateLimiter::new(shared_clock, 3, Duration::from_millis(10_000));
    let mut worker = PartitionWorker::new(
        0,
        engine.clone(),
        store.clone() as Arc<dyn StateStore>,
        Timers::Local(Box::new(MemoryTimers::new())),
        outlet,
    )
    .with_metrics(telemetry.metrics())
    .with_warnings(Arc::new(warnings));

    // Each identify adds a new key holding 20 KB, well under the event size cap; written to
    // Redis every 500 events as a live partition writes after each batch.
    let value = "v".repeat(TRAIT_VALUE_BYTES);
    for i in 0..IDENTIFIES {
        let e = identify(i, json!({ format!("note_{i:04}"): value }));
        worker.on_event("w", e).await.expect("apply");
        if i % 500 == 499 {
            worker.flush().await.expect("write");
        }
    }

    // Then the traits that matter: an address and an opt-out, both small.
    let n = IDENTIFIES;
    let e = identify(n, json!({"email": "ada@example.com", "unsubscribed": true}));
    worker.on_event("w", e).await.expect("apply");
    worker.flush().await.expect("write");

    let stored = store
        .load("w", "hoarder")
        .await
        .expect("load")
        .expect("user");
    let each = "note_0000".len() + TRAIT_VALUE_BYTES + 2;
    let fit = MAX_TRAIT_BYTES / each;
    let kept: Vec<String> = (0..fit).map(|i| format!("note_{i:04}")).collect();
    let notes: Vec<&String> = stored
        .traits
        .keys()
        .filter(|k| k.starts_with("note_"))
        .collect();
    assert_eq!(
        notes,
        kept.iter().collect::<Vec<_>>(),
        "the first that fit stay"
    );
    assert_eq!(stored.trait_value("email"), Some(&json!("ada@example.com")));
    assert_eq!(stored.trait_value("unsubscribed"), Some(&json!(true)));
    assert!(stored.traits_bytes() <= MAX_TRAIT_BYTES);

    let dropped = (IDENTIFIES - fit) as u64;
    assert_eq!(stored.traits_dropped, dropped);
    assert_eq!(dropped_total(&telemetry.metrics_endpoint()), dropped as f64);
    assert_eq!(stored.total_events, (IDENTIFIES + 1) as u64);

    // An explanation of the user says so, with the count and the limit.
    let explained = engine.notes(&stored);
    assert_eq!(explained.len(), 1, "{explained:?}");
    assert!(explained[0].starts_with(&format!("{dropped} trait changes were dropped")));
    assert!(explained[0].contains(&format!("limit of {MAX_TRAIT_BYTES} bytes")));

    // The record as Redis holds it stays near the limit, where unbounded it was about 30 MB.
    let bytes = serde_json::to_vec(&stored).expect("json").len();
    assert!(bytes < 2 * MAX_TRAIT_BYTES, "record of {bytes} bytes");
}
