//! A client retrying a call whose answer it lost, through a real Ingest server on loopback
//! over a Redis log: the repeat is acknowledged as already taken, and the metrics count it as
//! a duplicate, not as a rejection, on the Prometheus page and over OTLP alike. Only an event
//! refused with an error counts as rejected.

mod support;

use std::sync::Arc;
use std::time::Duration;

use beckon_core::{Clock, Ts, VirtualClock};
use beckon_ingest::grpc::IngestService;
use beckon_ingest::log::EventLog;
use beckon_proto::convert::millis_to_timestamp;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::{Ack, BatchRequest, Event, TrackRequest, batch_result};
use beckon_telemetry::TelemetryConfig;
use beckon_telemetry::testing::Collector;
use beckon_testkit::RedisServer;
use prometheus_parse::{Sample, Scrape, Value};
use tonic::transport::Channel;

/// 2026-05-28T20:26:40.000Z.
const NOW: i64 = 1_780_000_000_000;

fn track(user: &str, id: &str) -> Event {
    Event {
        r#type: "track".into(),
        message_id: id.into(),
        user_id: user.into(),
        event: "Product Added".into(),
        timestamp: Some(millis_to_timestamp(NOW - 1_000)),
        ..Event::default()
    }
}

async fn send(client: &mut IngestClient<Channel>, event: Event) -> Result<Ack, tonic::Status> {
    let request = TrackRequest {
        workspace: "w".into(),
        event: Some(event),
    };
    client.track(request).await.map(|r| r.into_inner())
}

/// The value of the sample named `name` whose labels are exactly `labels`, if any.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.metric == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn a_retried_event_counts_as_a_duplicate_and_not_as_a_rejection() {
    let collector = Collector::start().expect("collector");
    let mut config = TelemetryConfig::new("beckon-ingest");
    config.log_filter = "warn".into();
    config.metrics_endpoint = Some(collector.endpoint().to_owned());
    let clock = VirtualClock::new(Ts(NOW));
    let telemetry = beckon_telemetry::build(config, Arc::new(clock.clone()) as Arc<dyn Clock>)
        .expect("telemetry");
    let redis = RedisServer::start().expect("redis-server");

    // The server runs on a runtime of the test's own, ended before the telemetry pipeline
    // (which owns a runtime of its own for exports) is flushed and dropped.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let log: Arc<dyn EventLog> = Arc::new(support::spanning_redis_log(&redis).await);
        let service = IngestService::new(log, 64)
            .with_clock(Arc::new(clock.clone()))
            .with_metrics(telemetry.metrics());
        let mut client = support::serve_ingest(service).await;

        // The first call's answer is lost on the way back; the client sends the event again.
        let first = send(&mut client, track("u1", "m-1")).await.expect("taken");
        let retry = send(&mut client, track("u1", "m-1")).await.expect("taken");
        assert!(first.appended);
        assert!(!retry.appended, "{retry:?}");
        assert_eq!(
            (retry.partition, &retry.offset),
            (first.partition, &first.offset)
        );

        // A batch retried in part: one event already in, one new, one refused as bad input.
        let batch = BatchRequest {
            workspace: "w".into(),
            events: vec![track("u1", "m-1"), track("u2", "m-2"), track("", "m-3")],
        };
        let results = client
            .batch(batch)
            .await
            .expect("batch")
            .into_inner()
            .results;
        let acks: Vec<Option<bool>> = results
            .iter()
            .map(|r| match &r.outcome {
                Some(batch_result::Outcome::Ack(a)) => Some(a.appended),
                _ => None,
            })
            .collect();
        assert_eq!(acks, [Some(false), Some(true), None]);
    });
    drop(runtime);

    let page = telemetry.metrics_endpoint().render().expect("render");
    let samples = Scrape::parse(page.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text format")
        .samples;
    assert_eq!(
        value(&samples, "beckon_events_duplicates_total", &[]),
        Some(2.0),
        "{page}"
    );
    assert_eq!(
        value(
            &samples,
            "beckon_events_rejected_total",
            &[("reason", "missing_user_id")]
        ),
        Some(1.0),
        "{page}"
    );
    let rejected: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.metric == "beckon_events_rejected_total")
        .collect();
    assert_eq!(
        rejected.len(),
        1,
        "only the bad event is a rejection: {rejected:?}"
    );

    // The same split leaves over OTLP.
    telemetry.force_flush().expect("flush");
    let metrics = collector.wait_for_metrics(Duration::from_secs(10), |m| {
        m.iter().any(|m| m.name == "beckon.events.duplicates")
    });
    let duplicates = metrics
        .iter()
        .find(|m| m.name == "beckon.events.duplicates")
        .unwrap_or_else(|| panic!("no beckon.events.duplicates in {metrics:#?}"));
    assert_eq!(duplicates.service_name.as_deref(), Some("beckon-ingest"));
    let reasons: Vec<&str> = metrics
        .iter()
        .filter(|m| m.name == "beckon.events.rejected")
        .flat_map(|m| &m.points)
        .filter_map(|p| p.get("reason").map(String::as_str))
        .collect();
    assert!(!reasons.is_empty(), "no rejection exported: {metrics:#?}");
    assert!(
        reasons.iter().all(|r| *r == "missing_user_id"),
        "{reasons:?}"
    );
}
