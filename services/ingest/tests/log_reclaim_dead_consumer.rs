//! Entries a consumer read and never acknowledged (it died) are re-delivered: to the same
//! consumer name after a restart, or to another consumer that reclaims them.

mod support;

use beckon_core::{Duration, Ts, VirtualClock};
use beckon_ingest::log::{Consumer, EventLog};
use beckon_testkit::RedisServer;
use support::{event, memory_log, redis_log};

/// `advance` moves the log's idle clock past `min_idle` (a no-op for Redis, whose idle time
/// is the server's and the test asks for an idle time of zero).
async fn dead_consumers_entries_come_back(log: &dyn EventLog, advance: impl Fn()) {
    let mut partition = 0;
    let mut offsets = Vec::new();
    for i in 0..3 {
        let a = log
            .append("w", &event("u1", &format!("m{i}"), i), None)
            .await
            .expect("append");
        partition = a.partition;
        offsets.push(a.offset);
    }
    let a = Consumer::new("w", partition, "user-state", "instance-a");
    let b = Consumer::new("w", partition, "user-state", "instance-b");
    log.ensure_group(&a).await.expect("group");

    let read = log.read(&a, 10, Duration(0)).await.expect("read");
    assert_eq!(read.len(), 3);
    assert_eq!(log.ack(&a, &offsets[..1]).await.expect("ack"), 1);

    // Instance a restarts under the same name: it finds its unacknowledged entries.
    let pending = log.pending(&a, 10).await.expect("pending");
    let got: Vec<_> = pending.iter().map(|e| e.offset.clone()).collect();
    assert_eq!(got, offsets[1..]);
    assert!(
        log.read(&a, 10, Duration(0))
            .await
            .expect("read")
            .is_empty(),
        "nothing new"
    );

    // Or it is gone for good, and b takes its entries over.
    advance();
    let taken = log.reclaim(&b, Duration(0), 10).await.expect("reclaim");
    let got: Vec<_> = taken.iter().map(|e| e.offset.clone()).collect();
    assert_eq!(got, offsets[1..]);
    assert!(log.pending(&a, 10).await.expect("pending").is_empty());
    // Acknowledging answers what is left to apply: one entry stays unread behind them.
    log.append("w", &event("u1", "m3", 3), None)
        .await
        .expect("append");
    assert_eq!(log.ack_counting(&b, &got).await.expect("ack"), (2, Some(1)));
    assert!(
        log.reclaim(&b, Duration(0), 10)
            .await
            .expect("reclaim")
            .is_empty()
    );
}

#[tokio::test]
async fn redis_log_redelivers_a_dead_consumers_entries() {
    let server = RedisServer::start().expect("redis");
    dead_consumers_entries_come_back(&redis_log(&server).await, || {}).await;
}

#[tokio::test]
async fn memory_log_redelivers_a_dead_consumers_entries() {
    let clock = VirtualClock::new(Ts(0));
    let log = memory_log(&clock);
    dead_consumers_entries_come_back(&log, || {
        clock.advance_to(Ts(60_000));
    })
    .await;
}

#[tokio::test]
async fn memory_log_keeps_entries_of_a_live_consumer() {
    let clock = VirtualClock::new(Ts(0));
    let log = memory_log(&clock);
    let a = log
        .append("w", &event("u1", "m", 0), None)
        .await
        .expect("append");
    let owner = Consumer::new("w", a.partition, "g", "owner");
    let thief = Consumer::new("w", a.partition, "g", "thief");
    assert_eq!(
        log.read(&owner, 10, Duration(0)).await.expect("read").len(),
        1
    );
    clock.advance_to(Ts(999));
    assert!(
        log.reclaim(&thief, Duration(1_000), 10)
            .await
            .expect("reclaim")
            .is_empty()
    );
    clock.advance_to(Ts(1_000));
    assert_eq!(
        log.reclaim(&thief, Duration(1_000), 10)
            .await
            .expect("reclaim")
            .len(),
        1
    );
}
