//! Shared helpers of the event log tests.

#![allow(dead_code)]

use std::sync::Arc;

use beckon_core::{Event, EventKind, Props, Ts, VirtualClock};
use beckon_ingest::endpoint::IngestEndpoint;
use beckon_ingest::grpc::IngestService;
use beckon_ingest::log::{LogConfig, MemoryLog, RedisLog};
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_testkit::RedisServer;
use redis::aio::ConnectionManager;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};

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

/// Serves `service` over gRPC on a loopback port of its own, as `serve ingest` does (behind
/// its endpoint's size checks), and answers a client connected to it.
pub async fn serve_ingest(service: IngestService) -> IngestClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let server = Server::builder()
        .add_service(IngestEndpoint::new(service))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    IngestClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}
