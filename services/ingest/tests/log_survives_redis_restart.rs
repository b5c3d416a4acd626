//! An acknowledged append is not lost when Redis is killed and restarted, with the AOF
//! fsynced on every write; its message id is still deduplicated afterwards.

mod support;

use beckon_core::Duration;
use beckon_ingest::log::{Consumer, EventLog};
use beckon_testkit::{Fsync, Options, RedisServer};
use support::{event, redis_log};

#[tokio::test]
async fn acknowledged_appends_survive_a_kill() {
    let mut server = RedisServer::start_with(Options::aof(Fsync::Always)).expect("redis");
    if server.is_external() {
        return; // a shared server cannot be restarted by a test
    }
    let log = redis_log(&server).await;
    let mut appended = Vec::new();
    for i in 0..50 {
        appended.push(
            log.append("w", &event("u1", &format!("m{i}"), i), None)
                .await
                .expect("append"),
        );
    }
    drop(log);

    server.restart().expect("kill -9 and start again");

    let log = redis_log(&server).await;
    let partition = appended[0].partition;
    let reader = Consumer::new("w", partition, "user-state", "a");
    log.ensure_group(&reader).await.expect("group");
    let entries = log.read(&reader, 100, Duration(0)).await.expect("read");
    let offsets: Vec<_> = entries.iter().map(|e| e.offset.clone()).collect();
    let expected: Vec<_> = appended.iter().map(|a| a.offset.clone()).collect();
    assert_eq!(offsets, expected);

    let again = log
        .append("w", &event("u1", "m7", 7), None)
        .await
        .expect("append");
    assert!(again.duplicate);
    assert_eq!(again.offset, appended[7].offset);
}

/// The first append after Redis came back is taken: the connection that died with the old
/// server is found dead by that append, which goes again on the new connection instead of
/// failing its caller.
#[tokio::test]
async fn the_first_append_after_a_restart_is_taken() {
    let mut server = RedisServer::start_with(Options::aof(Fsync::Always)).expect("redis");
    if server.is_external() {
        return; // a shared server cannot be restarted by a test
    }
    let log = redis_log(&server).await;
    let first = log
        .append("w", &event("u1", "before", 1), None)
        .await
        .expect("append");

    server.restart().expect("kill -9 and start again");

    for (i, id) in ["after-1", "after-2", "after-3"].into_iter().enumerate() {
        let appended = log
            .append("w", &event("u1", id, 2 + i as i64), None)
            .await
            .unwrap_or_else(|e| panic!("append {id} after the restart: {e}"));
        assert!(!appended.duplicate, "{id}");
    }
    let again = log
        .append("w", &event("u1", "before", 1), None)
        .await
        .expect("append");
    assert!(again.duplicate, "the marker survived the restart");
    assert_eq!(again.offset, first.offset);
}
