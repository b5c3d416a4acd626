//! Webhooks against a receiver on 127.0.0.1 that verifies the signature as a customer would.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use beckon_core::{Clock, Ts, VirtualClock};
use beckon_gateway::events::{MESSAGE_FAILED, MESSAGE_SENT};
use beckon_gateway::policy::{BreakerConfig, BreakerState, RateLimit};
use beckon_gateway::webhook::{self, SignatureError, WebhookConfig};
use beckon_gateway::{Channel, GatewayError, Secret};
use bytes::Bytes;
use support::{message, serve, test_deps};

const SECRET: &str = "whsec-test-7d1f";

/// A request as received: (signature header, idempotency key, body).
type Request = (String, String, Bytes);

/// An answer: status and optional `Retry-After` seconds.
type Answer = (u16, Option<u64>);

#[derive(Clone, Default)]
struct Receiver {
    clock: VirtualClock,
    /// Statuses to answer with, in order; 200 once they run out.
    script: Arc<Mutex<VecDeque<Answer>>>,
    /// Every request that arrived: (signature header, idempotency key, body).
    requests: Arc<Mutex<Vec<Request>>>,
    verified: Arc<Mutex<usize>>,
}

async fn receive(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let signature = headers
        .get("beckon-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    rx.requests
        .lock()
        .unwrap()
        .push((signature.clone(), key, body.clone()));

    let window = Duration::from_secs(300);
    if webhook::verify(SECRET.as_bytes(), &signature, &body, rx.clock.now(), window).is_err() {
        return (StatusCode::UNAUTHORIZED, HeaderMap::new());
    }
    *rx.verified.lock().unwrap() += 1;

    let (status, retry_after) = rx.script.lock().unwrap().pop_front().unwrap_or((200, None));
    let mut out = HeaderMap::new();
    if let Some(secs) = retry_after {
        out.insert("retry-after", secs.to_string().parse().unwrap());
    }
    (StatusCode::from_u16(status).unwrap(), out)
}

async fn receiver(clock: VirtualClock, script: &[Answer]) -> (Receiver, url::Url) {
    let rx = Receiver {
        clock,
        script: Arc::new(Mutex::new(script.iter().copied().collect())),
        ..Receiver::default()
    };
    let router = axum::Router::new()
        .route("/hooks/beckon", axum::routing::post(receive))
        .with_state(rx.clone());
    let addr = serve(router).await;
    let url = url::Url::parse(&format!("http://{addr}/hooks/beckon")).unwrap();
    (rx, url)
}

fn config(url: url::Url, secret: &str) -> WebhookConfig {
    WebhookConfig::new(url, Secret::new(secret))
}

#[tokio::test]
async fn signed_message_is_verified_and_accepted() {
    let t = test_deps();
    let (rx, url) = receiver(t.clock.clone(), &[]).await;
    let channel = webhook::channel(config(url, SECRET), t.deps.clone()).unwrap();

    let msg = message("webhook", "k-signed-1", "u1");
    let delivery = channel.send(&msg).await.unwrap();
    assert_eq!(delivery.provider_id, "k-signed-1");

    let requests = rx.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(*rx.verified.lock().unwrap(), 1);
    let (signature, key, body) = &requests[0];
    assert_eq!(key, "k-signed-1");
    assert!(signature.starts_with(&format!("t={},v1=", support::START.0 / 1_000)));

    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["id"], "k-signed-1");
    assert_eq!(json["user_id"], "u1");
    assert_eq!(json["journey"], "cart-reminder");
    assert_eq!(json["body"], "Your cart is waiting.");

    let sent = t.sink.named(MESSAGE_SENT);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].user, "u1");
    assert_eq!(sent[0].properties["provider"], "webhook");
}

#[tokio::test]
async fn a_captured_request_cannot_be_replayed_later() {
    let t = test_deps();
    let (rx, url) = receiver(t.clock.clone(), &[]).await;
    let channel = webhook::channel(config(url, SECRET), t.deps.clone()).unwrap();
    channel
        .send(&message("webhook", "k-replay", "u1"))
        .await
        .unwrap();

    let (signature, _, body) = rx.requests.lock().unwrap()[0].clone();
    let window = Duration::from_secs(300);
    let later = Ts(support::START.0 + 301_000);
    assert_eq!(
        webhook::verify(SECRET.as_bytes(), &signature, &body, later, window),
        Err(SignatureError::OutsideWindow)
    );
    let mut tampered = body.to_vec();
    tampered[2] ^= 1;
    assert_eq!(
        webhook::verify(
            SECRET.as_bytes(),
            &signature,
            &tampered,
            support::START,
            window
        ),
        Err(SignatureError::Mismatch)
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_final() {
    let t = test_deps();
    let (rx, url) = receiver(t.clock.clone(), &[]).await;
    let channel = webhook::channel(config(url, "not-the-secret"), t.deps.clone()).unwrap();

    let err = channel
        .send(&message("webhook", "k-bad", "u1"))
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Rejected { ref reason, .. } if reason == "http 401"));
    assert_eq!(rx.requests.lock().unwrap().len(), 1, "a 4xx is not retried");
    assert_eq!(*rx.verified.lock().unwrap(), 0);

    let failed = t.sink.named(MESSAGE_FAILED);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].properties["retryable"], false);
    assert_eq!(failed[0].properties["reason"], "http 401");
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_with_backoff() {
    let t = test_deps();
    let script = [(429, Some(3)), (503, None), (500, None)];
    let (rx, url) = receiver(t.clock.clone(), &script).await;
    let channel = webhook::channel(config(url, SECRET), t.deps.clone()).unwrap();

    let delivery = channel
        .send(&message("webhook", "k-retry", "u1"))
        .await
        .unwrap();
    assert!(!delivery.duplicate);

    let requests = rx.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 4);
    assert!(requests.iter().all(|(_, key, _)| key == "k-retry"));

    // The first wait is the receiver's Retry-After; the next ones back off with jitter
    // between half and all of 200 ms * 2^(n-1).
    let slept = t.sleeper.slept();
    assert_eq!(slept.len(), 3);
    assert_eq!(slept[0], Duration::from_secs(3));
    assert!(slept[1] >= Duration::from_millis(200) && slept[1] <= Duration::from_millis(400));
    assert!(slept[2] >= Duration::from_millis(400) && slept[2] <= Duration::from_millis(800));
    assert_eq!(t.sink.named(MESSAGE_SENT).len(), 1);
}

#[tokio::test]
async fn client_errors_are_final() {
    let t = test_deps();
    let (rx, url) = receiver(t.clock.clone(), &[(404, None), (422, None)]).await;
    let channel = webhook::channel(config(url, SECRET), t.deps.clone()).unwrap();

    for key in ["k-404", "k-422"] {
        let err = channel
            .send(&message("webhook", key, "u1"))
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::Rejected { .. }), "{err:?}");
    }
    assert_eq!(rx.requests.lock().unwrap().len(), 2);
    assert!(t.sleeper.slept().is_empty());
}

/// The provider may take the message later: the send fails retryably and nothing is reported
/// as failed, so a journey waiting for `Message Failed` does not move on yet.
#[tokio::test]
async fn persistent_failure_is_retryable_and_reported_to_no_journey() {
    let t = test_deps();
    let script = [(500, None); 10];
    let (rx, url) = receiver(t.clock.clone(), &script).await;
    let mut cfg = config(url, SECRET);
    cfg.policy.breaker.failure_threshold = 100;
    let channel = webhook::channel(cfg, t.deps.clone()).unwrap();

    let err = channel
        .send(&message("webhook", "k-down", "u1"))
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(
        rx.requests.lock().unwrap().len(),
        4,
        "max_attempts is 4 by default"
    );
    assert!(
        t.sink.named(MESSAGE_FAILED).is_empty(),
        "{:?}",
        t.sink.events()
    );
    assert!(t.sink.events().is_empty(), "{:?}", t.sink.events());
}

#[tokio::test]
async fn the_circuit_opens_then_probes_after_the_cool_down() {
    let t = test_deps();
    let script = [(503, None); 3];
    let (rx, url) = receiver(t.clock.clone(), &script).await;
    let mut cfg = config(url, SECRET);
    cfg.policy.breaker = BreakerConfig {
        failure_threshold: 3,
        cool_down: Duration::from_secs(60),
    };
    let channel = webhook::channel(cfg, t.deps.clone()).unwrap();

    let err = channel
        .send(&message("webhook", "k-c1", "u1"))
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(rx.requests.lock().unwrap().len(), 3);
    assert!(matches!(channel.breaker_state(), BreakerState::Open { .. }));

    // While open, nothing reaches the provider.
    let err = channel
        .send(&message("webhook", "k-c2", "u1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, GatewayError::Unavailable { ref reason, .. } if reason == "circuit open")
    );
    assert_eq!(rx.requests.lock().unwrap().len(), 3);

    // After the cool-down one probe goes through; it succeeds and closes the circuit.
    t.clock.advance_to(Ts(t.clock.now().0 + 60_000));
    channel
        .send(&message("webhook", "k-c3", "u1"))
        .await
        .unwrap();
    assert_eq!(
        channel.breaker_state(),
        BreakerState::Closed { failures: 0 }
    );
    assert_eq!(rx.requests.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn the_rate_limit_spaces_sends() {
    let t = test_deps();
    let (rx, url) = receiver(t.clock.clone(), &[]).await;
    let mut cfg = config(url, SECRET);
    cfg.policy.rate_limit = RateLimit {
        per_second: 2.0,
        burst: 1,
    };
    let channel = webhook::channel(cfg, t.deps.clone()).unwrap();

    for i in 0..3 {
        channel
            .send(&message("webhook", &format!("k-rate-{i}"), "u1"))
            .await
            .unwrap();
    }
    assert_eq!(rx.requests.lock().unwrap().len(), 3);
    assert_eq!(
        t.sleeper.slept(),
        vec![Duration::from_millis(500), Duration::from_millis(500)]
    );
}

#[test]
fn config_debug_hides_the_secret() {
    let cfg = config(url::Url::parse("http://127.0.0.1:9/h").unwrap(), SECRET);
    let text = format!("{cfg:?}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.contains("***"));
}
