//! Shared set-up of the journey service tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use beckon_journey_service::{JourneysService, RedisDefinitions};
use beckon_testkit::RedisServer;
use redis::aio::ConnectionManager;
use tokio::sync::watch;

/// A definitions store on `redis`, and the client it was opened with (for following
/// announcements).
pub async fn redis_store(
    redis: &RedisServer,
) -> (Arc<RedisDefinitions<ConnectionManager>>, redis::Client) {
    let client = redis::Client::open(redis.url()).expect("redis url");
    let conn = ConnectionManager::new(client.clone())
        .await
        .expect("redis connection");
    (
        Arc::new(RedisDefinitions::new(conn, redis.namespace())),
        client,
    )
}

/// Serves `service` on a free loopback port until `stop` turns true.
pub async fn serve_until(service: JourneysService, mut stop: watch::Receiver<bool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )
            .await
            .expect("serve");
    });
    addr
}
