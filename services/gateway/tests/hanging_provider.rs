//! A webhook receiver that takes the connection and never answers. The send a user-state
//! partition asks for gets one attempt, ended by the adapter's call timeout or the caller's
//! deadline, and is then deferred to the retry queue, whose retries follow the adapter's whole
//! policy. Without a retry queue every send tries the whole policy.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::time::Duration;

use beckon_core::{Clock, Ts};
use beckon_gateway::events::MESSAGE_FAILED;
use beckon_gateway::grpc::GatewayService;
use beckon_gateway::inbox::Inbox;
use beckon_gateway::policy::{BreakerConfig, RetryPolicy};
use beckon_gateway::webhook::{self, WebhookConfig};
use beckon_gateway::{Gateway, GatewayError, MemoryRetryQueue, RetryQueue, RetryQueuePolicy};
use beckon_gateway::{MemorySink, Secret};
use beckon_proto::v1::{OutboundMessage, SendRequest};
use beckon_testkit::Hanging;
use support::{TestDeps, message, test_deps};

/// Attempts the webhook's policy allows per send.
const ATTEMPTS: usize = 3;

/// A webhook channel to `hanging`, whose calls time out after `timeout`.
fn channel(hanging: &Hanging, timeout: Duration, t: &TestDeps) -> webhook::WebhookChannel {
    let mut config = WebhookConfig::new(
        hanging.url("/hooks").parse().expect("url"),
        Secret::new("whsec-hang-0d1e"),
    );
    config.timeout = timeout;
    config.policy.retry = RetryPolicy {
        max_attempts: ATTEMPTS as u32,
        ..RetryPolicy::default()
    };
    // Out of the way: these tests count attempts, not the breaker's refusals.
    config.policy.breaker = BreakerConfig {
        failure_threshold: 1_000,
        cool_down: Duration::from_secs(60),
    };
    webhook::channel(config, t.deps.clone()).unwrap()
}

fn queued(channel: webhook::WebhookChannel, t: &TestDeps) -> (Gateway, Arc<dyn RetryQueue>) {
    let queue: Arc<dyn RetryQueue> = Arc::new(MemoryRetryQueue::new());
    let gateway = Gateway::new()
        .with("webhook", Arc::new(channel))
        .with_retry_queue(
            queue.clone(),
            RetryQueuePolicy::default(),
            Arc::new(t.clock.clone()),
            Arc::new(t.sink.clone()),
        );
    (gateway, queue)
}

#[tokio::test]
async fn the_first_send_makes_one_attempt_then_waits_in_the_queue() {
    let hanging = Hanging::start().await;
    let t = test_deps();
    let (gateway, queue) = queued(channel(&hanging, Duration::from_millis(100), &t), &t);

    let delivery = gateway
        .send(&message("webhook", "k-hang-1", "ada"))
        .await
        .unwrap();
    assert!(delivery.deferred, "{delivery:?}");
    assert_eq!(
        hanging.attempts("k-hang-1"),
        1,
        "one attempt, then deferred"
    );
    assert!(t.sleeper.slept().is_empty(), "no backoff held the caller");
    assert_eq!(queue.waiting().await.unwrap(), 1);

    // The queue's retry is not held to one attempt: the adapter's policy applies there.
    let now = t.clock.now();
    t.clock.advance_to(Ts(now.0 + 5_000));
    let pass = gateway.redeliver_due().await.unwrap();
    assert_eq!((pass.retried, pass.sent), (1, 0), "{pass:?}");
    assert_eq!(hanging.attempts("k-hang-1"), 1 + ATTEMPTS);
    assert_eq!(queue.waiting().await.unwrap(), 1);

    // The message may still go out: no journey hears of a failure.
    assert!(
        t.sink.named(MESSAGE_FAILED).is_empty(),
        "{:?}",
        t.sink.events()
    );
}

#[tokio::test]
async fn without_a_queue_the_first_send_tries_the_whole_policy() {
    let hanging = Hanging::start().await;
    let t = test_deps();
    let channel = channel(&hanging, Duration::from_millis(100), &t);
    let gateway = Gateway::new().with("webhook", Arc::new(channel));

    let err = gateway
        .send(&message("webhook", "k-hang-2", "bob"))
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Unavailable { .. }), "{err:?}");
    assert_eq!(hanging.attempts("k-hang-2"), ATTEMPTS);
    assert_eq!(
        t.sleeper.slept().len(),
        ATTEMPTS - 1,
        "backoff between attempts"
    );
}

/// The adapter's own timeout is far longer than the caller waits: the caller's deadline ends
/// the attempt, and the message is deferred in time to say so.
#[tokio::test]
async fn a_callers_deadline_ends_the_attempt_and_the_answer_is_deferred() {
    let hanging = Hanging::start().await;
    let t = test_deps();
    let (gateway, queue) = queued(channel(&hanging, Duration::from_secs(600), &t), &t);
    let inbox = Arc::new(Inbox::new(
        t.deps.clock.clone(),
        beckon_core::Duration::hours(24),
        50,
    ));
    let service = GatewayService::new(gateway, inbox).with_outcomes(Arc::new(MemorySink::new()));
    let addr = support::grpc::serve(service).await;
    let mut client = support::grpc::client(addr).await;

    let mut request = tonic::Request::new(SendRequest {
        workspace: "acme".into(),
        message: Some(OutboundMessage {
            idempotency_key: "k-hang-3".into(),
            user_id: "cy".into(),
            channel: "webhook".into(),
            journey: "cart-reminder".into(),
            step: "nudge".into(),
            body: "Your cart is waiting.".into(),
            ..Default::default()
        }),
    });
    // What a user-state partition gives each send.
    request.set_timeout(Duration::from_secs(2));
    let answer = client.send(request).await.unwrap().into_inner();

    assert_eq!(answer.outcome, "deferred", "{answer:?}");
    assert_eq!(hanging.attempts("k-hang-3"), 1);
    assert_eq!(queue.waiting().await.unwrap(), 1);
}
