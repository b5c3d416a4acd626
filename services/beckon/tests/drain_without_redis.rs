//! `beckon serve user-state` told to stop while Redis is away drains and exits with an error
//! that says its leases were not given back, never with a panic.

mod support;

use beckon_testkit::RedisServer;
use support::Served;

/// Waits until the process's log holds `needle`; the log is written as the process runs.
fn wait_for_log(log: &std::path::Path, needle: &str) {
    for _ in 0..600 {
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains(needle)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!(
        "never logged {needle:?}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn a_drain_with_redis_gone_ends_with_an_error_not_a_panic() {
    let mut redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let url = redis.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let journeys = support::examples();
    let common = ["--redis-url", url.as_str(), "--partitions", "4"];

    let scheduler = Served::start_with("scheduler", &common, &[], None);
    let scheduler_url = scheduler.url();
    let log = dir.path().join("user-state.log");
    let mut args = common.to_vec();
    args.extend([
        "--scheduler-url",
        scheduler_url.as_str(),
        "--journeys",
        journeys.to_str().unwrap_or_default(),
    ]);
    let mut user_state = Served::start_with("user-state", &args, &[], Some(&log));
    wait_for_log(&log, "partition started");

    // Redis goes away under the running partitions, then the instance is told to stop.
    redis.kill();
    wait_for_log(&log, "batch failed; retrying");
    let status = user_state.terminate();

    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(
        text.contains("leases not released; they expire on their own"),
        "{text}"
    );
    let last = text.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: draining user-state: "), "{last}");
    assert!(last.contains("the leases expire on their own"), "{last}");
}
