//! A real tonic server for the gateway service on a free port of 127.0.0.1, and a client.

use std::net::SocketAddr;

use beckon_gateway::grpc::GatewayService;
use beckon_proto::v1::gateway_client::GatewayClient;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};

/// Serves `service` until the test ends; returns where it listens.
pub async fn serve(service: GatewayService) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    // A listener of our own ignores the builder's TCP_NODELAY; without it, a small stream
    // item can wait for the peer's delayed ACK.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    addr
}

pub async fn client(addr: SocketAddr) -> GatewayClient<Channel> {
    GatewayClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the gateway")
}
