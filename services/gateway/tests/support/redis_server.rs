//! A redis-server of the test's own, and key stores over it.

use std::sync::Arc;

use beckon_core::Duration;
use beckon_gateway::{RedisKeyStore, RedisKeysConfig};
use beckon_testkit::RedisServer;
use redis::aio::ConnectionManager;

/// Starts a server on a free loopback port; it is killed when the value drops.
pub fn server() -> RedisServer {
    RedisServer::start_own(Default::default()).expect("start redis-server")
}

/// A fresh connection, as a separate gateway process would open.
pub async fn connect(server: &RedisServer) -> ConnectionManager {
    let client = redis::Client::open(server.url()).expect("redis url");
    client
        .get_connection_manager()
        .await
        .expect("connect to redis")
}

pub fn config(server: &RedisServer) -> RedisKeysConfig {
    RedisKeysConfig {
        namespace: server.namespace().to_string(),
        partitions: 64,
        ttl: Duration::hours(24),
    }
}

/// A key store with a connection of its own.
pub async fn key_store(server: &RedisServer) -> Arc<RedisKeyStore<ConnectionManager>> {
    Arc::new(RedisKeyStore::new(connect(server).await, config(server)))
}

/// Every key on the server, found by SCAN.
pub async fn all_keys(server: &RedisServer) -> Vec<String> {
    let mut conn = connect(server).await;
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        keys.extend(batch);
        if next == 0 {
            keys.sort();
            return keys;
        }
        cursor = next;
    }
}
