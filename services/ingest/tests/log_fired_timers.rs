//! Fired timers travel the same log as events: a retried delivery of one firing appends once,
//! a firing at another time appends again, and no message id can shadow a timer.

mod support;

use beckon_core::{Duration, Timer, Trigger, Ts, VirtualClock};
use beckon_ingest::log::{Consumer, EventLog};
use beckon_testkit::RedisServer;
use support::{event, memory_log, redis_log};

fn timer(due: i64) -> Timer {
    Timer {
        id: "cart:1:wait".into(),
        workspace: "w".into(),
        user: "u1".into(),
        due: Ts(due),
        journey: "cart".into(),
        instance: 1,
        trace: None,
    }
}

async fn timers_and_events_share_a_partition(log: &dyn EventLog) {
    let e = log
        .append("w", &event("u1", "u1:cart:1:wait:5000", 1), None)
        .await
        .expect("event");
    let first = log.append_fired(&timer(5_000), None).await.expect("fire");
    assert_eq!(
        first.partition, e.partition,
        "a user's entries share a partition"
    );
    assert!(!first.duplicate, "a message id never shadows a timer");

    let retried = log.append_fired(&timer(5_000), None).await.expect("retry");
    assert!(retried.duplicate);
    assert_eq!(retried.offset, first.offset);
    let later = log.append_fired(&timer(9_000), None).await.expect("later");
    assert!(!later.duplicate, "the same timer due again is a new firing");

    let reader = Consumer::new("w", first.partition, "user-state", "p");
    log.ensure_group(&reader).await.expect("group");
    let entries = log.read(&reader, 10, Duration(0)).await.expect("read");
    assert_eq!(entries.len(), 3);
    assert!(entries[0].event().is_some());
    assert_eq!(entries[1].timer(), Some(&timer(5_000)));
    assert_eq!(entries[2].trigger, Ok(Trigger::Timer(timer(9_000))));

    // Acknowledged entries are gone: nothing pending, nothing new.
    let offsets: Vec<_> = entries.iter().map(|e| e.offset.clone()).collect();
    assert_eq!(log.ack(&reader, &offsets).await.expect("ack"), 3);
    assert!(log.pending(&reader, 10).await.expect("pending").is_empty());
    assert!(
        log.read(&reader, 10, Duration(0))
            .await
            .expect("read")
            .is_empty()
    );
}

#[tokio::test]
async fn redis_log_carries_fired_timers() {
    let server = RedisServer::start().expect("redis");
    let log = redis_log(&server).await;
    timers_and_events_share_a_partition(&log).await;

    let partition = beckon_core::partition::partition_of("w", "u1", support::PARTITIONS);
    let mut con = server.connection().expect("con");
    let len: u64 = redis::cmd("XLEN")
        .arg(log.stream("w", partition))
        .query(&mut con)
        .expect("xlen");
    assert_eq!(len, 0, "acknowledged entries are deleted from the stream");
}

#[tokio::test]
async fn memory_log_carries_fired_timers() {
    timers_and_events_share_a_partition(&memory_log(&VirtualClock::new(Ts(0)))).await;
}
