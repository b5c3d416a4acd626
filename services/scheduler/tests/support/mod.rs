//! Shared helpers of the Redis timer tests.

#![allow(dead_code)]

use beckon_core::{Timer, Ts};
use beckon_scheduler::RedisTimers;
use beckon_testkit::RedisServer;
use redis::aio::ConnectionManager;

pub async fn timers(server: &RedisServer, partitions: u32) -> RedisTimers<ConnectionManager> {
    let client = redis::Client::open(server.url()).expect("client");
    let con = client.get_connection_manager().await.expect("connect");
    RedisTimers::new(con, server.namespace(), partitions)
}

pub fn timer(user: &str, id: &str, due: i64) -> Timer {
    Timer {
        id: id.to_string(),
        workspace: "w".into(),
        user: user.to_string(),
        due: Ts(due),
        journey: "cart".into(),
        instance: 1,
        trace: None,
    }
}
