//! Shared helpers of the Redis state tests.

#![allow(dead_code)]

use beckon_core::state::Tracking;
use beckon_core::{Event, EventKind, Props, Ts, UserState};
use beckon_proto::v1::user_state_client::UserStateClient;
use beckon_proto::v1::user_state_server::UserStateServer;
use beckon_testkit::RedisServer;
use beckon_user_state::grpc::UserStateService;
use beckon_user_state::redis::RedisStateStore;
use redis::aio::ConnectionManager;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};

pub const PARTITIONS: u32 = 8;

/// Serves `service` on a loopback port of its own, and a client connected to it.
pub async fn serve(service: UserStateService) -> UserStateClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let server = Server::builder()
        .add_service(UserStateServer::new(service))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    UserStateClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

pub async fn store(server: &RedisServer) -> RedisStateStore<ConnectionManager> {
    let client = redis::Client::open(server.url()).expect("client");
    let con = client.get_connection_manager().await.expect("connect");
    RedisStateStore::new(con, server.namespace(), PARTITIONS)
}

/// A user who did a few things, so the record has traits, counters and message ids.
pub fn busy_user(user: &str, events: usize) -> UserState {
    let mut state = UserState::new("w", user);
    let tracking = Tracking::default();
    for i in 0..events {
        let mut props = Props::new();
        props.insert("sku".into(), serde_json::json!(format!("sku-{i}")));
        let mut traits = Props::new();
        traits.insert("plan".into(), serde_json::json!("pro"));
        let event = Event {
            kind: if i % 5 == 0 {
                EventKind::Identify
            } else {
                EventKind::Track
            },
            message_id: format!("{user}-m{i}"),
            user: user.to_string(),
            anonymous_id: None,
            name: format!("Event {}", i % 7),
            properties: props,
            traits,
            timestamp: Ts(1_700_000_000_000 + i as i64 * 1_000),
            previous_id: None,
        };
        state.observe(&event, &tracking);
    }
    state
}

/// Every key of the server, for checks that nothing of a user is left.
pub fn all_keys(server: &RedisServer) -> Vec<String> {
    let mut con = server.connection().expect("connection");
    let keys: Vec<String> = redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(format!("{}:*", server.namespace()))
        .arg("COUNT")
        .arg(1000)
        .clone()
        .iter(&mut con)
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("scan");
    keys
}

/// An `App Opened` event at `at`.
pub fn app_opened(user: &str, message_id: &str, at: i64) -> Event {
    Event {
        name: "App Opened".into(),
        timestamp: Ts(at),
        ..track(user, message_id)
    }
}

/// A partition loop's settings for tests: reads of up to 16 entries blocking `block_ms`,
/// users hibernating after an hour and leaving after two, time from `clock`.
pub fn loop_config(
    clock: std::sync::Arc<dyn beckon_core::Clock>,
    block_ms: u64,
) -> beckon_user_state::live::LoopConfig {
    beckon_user_state::live::LoopConfig {
        workspace: "w".into(),
        consumer: "test".into(),
        batch: 16,
        block_ms,
        retry_ms: 10,
        hibernate: beckon_core::Duration::hours(1),
        idle: beckon_core::Duration::hours(2),
        clock: clock.clone(),
        metrics: beckon_telemetry::Metrics::global(),
        warnings: std::sync::Arc::new(beckon_telemetry::LogRateLimiter::new(
            clock,
            3,
            beckon_core::Duration(10_000),
        )),
        lease: None,
    }
}

pub fn track(user: &str, message_id: &str) -> Event {
    Event {
        kind: EventKind::Track,
        message_id: message_id.to_string(),
        user: user.to_string(),
        anonymous_id: None,
        name: "Product Added".into(),
        properties: Props::new(),
        traits: Props::new(),
        timestamp: Ts(1_700_000_000_000),
        previous_id: None,
    }
}

/// The value of the first sample of `metric` that Prometheus would scrape from `endpoint`,
/// among those carrying every label of `labels`; `None` while there is none.
pub fn scraped(
    endpoint: &beckon_telemetry::MetricsEndpoint,
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    use prometheus_parse::{Scrape, Value};

    let text = endpoint.render().expect("render");
    let samples = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text format")
        .samples;
    samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .find_map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// Calls of `command` the server has counted since its statistics were reset.
pub fn calls(server: &RedisServer, command: &str) -> u64 {
    let mut con = server.connection().expect("con");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut con)
        .expect("info");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("count"))
}
