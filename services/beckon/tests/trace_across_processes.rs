//! One event through separate processes (ingest, user-state, scheduler, gateway), each
//! exporting to a test OTLP collector, arrives as one trace: ingest's call continues the
//! client's `traceparent`, the actor's span is a child of ingest's, and the scheduler and
//! gateway calls it makes are its children. The journey's one-second delay fires later as a
//! trace of its own whose firing span links back to the span that set the timer. The fifth
//! process, the journey service, is not on an event's path (user-state evaluates the
//! definitions it fetched); its trace is the fetch, from user-state into the service.
//!
//! Only the structure of the traces is asserted, never how long anything took.

mod support;

use std::time::Duration;

use beckon_proto::v1::TrackRequest;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_telemetry::testing::{CollectedSpan, Collector};
use beckon_testkit::RedisServer;
use serde_json::json;
use support::{Served, eventually, recorded, track, wall_clock_ms};
use tonic::metadata::MetadataValue;

const TRACE_ID: &str = "5b8aa5a2d2c872e8321cf37308d69df2";
const CLIENT_SPAN: &str = "051581bf3cb55c13";

const JOURNEY: &str = "\
id: hello
version: 1
workspace: default
entry:
  event: Signed Up
  reentry: never
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
";

fn service(s: &CollectedSpan) -> &str {
    s.service_name.as_deref().unwrap_or_default()
}

/// The one span of `service` named `name` in `spans` that satisfies `also`.
fn one<'a>(
    spans: &'a [CollectedSpan],
    service_name: &str,
    name: &str,
    also: impl Fn(&CollectedSpan) -> bool,
) -> &'a CollectedSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| service(s) == service_name && s.name == name && also(s))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {name} span from {service_name}; spans: {spans:#?}"
    );
    found[0]
}

fn attr<'a>(s: &'a CollectedSpan, key: &str) -> &'a str {
    s.attributes
        .get(key)
        .map(String::as_str)
        .unwrap_or_default()
}

fn is_child(child: &CollectedSpan, parent: &CollectedSpan) -> bool {
    child.trace_id == parent.trace_id && child.parent_span_id.as_deref() == Some(&parent.span_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_is_one_trace_across_the_services_and_its_timer_links_back() {
    let collector = Collector::start().expect("collector");
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("messages.jsonl");
    let journeys = dir.path().join("journeys");
    std::fs::create_dir_all(&journeys).expect("mkdir");
    std::fs::write(journeys.join("hello.yaml"), JOURNEY).expect("write journey");

    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
        ("BECKON_LOG_FORMAT", "json"),
    ];
    let common = ["--redis-url", url.as_str(), "--partitions", "4"];
    let start = |name: &str, extra: &[&str]| {
        let mut args = common.to_vec();
        args.extend_from_slice(extra);
        let log = dir.path().join(format!("{name}.log"));
        Served::start_with(name, &args, &env, Some(&log))
    };

    let mut journey = start(
        "journey",
        &["--journeys", journeys.to_str().unwrap_or_default()],
    );
    let mut scheduler = start("scheduler", &[]);
    let mut gateway = start(
        "gateway",
        &["--messages-out", out.to_str().unwrap_or_default()],
    );
    let mut ingest = start("ingest", &[]);
    let (sched_url, gateway_url, journey_url) = (scheduler.url(), gateway.url(), journey.url());
    let mut user_state = start(
        "user-state",
        &[
            "--scheduler-url",
            &sched_url,
            "--gateway-url",
            &gateway_url,
            "--journeys-url",
            &journey_url,
            "--lease-ttl-ms",
            "600",
        ],
    );

    // The client's own span: ingest's server span must be its child.
    let mut client = IngestClient::connect(ingest.url()).await.expect("connect");
    let event = track("u-1", "Signed Up", "m-1", wall_clock_ms(), json!({}));
    let mut request = tonic::Request::new(TrackRequest {
        workspace: "default".into(),
        event: Some(event),
    });
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(traceparent.as_str()).expect("ascii"),
    );
    client.track(request).await.expect("track");

    // Both messages went out: the push at once, the email after the delay fired.
    let sent = eventually(1_200, || recorded(&out).len() >= 2).await;
    assert!(sent, "messages recorded: {:?}", recorded(&out));

    // A drained process flushes its spans on the way out.
    for p in [
        &mut user_state,
        &mut ingest,
        &mut scheduler,
        &mut gateway,
        &mut journey,
    ] {
        assert!(p.terminate().success(), "a service failed to stop cleanly");
    }
    let services = [
        "beckon-ingest",
        "beckon-user-state",
        "beckon-scheduler",
        "beckon-gateway",
        "beckon-journey",
    ];
    let spans = collector.wait_for_spans(Duration::from_secs(30), |spans| {
        services
            .iter()
            .all(|name| spans.iter().any(|s| service(s) == *name))
    });

    // The definitions user-state evaluates came from the journey service, in one trace.
    let fetch = one(&spans, "beckon-user-state", "definitions.fetch", |_| true);
    let release = one(
        &spans,
        "beckon-journey",
        "beckon.v1.Journeys/GetRelease",
        |_| true,
    );
    assert!(
        is_child(release, fetch),
        "the journey service continues the fetch"
    );

    // The event's trace: client → ingest → user-state → scheduler and gateway.
    let in_trace: Vec<CollectedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == TRACE_ID)
        .cloned()
        .collect();
    let track_call = one(&in_trace, "beckon-ingest", "beckon.v1.Ingest/Track", |_| {
        true
    });
    assert_eq!(track_call.parent_span_id.as_deref(), Some(CLIENT_SPAN));
    assert_eq!(track_call.kind, 2, "a server span");
    assert_eq!(attr(track_call, "rpc.system"), "grpc");

    let apply = one(&in_trace, "beckon-user-state", "process event", |_| true);
    assert!(
        is_child(apply, track_call),
        "the actor continues ingest's span"
    );
    assert_eq!(apply.kind, 5, "a consumer span");
    assert_eq!(attr(apply, "messaging.system"), "beckon");
    assert_eq!(attr(apply, "beckon.workspace"), "default");
    assert!(
        !apply.attributes.contains_key("beckon.user.id"),
        "user ids are not exported unless configured"
    );
    let evaluate = one(&in_trace, "beckon-user-state", "journey.evaluate", |s| {
        is_child(s, apply)
    });
    assert_eq!(evaluate.trace_id, TRACE_ID);

    let set_timer = one(
        &in_trace,
        "beckon-scheduler",
        "beckon.v1.Scheduler/SetTimers",
        |_| true,
    );
    assert!(
        is_child(set_timer, apply),
        "the scheduler call continues the actor's span"
    );

    let push_call = one(
        &in_trace,
        "beckon-gateway",
        "beckon.v1.Gateway/Send",
        |_| true,
    );
    assert!(
        is_child(push_call, apply),
        "the gateway call continues the actor's span"
    );
    let push = one(&in_trace, "beckon-gateway", "gateway.send", |s| {
        is_child(s, push_call)
    });
    assert_eq!(attr(push, "beckon.channel"), "push");
    assert_eq!(attr(push, "beckon.journey"), "hello");
    assert_eq!(attr(push, "beckon.step"), "hello-push");
    assert_eq!(attr(push, "beckon.outcome"), "sent");

    // The delay: its firing is a new trace, linked to the span that set the timer.
    let fire = one(&spans, "beckon-scheduler", "timer.fire", |_| true);
    assert_ne!(
        fire.trace_id, TRACE_ID,
        "a timer firing starts a trace of its own"
    );
    assert_eq!(fire.parent_span_id, None);
    assert_eq!(
        fire.links,
        vec![(TRACE_ID.to_string(), apply.span_id.clone())],
        "the firing links to the work that set the timer"
    );
    assert_eq!(attr(fire, "beckon.journey"), "hello");

    let fired = one(&spans, "beckon-user-state", "process timer", |_| true);
    assert!(
        is_child(fired, fire),
        "the actor continues the firing's span"
    );
    let email_call = one(&spans, "beckon-gateway", "beckon.v1.Gateway/Send", |s| {
        is_child(s, fired)
    });
    let email = one(&spans, "beckon-gateway", "gateway.send", |s| {
        is_child(s, email_call)
    });
    assert_eq!(attr(email, "beckon.channel"), "email");
    assert_eq!(attr(email, "beckon.step"), "hello-email");
}
