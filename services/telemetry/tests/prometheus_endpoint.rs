//! The admin endpoint serves every Beckon metric in the Prometheus text format, with its
//! labels, and a real text-format parser accepts the output.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use beckon_core::{Ts, VirtualClock};
use beckon_telemetry::{TelemetryConfig, serve_admin};
use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A plain HTTP/1.1 GET, so the test depends on no HTTP client's behaviour.
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: beckon\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    (head.to_owned(), body.to_owned())
}

fn sample<'a>(
    scrape: &'a Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> &'a prometheus_parse::Sample {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name} with {labels:?}"))
}

fn scalar(value: &Value) -> f64 {
    match value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("not a scalar: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_endpoint_serves_parseable_text() {
    let clock = Arc::new(VirtualClock::new(Ts(0)));
    let guard =
        beckon_telemetry::build(TelemetryConfig::new("beckon-prom"), clock).expect("telemetry");
    support::record_everything(&guard.metrics());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_admin(
        listener,
        guard.metrics_endpoint().router(),
        async {
            let _ = stopped.await;
        },
    ));

    let (head, body) = get(addr, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4")
    );

    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parse");
    let names: BTreeSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "rpc_server_duration_milliseconds",
        "rpc_server_requests_total",
        "rpc_server_errors_total",
        "beckon_log_lag",
        "beckon_partitions_unowned",
        "beckon_events_applied_total",
        "beckon_events_rejected_total",
        "beckon_events_duplicates_total",
        "beckon_actors_live",
        "beckon_actors_activations_total",
        "beckon_segment_entries_total",
        "beckon_segment_exits_total",
        "beckon_journey_entries_total",
        "beckon_journey_exits_total",
        "beckon_journey_conversions_total",
        "beckon_timers_pending",
        "beckon_timer_lateness_milliseconds",
        "beckon_deliveries_total",
        "beckon_provider_duration_milliseconds",
        "beckon_circuit_state",
    ] {
        assert!(
            names.contains(name),
            "{name} missing from {names:?}\n{body}"
        );
    }

    let lag = sample(&scrape, "beckon_log_lag", &[("partition", "3")]);
    assert_eq!(scalar(&lag.value), 42.0);
    let errors = sample(
        &scrape,
        "rpc_server_errors_total",
        &[("rpc_method", "Track"), ("rpc_grpc_status_code", "14")],
    );
    assert_eq!(scalar(&errors.value), 1.0);
    let failed = sample(
        &scrape,
        "beckon_deliveries_total",
        &[
            ("channel", "email"),
            ("provider", "smtp"),
            ("outcome", "failed"),
        ],
    );
    assert_eq!(scalar(&failed.value), 1.0);
    let circuit = sample(&scrape, "beckon_circuit_state", &[("provider", "apns")]);
    assert_eq!(scalar(&circuit.value), 2.0);
    assert_eq!(
        scalar(&sample(&scrape, "beckon_actors_live", &[]).value),
        1.0
    );
    assert_eq!(
        scalar(
            &sample(
                &scrape,
                "beckon_events_rejected_total",
                &[("reason", "invalid")]
            )
            .value
        ),
        1.0
    );

    let lateness = sample(&scrape, "beckon_timer_lateness_milliseconds", &[]);
    let Value::Histogram(buckets) = &lateness.value else {
        panic!("lateness is not a histogram: {lateness:?}");
    };
    let at = |bound: f64| {
        buckets
            .iter()
            .find(|b| b.less_than == bound)
            .map(|b| b.count)
            .expect("bucket")
    };
    assert_eq!((at(100.0), at(250.0), at(f64::INFINITY)), (0.0, 1.0, 1.0));

    promtool_accepts(&body);

    let (missing, _) = get(addr, "/nothing").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    let _ = stop.send(());
    server.await.expect("join").expect("serve");
}

/// Where Prometheus's own `promtool` is installed (`apt-get install prometheus`), it checks
/// the output too. It also lints naming style; those findings (such as a millisecond unit
/// where Prometheus prefers seconds, which the OpenTelemetry names dictate here) are printed,
/// and only a parse failure fails the test.
fn promtool_accepts(body: &str) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not installed; only prometheus-parse checked the output");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("promtool check metrics: {:?}\n{report}", out.status.code());
    // 0: clean; 3: style findings only. Anything else means it could not read the text.
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "promtool rejected:\n{report}"
    );
    assert!(!report.contains("error while linting"), "{report}");
}
