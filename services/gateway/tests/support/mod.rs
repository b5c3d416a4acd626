//! Helpers the integration tests share: a message, injected time, and an HTTP fake server.

#![allow(dead_code, clippy::unwrap_used)]

pub mod apns;
pub mod fcm;
pub mod grpc;
pub mod redis_server;
pub mod smtp;
pub mod twilio;

use std::net::SocketAddr;
use std::sync::Arc;

use beckon_core::{OutboundMessage, Ts, VirtualClock};
use beckon_gateway::{Deps, MemorySink, VirtualSleeper};

/// 2023-11-14T22:13:20Z: a fixed start so tests do not depend on the day they run.
pub const START: Ts = Ts(1_700_000_000_000);

pub struct TestDeps {
    pub deps: Deps,
    pub clock: VirtualClock,
    pub sleeper: VirtualSleeper,
    pub sink: MemorySink,
}

/// A virtual clock at [`START`], a sleeper that moves it, and an in-memory event sink.
pub fn test_deps() -> TestDeps {
    let clock = VirtualClock::new(START);
    let sleeper = VirtualSleeper::new(clock.clone());
    let sink = MemorySink::new();
    let deps = Deps {
        clock: Arc::new(clock.clone()),
        sleeper: Arc::new(sleeper.clone()),
        sink: Arc::new(sink.clone()),
    };
    TestDeps {
        deps,
        clock,
        sleeper,
        sink,
    }
}

pub fn message(channel: &str, key: &str, user: &str) -> OutboundMessage {
    OutboundMessage {
        idempotency_key: key.to_string(),
        workspace: "acme".to_string(),
        user_id: user.to_string(),
        journey: "cart-reminder".to_string(),
        version: 3,
        instance: None,
        step: "nudge".to_string(),
        channel: channel.to_string(),
        at: START,
        title: Some("Still thinking it over?".to_string()),
        subject: None,
        body: "Your cart is waiting.".to_string(),
        to: None,
    }
}

/// Serves `router` on a free port of 127.0.0.1 until the test ends.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// A PEM block around `der`.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;

    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ascii"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}
