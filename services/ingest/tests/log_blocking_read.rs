//! A blocked reader wakes up when an entry is appended, and an empty wait ends with nothing.

mod support;

use std::time::Duration as StdDuration;

use beckon_core::Duration;
use beckon_ingest::log::{Consumer, EventLog, RedisLog};
use beckon_testkit::RedisServer;
use redis::aio::ConnectionManagerConfig;
use support::{config, event, redis_log};

#[tokio::test]
async fn blocked_reader_gets_the_next_append() {
    let server = RedisServer::start().expect("redis");
    let writer = redis_log(&server).await;
    // The reader's own connection, allowed to wait longer than the block time.
    let client = redis::Client::open(server.url()).expect("client");
    let settings =
        ConnectionManagerConfig::new().set_response_timeout(Some(StdDuration::from_secs(30)));
    let con = client
        .get_connection_manager_with_config(settings)
        .await
        .expect("connect");
    let reader_log = RedisLog::new(con, config(server.namespace()));

    let e = event("u1", "m-1", 1);
    let partition = beckon_core::partition::partition_of("w", "u1", support::PARTITIONS);
    let reader = Consumer::new("w", partition, "user-state", "a");
    reader_log.ensure_group(&reader).await.expect("group");

    let empty = reader_log
        .read(&reader, 10, Duration(50))
        .await
        .expect("read");
    assert!(empty.is_empty());

    let waiting = tokio::spawn(async move { reader_log.read(&reader, 10, Duration(20_000)).await });
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    let appended = writer.append("w", &e, None).await.expect("append");
    let got = waiting.await.expect("join").expect("read");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].offset, appended.offset);
}
