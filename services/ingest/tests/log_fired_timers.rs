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

/// A batch appends as the same single appends in order would: a firing already appended, or
/// twice in the batch, is a duplicate with the first offset; each entry keeps its context.
async fn batches_append_like_single_calls(log: &dyn EventLog) {
    let first = log.append_fired(&timer(1_000), None).await.expect("fire");
    let mut other = timer(3_000);
    other.user = "u2".into();
    let batch = [timer(1_000), timer(2_000), other.clone(), timer(2_000)];
    let traces: Vec<Option<String>> = (0..batch.len())
        .map(|i| Some(format!("00-{:032x}-{:016x}-01", i + 1, i + 1)))
        .collect();
    let appended = log.append_fired_many(&batch, &traces).await;
    let appended: Vec<_> = appended.into_iter().map(|r| r.expect("append")).collect();
    let duplicate: Vec<_> = appended.iter().map(|a| a.duplicate).collect();
    assert_eq!(duplicate, [true, false, false, true]);
    assert_eq!(appended[0].offset, first.offset);
    assert_eq!(appended[3].offset, appended[1].offset);

    let p = appended[1].partition;
    let reader = Consumer::new("w", p, "user-state", "p");
    log.ensure_group(&reader).await.expect("group");
    let entries = log.read(&reader, 10, Duration(0)).await.expect("read");
    let fired: Vec<_> = entries.iter().filter_map(|e| e.timer().cloned()).collect();
    let mut expected = vec![timer(1_000), timer(2_000)];
    if appended[2].partition == p {
        expected.push(other);
    }
    assert_eq!(fired, expected);
    assert_eq!(entries[1].traceparent, traces[1]);
}

#[tokio::test]
async fn redis_log_appends_fired_timers_in_batches() {
    let server = RedisServer::start().expect("redis");
    batches_append_like_single_calls(&redis_log(&server).await).await;
}

#[tokio::test]
async fn memory_log_appends_fired_timers_in_batches() {
    batches_append_like_single_calls(&memory_log(&VirtualClock::new(Ts(0)))).await;
}
