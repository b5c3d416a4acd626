//! Shared helpers of the event log tests.

#![allow(dead_code)]

use std::sync::Arc;

use beckon_core::{Event, EventKind, Props, Ts, VirtualClock};
use beckon_ingest::log::{LogConfig, MemoryLog, RedisLog};
use beckon_testkit::RedisServer;
use redis::aio::ConnectionManager;

pub const PARTITIONS: u32 = 4;

pub async fn redis_log(server: &RedisServer) -> RedisLog<ConnectionManager> {
    let client = redis::Client::open(server.url()).expect("client");
    let con = client.get_connection_manager().await.expect("connect");
    RedisLog::new(con, config(server.namespace()))
}

/// The log as `serve` builds it on a single server: one script call for several partitions.
pub async fn spanning_redis_log(server: &RedisServer) -> RedisLog<ConnectionManager> {
    redis_log(server).await.spanning_partitions()
}

pub fn config(namespace: &str) -> LogConfig {
    LogConfig {
        namespace: namespace.to_string(),
        partitions: PARTITIONS,
        max_len: None,
        dedup_ttl_secs: 3600,
    }
}

pub fn memory_log(clock: &VirtualClock) -> MemoryLog {
    MemoryLog::new(Arc::new(clock.clone()), PARTITIONS, 1_000)
}

pub fn event(user: &str, message_id: &str, at: i64) -> Event {
    Event {
        kind: EventKind::Track,
        message_id: message_id.to_string(),
        user: user.to_string(),
        anonymous_id: None,
        name: "Product Added".into(),
        properties: Props::new(),
        traits: Props::new(),
        timestamp: Ts(at),
        previous_id: None,
    }
}
