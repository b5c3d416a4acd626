//! Every service is restarted in turn (SIGTERM, drain, start again on its address) while a
//! client keeps sending events. The client sees no error beyond retryable ones, which it
//! retries with the same message ids; every acknowledged event is applied exactly once, and
//! every cart reminder goes out once.

mod support;

use std::time::Duration as StdDuration;

use beckon_testkit::RedisServer;
use support::deployment::{Deployment, Load, Role, assert_each_applied_and_reminded_once};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_and_duplicates_nothing() {
    let redis = RedisServer::start().expect("redis-server");
    let mut deployment = Deployment::start(&redis.url(), "1s", 2, 1_500);
    let load = Load::start(deployment.ingest.url(), 200, 20);

    tokio::time::sleep(StdDuration::from_millis(500)).await;
    for role in [
        Role::Ingest,
        Role::Scheduler,
        Role::Gateway,
        Role::UserState(0),
        Role::UserState(1),
    ] {
        deployment.restart(role, true);
        tokio::time::sleep(StdDuration::from_millis(500)).await;
    }
    let report = load.stop().await;
    eprintln!(
        "acknowledged {} events; retried calls by code: {:?}",
        report.total(),
        report.retried
    );
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert!(report.total() > 0);

    assert_each_applied_and_reminded_once(&redis.url(), &deployment, &report.acked).await;
}
