//! The same input gives byte-identical messages and identical counts on every run, whatever
//! the number of worker threads.

use std::path::Path;

use beckon::replay::{self, ReplayConfig};
use beckon_tests::{example_journeys, messages_jsonl};

fn run(events: &Path, workers: usize) -> (String, String) {
    let mut config = ReplayConfig::new(events.to_path_buf(), example_journeys());
    config.workers = workers;
    config.progress = false;
    let out = replay::run(&config).expect("replay runs");
    let mut report = out.report.clone();
    report.elapsed_ms = 0;
    (
        messages_jsonl(&out),
        serde_json::to_string(&report).expect("report serializes"),
    )
}

#[test]
fn shipped_example_replays_identically() {
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/events/shop.jsonl");
    let first = run(&events, 2);

    assert!(!first.0.is_empty(), "the example sends messages");
    assert_eq!(first, run(&events, 2));
    assert_eq!(
        first,
        run(&events, 1),
        "thread count does not change the outcome"
    );
}

#[test]
fn real_event_log_replays_identically() {
    // The shared data sits beside the checkout; a checkout without it has nothing to compare.
    let Some(events) = beckon_tests::shared_data("otto-recsys-sample/events.segment.jsonl") else {
        return;
    };
    let first = run(&events, 2);
    assert_eq!(first, run(&events, 1));
    assert_eq!(first, run(&events, 2));
}
