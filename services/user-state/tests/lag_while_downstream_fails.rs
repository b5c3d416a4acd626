//! A partition that keeps failing its batch because the gateway cannot be reached shows its
//! lag growing: the entries it cannot apply, and those appended behind them, stay in the log.

mod support;

use std::sync::Arc;

use beckon_core::{Clock, Duration, Event, EventKind, Props, Ts, VirtualClock};
use beckon_ingest::log::{EventLog, LogConfig, RedisLog};
use beckon_journey::{Engine, load_definitions_str};
use beckon_scheduler::MemoryTimers;
use beckon_telemetry::{MetricsEndpoint, TelemetryConfig};
use beckon_testkit::RedisServer;
use beckon_user_state::live::{self, LoopConfig};
use beckon_user_state::redis::RedisStateStore;
use beckon_user_state::remote::RemoteGateway;
use beckon_user_state::{Outlet, PartitionWorker, StateStore, Timers};
use tokio::sync::watch;

const BLOCK_MS: u64 = 20;

/// Every added product is answered by an email at once, so every batch calls the gateway.
const DEFS: &str = "
id: added
version: 1
workspace: w
entry:
  event: Product Added
steps:
  - id: note
    message:
      channel: email
      subject: Added
      body: It is in your cart.
";

fn event(user: &str, id: &str) -> Event {
    Event {
        kind: EventKind::Track,
        message_id: id.to_string(),
        user: user.to_string(),
        anonymous_id: None,
        name: "Product Added".to_string(),
        properties: Props::new(),
        traits: Props::new(),
        timestamp: Ts(1_780_000_000_000),
        previous_id: None,
    }
}

/// A channel to a local port nothing listens on: every call fails to connect.
fn nobody_listening() -> tonic::transport::Channel {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy()
}

/// Partition 0's lag as Prometheus would scrape it; `None` until the gauge was set.
fn lag(endpoint: &MetricsEndpoint) -> Option<f64> {
    support::scraped(endpoint, "beckon_log_lag", &[("partition", "0")])
}

/// Waits, a read's block time at a time, until the lag is `want`; returns the last seen.
async fn until(endpoint: &MetricsEndpoint, want: f64) -> Option<f64> {
    let mut seen = lag(endpoint);
    for _ in 0..1_000 {
        if seen == Some(want) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(BLOCK_MS)).await;
        seen = lag(endpoint);
    }
    seen
}

#[actix_rt::test]
async fn the_lag_grows_while_the_gateway_is_down() {
    let server = RedisServer::start().expect("redis");
    let client = redis::Client::open(server.url()).expect("client");
    let con = client.get_connection_manager().await.expect("connect");
    let log: Arc<dyn EventLog> = Arc::new(RedisLog::new(
        con.clone(),
        LogConfig {
            namespace: server.namespace().to_string(),
            partitions: 1,
            ..LogConfig::default()
        },
    ));
    let store = Arc::new(RedisStateStore::new(con, server.namespace(), 1));
    let wall = VirtualClock::new(Ts(1_780_000_000_000));
    let telemetry = beckon_telemetry::build(
        TelemetryConfig::new("user-state"),
        Arc::new(wall.clone()) as Arc<dyn Clock>,
    )
    .expect("telemetry");
    let metrics = telemetry.metrics();
    let endpoint = telemetry.metrics_endpoint();

    for i in 0..5 {
        let e = event(&format!("u{i}"), &format!("m{i}"));
        log.append("w", &e, None).await.expect("append");
    }
    let defs = load_definitions_str("defs.yaml", DEFS).expect("definitions");
    let outlet: Arc<dyn Outlet> = Arc::new(RemoteGateway::new(nobody_listening()));
    let worker = PartitionWorker::new(
        0,
        Arc::new(Engine::from_definitions(defs)),
        store as Arc<dyn StateStore>,
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
        hibernate: Duration::hours(1),
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
    let run = actix::spawn(live::run_partition(worker, log.clone(), config, stopped));

    // The five entries are read, fail on the gateway, and stay: the gauge says so.
    assert_eq!(until(&endpoint, 5.0).await, Some(5.0));

    // More arrive behind the stuck batch; the gauge follows them up.
    for i in 5..12 {
        let e = event(&format!("u{i}"), &format!("m{i}"));
        log.append("w", &e, None).await.expect("append");
    }
    assert_eq!(until(&endpoint, 12.0).await, Some(12.0));

    stop.send(true).expect("stop");
    let report = run.await.expect("partition loop");
    assert_eq!(report.applied, 0);
    assert!(report.failures >= 2, "{report:?}");
}
