//! A partition that goes quiet still lets its idle users hibernate and then leave memory: with
//! no entries, partition time stands still, so idleness goes on with the wall time the
//! partition has spent without entries. The hibernated-users gauge follows.

use std::sync::Arc;

use beckon_core::{Clock, Duration, Event, EventKind, Props, Ts, VirtualClock};
use beckon_gateway::{Gateway, RecordingChannel};
use beckon_ingest::log::{Connect, EventLog, LogConfig, RedisLog};
use beckon_journey::Engine;
use beckon_scheduler::MemoryTimers;
use beckon_telemetry::{MetricsEndpoint, TelemetryConfig};
use beckon_testkit::RedisServer;
use beckon_user_state::live::{self, LoopConfig};
use beckon_user_state::redis::RedisStateStore;
use beckon_user_state::{Outlet, PartitionWorker, StateStore, Timers};
use prometheus_parse::{Scrape, Value};
use redis::aio::ConnectionManager;
use tokio::sync::watch;

const MINUTE: i64 = 60_000;
const BLOCK_MS: u64 = 20;

fn event(user: &str, id: &str, at: i64) -> Event {
    Event {
        kind: EventKind::Track,
        message_id: id.to_string(),
        user: user.to_string(),
        anonymous_id: None,
        name: "App Opened".to_string(),
        properties: Props::new(),
        traits: Props::new(),
        timestamp: Ts(at),
        previous_id: None,
    }
}

/// Partition 0's hibernated users and the live actors, as Prometheus would scrape them; `None`
/// until the partition has set its gauge.
fn scrape(endpoint: &MetricsEndpoint) -> (Option<f64>, f64) {
    let text = endpoint.render().expect("render");
    let samples = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text format")
        .samples;
    let number = |v: &Value| match v {
        Value::Gauge(v) | Value::Untyped(v) | Value::Counter(v) => Some(*v),
        _ => None,
    };
    let hibernated = samples
        .iter()
        .filter(|s| s.metric == "beckon_users_hibernated")
        .filter(|s| s.labels.get("partition") == Some("0"))
        .find_map(|s| number(&s.value));
    let live = samples
        .iter()
        .find(|s| s.metric == "beckon_actors_live")
        .and_then(|s| number(&s.value))
        .unwrap_or(0.0);
    (hibernated, live)
}

/// Waits, a read's block time at a time, until the scrape is `want`; returns the last one.
async fn until(endpoint: &MetricsEndpoint, want: (Option<f64>, f64)) -> (Option<f64>, f64) {
    let mut seen = scrape(endpoint);
    for _ in 0..500 {
        if seen == want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(BLOCK_MS)).await;
        seen = scrape(endpoint);
    }
    seen
}

#[actix_rt::test]
async fn a_quiet_partition_hibernates_then_evicts_its_idle_users() {
    let server = RedisServer::start().expect("redis");
    let client = redis::Client::open(server.url()).expect("client");
    let con = client.get_connection_manager().await.expect("connect");
    let readers = client.clone();
    let connect: Connect<ConnectionManager> = Arc::new(move || {
        let client = readers.clone();
        Box::pin(async move { client.get_connection_manager().await })
    });
    let log: Arc<dyn EventLog> = Arc::new(
        RedisLog::new(
            con.clone(),
            LogConfig {
                namespace: server.namespace().to_string(),
                partitions: 1,
                ..LogConfig::default()
            },
        )
        .with_readers(connect),
    );
    let store = Arc::new(RedisStateStore::new(con, server.namespace(), 1));
    let wall = VirtualClock::new(Ts(1_780_000_000_000));
    let telemetry = beckon_telemetry::build(
        TelemetryConfig::new("user-state"),
        Arc::new(wall.clone()) as Arc<dyn Clock>,
    )
    .expect("telemetry");
    let metrics = telemetry.metrics();
    let endpoint = telemetry.metrics_endpoint();

    // Ada's event is 8 minutes older than Bob's, and both arrive in one batch.
    let start = 1_779_990_000_000;
    for e in [
        event("ada", "a1", start),
        event("bob", "b1", start + 8 * MINUTE),
    ] {
        log.append("w", &e, None).await.expect("append");
    }
    let outlet: Arc<dyn Outlet> =
        Arc::new(Gateway::new().with("push", Arc::new(RecordingChannel::new())));
    let worker = PartitionWorker::new(
        0,
        Arc::new(Engine::new(Vec::new())),
        store.clone() as Arc<dyn StateStore>,
        Timers::Local(Box::new(MemoryTimers::new())),
        outlet,
    )
    .with_metrics(metrics.clone());
    let config = LoopConfig {
        workspace: "w".into(),
        consumer: "test".into(),
        batch: 16,
        block_ms: BLOCK_MS,
        retry_ms: 10,
        hibernate: Duration(10 * MINUTE),
        idle: Duration::hours(1),
        clock: Arc::new(wall.clone()),
        metrics,
        warnings: Arc::new(beckon_telemetry::LogRateLimiter::new(
            Arc::new(wall.clone()),
            3,
            Duration(10_000),
        )),
        lease: None,
    };
    let (stop, stopped) = watch::channel(false);
    let run = actix::spawn(live::run_partition(worker, log, config, stopped));

    // After the batch neither user has been idle for 10 minutes of partition time.
    assert_eq!(until(&endpoint, (Some(0.0), 2.0)).await, (Some(0.0), 2.0));

    // Six quiet minutes later Ada has idled 14 minutes and hibernates; Bob, at 6, stays.
    wall.advance_to(Ts(wall.now().0 + 6 * MINUTE));
    assert_eq!(
        until(&endpoint, (Some(1.0), 1.0)).await,
        (Some(1.0), 1.0),
        "hibernated on partition 0, live actors"
    );

    // An hour on, both have idled past the eviction period and leave memory, written.
    wall.advance_to(Ts(wall.now().0 + 60 * MINUTE));
    assert_eq!(
        until(&endpoint, (Some(0.0), 0.0)).await,
        (Some(0.0), 0.0),
        "hibernated on partition 0, live actors"
    );
    for user in ["ada", "bob"] {
        let stored = store.load("w", user).await.expect("load");
        assert!(stored.is_some_and(|s| s.events["App Opened"].count == 1));
    }

    let _ = stop.send(true);
    let report = run.await.expect("loop");
    assert_eq!((report.applied, report.batches), (2, 1));
}
