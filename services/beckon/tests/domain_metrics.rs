//! The domain metrics of the separate services, as Prometheus scrapes them and as OTLP
//! exports them: a few events (one a duplicate, one invalid) through ingest, user-state,
//! scheduler and gateway, then every process's `/metrics` page is parsed with a Prometheus
//! text-format parser and must carry each metric with its labels.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use beckon_proto::v1::TrackRequest;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_telemetry::testing::Collector;
use beckon_testkit::RedisServer;
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;
use support::{Served, eventually, http_get, recorded, track, wall_clock_ms};

const DEFINITIONS: &str = "\
id: hello
version: 1
workspace: default
entry:
  event: Signed Up
  reentry: never
goal: Order Completed
steps:
  - id: hello-push
    message:
      channel: push
      title: Hi
      body: Welcome aboard
  - id: pause
    delay: 1s
  - id: hello-email
    message:
      channel: email
      subject: Hello again
      body: A second message
---
kind: segment
id: signed-up
version: 1
workspace: default
condition:
  did:
    event: Signed Up
    within: 7d
";

/// The samples of one `/metrics` page, parsed.
fn scrape(served: &Served) -> Vec<Sample> {
    let addr = served
        .admin
        .as_deref()
        .expect("started with --admin-listen");
    let response = http_get(addr, "/metrics");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    Scrape::parse(lines)
        .expect("Prometheus text format")
        .samples
}

/// The value of the sample named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => f64::NAN,
        })
}

fn has(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, name, labels).unwrap_or_else(|| {
        let names: BTreeMap<&str, String> = samples
            .iter()
            .map(|s| (s.metric.as_str(), format!("{:?}", s.labels)))
            .collect();
        panic!("no {name} with {labels:?}; samples: {names:#?}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_exports_its_domain_metrics_with_labels() {
    let collector = Collector::start().expect("collector");
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("messages.jsonl");
    let journeys = dir.path().join("journeys");
    std::fs::create_dir_all(&journeys).expect("mkdir");
    std::fs::write(journeys.join("hello.yaml"), DEFINITIONS).expect("write definitions");

    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
        ("OTEL_TRACES_EXPORTER", "none"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
    ];
    let common = [
        "--redis-url",
        url.as_str(),
        "--partitions",
        "4",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let start = |name: &str, extra: &[&str]| {
        let mut args = common.to_vec();
        args.extend_from_slice(extra);
        let log = dir.path().join(format!("{name}.log"));
        Served::start_with(name, &args, &env, Some(&log))
    };
    let mut scheduler = start("scheduler", &[]);
    let mut gateway = start(
        "gateway",
        &["--messages-out", out.to_str().unwrap_or_default()],
    );
    let mut ingest = start("ingest", &[]);
    let (sched_url, gateway_url) = (scheduler.url(), gateway.url());
    let mut user_state = start(
        "user-state",
        &[
            "--scheduler-url",
            &sched_url,
            "--gateway-url",
            &gateway_url,
            "--journeys",
            journeys.to_str().unwrap_or_default(),
            "--lease-ttl-ms",
            "600",
        ],
    );

    // u-1 runs through the journey; u-2 converts before the delay ends. One event comes
    // twice, one has no user id.
    let mut client = IngestClient::connect(ingest.url()).await.expect("connect");
    let now = wall_clock_ms();
    let events = [
        track("u-1", "Signed Up", "m-1", now, json!({})),
        track("u-1", "Signed Up", "m-1", now, json!({})),
        track("u-2", "Signed Up", "m-2", now, json!({})),
        track("u-2", "Order Completed", "m-3", now + 1, json!({})),
        track("", "Signed Up", "m-4", now, json!({})),
    ];
    for event in events {
        let _ = client
            .track(TrackRequest {
                workspace: "default".into(),
                event: Some(event),
            })
            .await;
    }
    let sent = eventually(1_200, || {
        recorded(&out)
            .iter()
            .any(|m| m["channel"] == "email" && m["user_id"] == "u-1")
    })
    .await;
    assert!(sent, "messages recorded: {:?}", recorded(&out));

    // The repeat is a retry, counted as such; only the event without a user is refused.
    let ingested = scrape(&ingest);
    let reason = |r| [("reason", r)];
    assert_eq!(has(&ingested, "beckon_events_duplicates_total", &[]), 1.0);
    assert_eq!(
        value(
            &ingested,
            "beckon_events_rejected_total",
            &reason("duplicate_message_id")
        ),
        None
    );
    assert_eq!(
        has(
            &ingested,
            "beckon_events_rejected_total",
            &reason("missing_user_id")
        ),
        1.0
    );
    has(
        &ingested,
        "rpc_server_requests_total",
        &[("rpc_method", "Track")],
    );

    // The journey's exit after the email is counted when the user's batch is done, which can
    // come just after the message reached the file.
    let completed = [("journey", "hello"), ("reason", "completed")];
    let counted = eventually(200, || {
        value(
            &scrape(&user_state),
            "beckon_journey_exits_total",
            &completed,
        )
        .is_some()
    })
    .await;
    assert!(counted, "the completed exit of hello is counted");

    // The user-state loop counts lag after each batch; the email is out, so it is idle.
    let applied = scrape(&user_state);
    assert_eq!(has(&applied, "beckon_events_applied_total", &[]), 3.0);
    assert!(has(&applied, "beckon_actors_activations_total", &[]) >= 2.0);
    has(&applied, "beckon_actors_live", &[]);
    has(&applied, "beckon_log_lag", &[("partition", "0")]);
    assert_eq!(has(&applied, "beckon_partitions_unowned", &[]), 0.0);
    let journey = [("journey", "hello")];
    assert_eq!(has(&applied, "beckon_journey_entries_total", &journey), 2.0);
    assert_eq!(has(&applied, "beckon_journey_exits_total", &completed), 1.0);
    let goal = [("journey", "hello"), ("reason", "goal")];
    assert_eq!(has(&applied, "beckon_journey_exits_total", &goal), 1.0);
    assert_eq!(
        has(&applied, "beckon_journey_conversions_total", &journey),
        1.0
    );
    let segment = [("segment", "signed-up")];
    assert_eq!(has(&applied, "beckon_segment_entries_total", &segment), 2.0);

    let timers = scrape(&scheduler);
    has(&timers, "beckon_timers_pending", &[("partition", "0")]);
    assert!(has(&timers, "beckon_timer_lateness_milliseconds", &[]) >= 1.0);

    let delivered = scrape(&gateway);
    let push = [
        ("channel", "push"),
        ("provider", "file"),
        ("outcome", "sent"),
    ];
    assert_eq!(has(&delivered, "beckon_deliveries_total", &push), 2.0);
    let email = [
        ("channel", "email"),
        ("provider", "file"),
        ("outcome", "sent"),
    ];
    assert_eq!(has(&delivered, "beckon_deliveries_total", &email), 1.0);

    // The same instruments leave over OTLP.
    for p in [&mut user_state, &mut ingest, &mut scheduler, &mut gateway] {
        assert!(p.terminate().success(), "a service failed to stop cleanly");
    }
    let wanted = [
        ("beckon-ingest", "beckon.events.rejected"),
        ("beckon-ingest", "beckon.events.duplicates"),
        ("beckon-user-state", "beckon.events.applied"),
        ("beckon-user-state", "beckon.journey.entries"),
        ("beckon-user-state", "beckon.log.lag"),
        ("beckon-scheduler", "beckon.timer.lateness"),
        ("beckon-gateway", "beckon.deliveries"),
    ];
    let metrics = collector.wait_for_metrics(Duration::from_secs(30), |metrics| {
        wanted.iter().all(|(service, name)| {
            metrics
                .iter()
                .any(|m| m.service_name.as_deref() == Some(*service) && m.name == *name)
        })
    });
    for (service, name) in wanted {
        assert!(
            metrics
                .iter()
                .any(|m| m.service_name.as_deref() == Some(service) && m.name == name),
            "{service} exported no {name} over OTLP"
        );
    }
    // Each export is cumulative, so some export carries the email's delivery.
    let email_sent = metrics
        .iter()
        .filter(|m| m.name == "beckon.deliveries")
        .flat_map(|m| &m.points)
        .any(|p| {
            p.get("channel").map(String::as_str) == Some("email")
                && p.get("outcome").map(String::as_str) == Some("sent")
        });
    assert!(email_sent, "no email delivery exported over OTLP");
}
