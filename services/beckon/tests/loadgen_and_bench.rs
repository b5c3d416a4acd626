//! `beckon loadgen` against a running `serve all`, and `beckon bench --quick` end to end:
//! every figure runs on servers the command starts itself, and prints in the expected shape.
//! No duration is asserted.

mod support;

use std::process::Command;
use std::sync::Arc;

use beckon::loadgen::{self, LoadConfig, TrafficShape};
use support::{Served, examples};

#[tokio::test]
async fn loadgen_gets_every_event_acknowledged() {
    let mut served = Served::start("all", &["--partitions", "4"]);
    let config = LoadConfig {
        url: served.url(),
        events: 600,
        concurrency: 16,
        connections: 2,
        progress: false,
        shape: TrafficShape {
            users: 200,
            ..TrafficShape::default()
        },
        ..LoadConfig::default()
    };
    let clock: Arc<dyn beckon_core::Clock> = Arc::new(beckon_core::SystemClock);
    let report = loadgen::run(&config, clock).await.expect("load run");

    assert_eq!(report.sent, 600);
    assert_eq!(report.acked, 600, "errors: {:?}", report.errors);
    assert!(report.errors.is_empty());
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.latency.samples, 600);
    assert!(report.users_seen > 10 && report.users_seen <= 200);

    // The same seed and prefix again: every message id repeats, so nothing is appended twice.
    let again = loadgen::run(&config, Arc::new(beckon_core::SystemClock))
        .await
        .expect("second run");
    assert_eq!(again.acked, 600);
    assert_eq!(again.duplicates, 600);

    // Another seed is another population: new users, new message ids, nothing repeated.
    let other = LoadConfig {
        seed: config.seed + 1,
        ..config.clone()
    };
    let fresh = loadgen::run(&other, Arc::new(beckon_core::SystemClock))
        .await
        .expect("run with another seed");
    assert_eq!(fresh.acked, 600);
    assert_eq!(fresh.duplicates, 0);
    served.kill();
}

#[tokio::test]
async fn loadgen_in_batches_gets_every_event_acknowledged() {
    let mut served = Served::start("all", &["--partitions", "4"]);
    let config = LoadConfig {
        url: served.url(),
        events: 610,
        concurrency: 4,
        connections: 2,
        batch: 50,
        progress: false,
        shape: TrafficShape {
            users: 200,
            ..TrafficShape::default()
        },
        ..LoadConfig::default()
    };
    let clock: Arc<dyn beckon_core::Clock> = Arc::new(beckon_core::SystemClock);
    let report = loadgen::run(&config, clock).await.expect("load run");

    assert_eq!(report.sent, 610, "the last call carries the 10 left over");
    assert_eq!(report.acked, 610, "errors: {:?}", report.errors);
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.latency.samples, 610);
    served.kill();
}

#[tokio::test]
async fn loadgen_names_an_unreachable_server() {
    let config = LoadConfig {
        url: "http://127.0.0.1:1".into(),
        events: 1,
        progress: false,
        ..LoadConfig::default()
    };
    let err = loadgen::run(&config, Arc::new(beckon_core::SystemClock))
        .await
        .expect_err("nothing listens on port 1");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

#[test]
fn quick_bench_prints_every_figure() {
    let out = Command::new(env!("CARGO_BIN_EXE_beckon"))
        .args(["bench", "--quick", "--events"])
        .arg(examples().join("../events/shop.jsonl"))
        .arg("--journeys")
        .arg(examples())
        .env_remove("REDIS_URL")
        .output()
        .expect("run beckon bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );

    for expected in [
        "## resident memory per idle user",
        "resident per idle user, hibernated: ",
        "state of the users: ",
        "after the eviction period: ",
        "## replay",
        "reference: parse only: ",
        "x parse only)",
        "## ingest only",
        "reference: pipelined XADD loop: ",
        "ingest acknowledged: ",
        "## full processing, serve all",
        "## full processing, ingest, journey, scheduler, gateway, user-state as processes",
        "sustained, applied end to end: ",
        "event-to-decision latency: p50 ",
        "## actors with Redis persistence",
        "activation (load from Redis, start actor): p50 ",
        "## timers in Redis",
        "scheduled: ",
        "fired into the log",
        "lateness of timers due over",
        "done",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // At 2,000 users the RSS growth is mostly fixed costs: no per-user figure to misread.
    assert!(
        text.contains("resident per idle user, hibernated: not shown below 100000 users"),
        "{text}"
    );
    assert!(!text.contains("x target 1 KiB"), "{text}");

    // Every ratio is a number, and nothing failed on the way.
    assert!(!text.contains("NaN") && !text.contains("inf "), "{text}");
    assert!(!text.contains("errors: Unavailable"), "{text}");
}
