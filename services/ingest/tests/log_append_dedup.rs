//! Appending is idempotent by message id: a repeat is answered with the first offset and
//! is not appended again. Entries carry the workspace, the event and the traceparent.

mod support;

use beckon_core::{Duration, Ts, VirtualClock};
use beckon_ingest::log::{Consumer, EventLog};
use beckon_testkit::RedisServer;
use support::{event, memory_log, redis_log};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn repeated_id_is_appended_once(log: &dyn EventLog) {
    let e = event("u1", "m-1", 1_000);
    let first = log
        .append("w", &e, Some(TRACEPARENT))
        .await
        .expect("append");
    assert!(!first.duplicate);
    let again = log.append("w", &e, None).await.expect("append again");
    assert!(again.duplicate);
    assert_eq!(again.offset, first.offset);
    assert_eq!(again.partition, first.partition);
    let other_ws = log.append("w2", &e, None).await.expect("other workspace");
    assert!(!other_ws.duplicate, "dedup is per workspace");

    let reader = Consumer::new("w", first.partition, "user-state", "a");
    log.ensure_group(&reader).await.expect("group");
    log.ensure_group(&reader)
        .await
        .expect("creating twice is fine");
    let entries = log.read(&reader, 10, Duration(0)).await.expect("read");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].offset, first.offset);
    assert_eq!(entries[0].workspace, "w");
    assert_eq!(entries[0].event().expect("event"), &e);
    assert_eq!(entries[0].traceparent.as_deref(), Some(TRACEPARENT));
}

#[tokio::test]
async fn redis_log_appends_a_repeated_id_once() {
    let server = RedisServer::start().expect("redis");
    repeated_id_is_appended_once(&redis_log(&server).await).await;
}

#[tokio::test]
async fn memory_log_appends_a_repeated_id_once() {
    repeated_id_is_appended_once(&memory_log(&VirtualClock::new(Ts(0)))).await;
}

#[tokio::test]
async fn racing_appends_of_one_id_append_once() {
    let server = RedisServer::start().expect("redis");
    let log = redis_log(&server).await;
    let e = event("u1", "m-race", 1_000);
    let results = futures::future::join_all((0..20).map(|_| log.append("w", &e, None))).await;
    let fresh = results
        .iter()
        .filter(|r| matches!(r, Ok(a) if !a.duplicate))
        .count();
    assert_eq!(fresh, 1);
    let mut con = server.connection().expect("con");
    let len: u64 = redis::cmd("XLEN")
        .arg(log.stream("w", results[0].as_ref().expect("ok").partition))
        .query(&mut con)
        .expect("xlen");
    assert_eq!(len, 1);
}
