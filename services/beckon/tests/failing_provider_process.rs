//! `beckon serve gateway` as a real process, its webhook channel routed to a local receiver
//! that answers 500 or holds the request past the client's timeout. The failures show on
//! `/metrics` (deferred deliveries, an open circuit), and the process's JSON log lines name
//! neither the webhook's signing secret nor any message body. A receiver that never answers
//! at all, behind the default ten-second call timeout, is given up on for now within the
//! two seconds a user-state partition waits for each send.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use beckon_proto::convert::millis_to_timestamp;
use beckon_proto::v1::gateway_client::GatewayClient;
use beckon_proto::v1::{OutboundMessage, SendRequest};
use beckon_testkit::Hanging;
use beckon_user_state::Outlet as _;
use prometheus_parse::{Scrape, Value};
use support::{Served, http_get, wall_clock_ms};

const SECRET: &str = "whsec-never-in-a-log-8c1e77";
const BODY: &str = "Private: your test results from Dr. Okafor are ready";

/// Every other request waits past the gateway's timeout; the rest get a 500.
async fn failing(State(calls): State<Arc<AtomicUsize>>) -> StatusCode {
    if calls.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    StatusCode::INTERNAL_SERVER_ERROR
}

fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name} with {labels:?}: {:#?}", scrape.samples));
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
        Value::Summary(_) => f64::NAN,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_opens_the_circuit_and_leaks_nothing_into_the_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let calls = Arc::new(AtomicUsize::new(0));
    let router = axum::Router::new()
        .route("/hooks", axum::routing::post(failing))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("secret");
    let providers = dir.path().join("providers.yaml");
    let config = format!(
        "channels: {{ webhook: webhook }}\n\
         webhook:\n  url: http://{addr}/hooks\n  secret: {{ file: {} }}\n  timeout_ms: 300\n  \
         policy: {{ retry: {{ max_attempts: 2, base_delay: 10 }}, \
         breaker: {{ failure_threshold: 3, cool_down: 600000 }} }}\n",
        secret.display()
    );
    std::fs::write(&providers, config).expect("providers");

    let log = dir.path().join("gateway.log");
    let mut gateway = Served::start_with(
        "gateway",
        &[
            "--providers",
            providers.to_str().unwrap_or_default(),
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[("BECKON_LOG_FORMAT", "json"), ("BECKON_LOG", "debug")],
        Some(&log),
    );

    // Four sends: each of the first three gets one attempt (a 500, a timeout, a 500: the
    // third failure opens the circuit), the last is refused by the open circuit without a
    // call. Each is deferred to the gateway's retry queue rather than failed back to the
    // caller, and none waits for the adapter's retries: those are the queue's.
    let mut client = GatewayClient::connect(gateway.url())
        .await
        .expect("connect");
    for n in 0..4 {
        let message = OutboundMessage {
            idempotency_key: format!("k-{n}"),
            user_id: "u-ada".into(),
            channel: "webhook".into(),
            journey: "results".into(),
            step: "notify".into(),
            body: BODY.into(),
            at: Some(millis_to_timestamp(wall_clock_ms())),
            ..OutboundMessage::default()
        };
        let answer = client
            .send(SendRequest {
                workspace: "default".into(),
                message: Some(message),
            })
            .await;
        let answer = answer.expect("a deferred send is answered").into_inner();
        assert_eq!(answer.outcome, "deferred", "{answer:?}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "the open circuit spared the provider"
    );

    let response = http_get(gateway.admin.as_deref().expect("admin"), "/metrics");
    let (_, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("text format");
    let webhook = [("channel", "webhook"), ("provider", "webhook")];
    let deferred = [
        ("channel", "webhook"),
        ("provider", "webhook"),
        ("outcome", "deferred"),
    ];
    assert_eq!(value(&scrape, "beckon_deliveries_total", &deferred), 4.0);
    assert_eq!(
        value(&scrape, "beckon_circuit_state", &webhook),
        2.0,
        "open"
    );
    assert_eq!(
        value(&scrape, "beckon_provider_duration_milliseconds", &webhook),
        3.0
    );

    assert!(gateway.terminate().success());
    let text = std::fs::read_to_string(&log).expect("log file");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the gateway wrote no log");
    for line in &lines {
        let json: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(json.get("level").is_some(), "{line}");
        assert!(!line.contains(SECRET), "the secret was logged: {line}");
        assert!(
            !line.contains("Okafor"),
            "a message body was logged: {line}"
        );
    }
    assert!(lines.iter().any(|l| l.contains("circuit opened")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_never_answers_is_deferred_within_the_partitions_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hanging = Hanging::start().await;
    let addr = hanging.addr;
    let attempts = |key: &str| hanging.attempts(key);

    // The default timeout (ten seconds) and retry policy (four attempts).
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("secret");
    let providers = dir.path().join("providers.yaml");
    let config = format!(
        "channels: {{ webhook: webhook }}\n\
         webhook:\n  url: http://{addr}/hooks\n  secret: {{ file: {} }}\n",
        secret.display()
    );
    std::fs::write(&providers, config).expect("providers");
    let gateway = Served::start(
        "gateway",
        &["--providers", providers.to_str().unwrap_or_default()],
    );

    // The partition's own client: two seconds per call, then a few retries, then the batch
    // fails and the partition stalls.
    let channel = tonic::transport::Endpoint::from_shared(gateway.url())
        .expect("gateway url")
        .connect_lazy();
    let outlet = beckon_user_state::remote::RemoteGateway::new(channel);
    let message = beckon_core::OutboundMessage {
        idempotency_key: "k-silent-1".into(),
        workspace: "default".into(),
        user_id: "u-ada".into(),
        journey: "results".into(),
        version: 1,
        instance: Some(1),
        step: "notify".into(),
        channel: "webhook".into(),
        at: beckon_core::Ts(wall_clock_ms()),
        title: None,
        subject: None,
        body: BODY.into(),
        to: None,
    };
    outlet
        .send(&message)
        .await
        .expect("answered before the partition's deadline");
    assert_eq!(attempts("k-silent-1"), 1, "one attempt, then deferred");

    // What the answer was: the message waits in the gateway's retry queue.
    let mut client = GatewayClient::connect(gateway.url())
        .await
        .expect("connect");
    let mut request = tonic::Request::new(SendRequest {
        workspace: "default".into(),
        message: Some(OutboundMessage {
            idempotency_key: "k-silent-2".into(),
            user_id: "u-ada".into(),
            channel: "webhook".into(),
            journey: "results".into(),
            step: "notify".into(),
            body: BODY.into(),
            ..OutboundMessage::default()
        }),
    });
    request.set_timeout(Duration::from_secs(2));
    let answer = client.send(request).await.expect("answered").into_inner();
    assert_eq!(answer.outcome, "deferred", "{answer:?}");
    assert_eq!(attempts("k-silent-2"), 1);
}

/// The lines of a gateway's JSON log that say delivery events were left unforwarded.
fn unforwarded(log: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(log).expect("log file");
    text.lines()
        .filter(|l| l.contains("still queued"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A stopping gateway says delivery events were left unforwarded only when some were, and
/// how many: here ingest takes the connection and never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_counts_the_delivery_events_it_could_not_forward() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ingest = Hanging::start().await;
    let ingest_url = ingest.url("");

    // A receiver that refuses every message for good: each send reports `Message Failed`.
    let router = axum::Router::new().route(
        "/hooks",
        axum::routing::post(|| async { StatusCode::NOT_FOUND }),
    );
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = receiver.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(receiver, router).await;
    });
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("secret");
    let providers = dir.path().join("providers.yaml");
    let config = format!(
        "channels: {{ webhook: webhook }}\n\
         webhook:\n  url: http://{addr}/hooks\n  secret: {{ file: {} }}\n",
        secret.display()
    );
    std::fs::write(&providers, config).expect("providers");
    let args = [
        "--providers",
        providers.to_str().unwrap_or_default(),
        "--ingest-url",
        ingest_url.as_str(),
    ];
    let env = [("BECKON_LOG_FORMAT", "json"), ("BECKON_LOG", "info")];

    // Nothing sent, nothing to forward: nothing said about it.
    let quiet_log = dir.path().join("quiet.log");
    let mut quiet = Served::start_with("gateway", &args, &env, Some(&quiet_log));
    assert!(quiet.terminate().success());
    assert_eq!(unforwarded(&quiet_log), Vec::<serde_json::Value>::new());

    // One refusal reported, stuck on its way to ingest: said, with the count.
    let log = dir.path().join("gateway.log");
    let mut gateway = Served::start_with("gateway", &args, &env, Some(&log));
    let mut client = GatewayClient::connect(gateway.url())
        .await
        .expect("connect");
    let answer = client
        .send(SendRequest {
            workspace: "default".into(),
            message: Some(OutboundMessage {
                idempotency_key: "k-refused-1".into(),
                user_id: "u-ada".into(),
                channel: "webhook".into(),
                journey: "results".into(),
                step: "notify".into(),
                body: BODY.into(),
                ..OutboundMessage::default()
            }),
        })
        .await;
    assert_eq!(
        answer.expect_err("refused").code(),
        tonic::Code::FailedPrecondition
    );
    assert!(gateway.terminate().success());
    let lines = unforwarded(&log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["level"], "WARN", "{lines:?}");
    assert!(lines[0].to_string().contains("\"queued\":1"), "{lines:?}");
}
