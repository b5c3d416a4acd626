//! Redis is killed with SIGKILL and started again, with its append-only file fsynced on
//! every write (`appendfsync always`), while the services run and a client keeps sending.
//! Nothing acknowledged is lost: every acknowledged event is applied exactly once, and every
//! cart reminder goes out once.

mod support;

use std::time::Duration as StdDuration;

use beckon_testkit::{Fsync, Options, RedisServer};
use support::deployment::{Deployment, Load, assert_each_applied_and_reminded_once};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_crash_loses_nothing_acknowledged() {
    let mut redis = RedisServer::start_with(Options::aof(Fsync::Always)).expect("redis-server");
    if redis.is_external() {
        return; // a shared server cannot be killed by a test
    }
    let url = redis.url();
    let deployment = Deployment::start(&url, "1s", 2, 1_500);
    let load = Load::start(deployment.ingest.url(), 200, 20);

    tokio::time::sleep(StdDuration::from_secs(1)).await;
    let before = load.acked_so_far();
    redis.kill();
    // Down long enough for calls to fail or wait and leases to lapse.
    tokio::time::sleep(StdDuration::from_secs(2)).await;
    redis.restart().expect("start redis again");
    assert_eq!(redis.url(), url, "same address after the restart");
    let restarted = load.acked_so_far();
    tokio::time::sleep(StdDuration::from_secs(2)).await;
    // The client kept sending across the crash (else the crash tested nothing). Its calls
    // may have failed and been retried, or waited for Redis to come back.
    assert!(before > 0, "events were acknowledged before the crash");
    assert!(
        load.acked_so_far() > restarted,
        "events were acknowledged after the restart"
    );

    let report = load.stop().await;
    eprintln!(
        "acknowledged {} events; retried calls by code: {:?}",
        report.total(),
        report.retried
    );
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);

    assert_each_applied_and_reminded_once(&url, &deployment, &report.acked).await;
}
