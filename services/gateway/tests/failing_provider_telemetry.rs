//! A webhook receiver that answers 500 or never answers in time: the gateway counts failed
//! deliveries, its circuit breaker opens and says so on `/metrics`, and the JSON log lines it
//! writes meanwhile name neither the signing secret nor the message body.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use beckon_gateway::policy::{BreakerConfig, RetryPolicy};
use beckon_gateway::webhook::{self, WebhookConfig};
use beckon_gateway::{Gateway, GatewayError, Secret};
use beckon_telemetry::{LogFormat, TelemetryConfig};
use prometheus_parse::{Scrape, Value};
use support::{message, serve, test_deps};

const SECRET: &str = "whsec-do-not-log-5f2c";
const BODY: &str = "Private note for Ada: your prescription is ready";

/// What the fake provider does with each request, in order; a 500 once the script runs out.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// Holds the request past the client's timeout.
    Stall,
}

#[derive(Clone)]
struct Provider {
    script: Arc<Mutex<VecDeque<Answer>>>,
}

async fn answer(State(p): State<Provider>) -> StatusCode {
    let next = p.script.lock().unwrap().pop_front();
    match next.unwrap_or(Answer::Status(500)) {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap(),
        Answer::Stall => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK
        }
    }
}

/// Log lines as the process would write them to stderr.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

fn sample(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name} with {labels:?} in {:#?}", scrape.samples));
    match &found.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
        Value::Summary(_) => f64::NAN,
    }
}

#[tokio::test]
async fn failures_raise_the_failure_metric_and_open_the_circuit_without_leaking() {
    let t = test_deps();
    let logs = Captured::default();
    let mut config = TelemetryConfig::new("beckon-gateway");
    config.log_format = LogFormat::Json;
    config.log_filter = "debug".into();
    let guard = beckon_telemetry::build_with_writer(config, t.deps.clock.clone(), logs.clone())
        .expect("telemetry");
    let _logging = tracing::dispatcher::set_default(guard.dispatch());

    let provider = Provider {
        script: Arc::new(Mutex::new(
            [Answer::Status(500), Answer::Stall, Answer::Status(503)].into(),
        )),
    };
    let router = axum::Router::new()
        .route("/hook", axum::routing::post(answer))
        .with_state(provider);
    let addr = serve(router).await;

    let mut hook = WebhookConfig::new(
        url::Url::parse(&format!("http://{addr}/hook")).unwrap(),
        Secret::new(SECRET),
    );
    hook.timeout = Duration::from_millis(300);
    hook.policy.retry = RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    };
    hook.policy.breaker = BreakerConfig {
        failure_threshold: 3,
        cool_down: Duration::from_secs(60),
    };
    let channel = webhook::channel(hook, t.deps.clone())
        .unwrap()
        .with_metrics(guard.metrics());
    let gateway = Gateway::new()
        .with("webhook", Arc::new(channel))
        .with_metrics(guard.metrics());

    // Three messages: 500 then a timeout, 503 (the breaker opens), then refused unsent.
    for key in ["k-1", "k-2", "k-3"] {
        let mut m = message("webhook", key, "u-ada");
        m.body = BODY.to_string();
        let err = gateway.send(&m).await.unwrap_err();
        assert!(matches!(err, GatewayError::Unavailable { .. }), "{err:?}");
    }

    let text = guard.metrics_endpoint().render().expect("render");
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("text format");
    let webhook = [("channel", "webhook"), ("provider", "webhook")];
    let failed = [
        ("channel", "webhook"),
        ("provider", "webhook"),
        ("outcome", "failed"),
    ];
    assert_eq!(sample(&scrape, "beckon_deliveries_total", &failed), 3.0);
    assert_eq!(
        sample(&scrape, "beckon_circuit_state", &webhook),
        2.0,
        "open"
    );
    assert_eq!(
        sample(&scrape, "beckon_provider_duration_milliseconds", &webhook),
        3.0,
        "three calls reached the provider; the last message was held by the breaker"
    );

    // Every line is JSON; the breaker's opening is one of them; no secret, no body.
    drop(_logging);
    let captured = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = captured.lines().collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let json: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(json.get("level").is_some(), "{line}");
        assert!(!line.contains(SECRET), "secret logged: {line}");
        assert!(
            !line.contains("prescription"),
            "message body logged: {line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("circuit opened")),
        "{captured}"
    );
}
