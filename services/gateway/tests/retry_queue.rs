//! A send the provider cannot take is deferred to the gateway's retry queue instead of failing,
//! retried with backoff on the virtual clock, delivered once when the provider recovers, and
//! given up on with a final `Message Failed` after `give_up_after`. The same script runs over
//! the in-memory queue and the Redis one, against a webhook receiver on 127.0.0.1.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use beckon_core::{Clock, Duration, OutboundMessage, Ts, VirtualClock};
use beckon_gateway::events::{
    DEFERRED_MESSAGE_SENT, MESSAGE_DEFERRED, MESSAGE_FAILED, MESSAGE_SENT, MESSAGE_WITHDRAWN,
};
use beckon_gateway::policy::{BreakerConfig, RetryPolicy};
use beckon_gateway::retry_queue::Relevance;
use beckon_gateway::webhook::{self, WebhookConfig};
use beckon_gateway::{
    Gateway, KeyStore, MemoryKeyStore, MemoryRetryQueue, RedisRetryQueue, RetryQueue,
    RetryQueuePolicy, Secret,
};
use futures::future::BoxFuture;
use support::{message, redis_server, serve, test_deps};

/// A webhook receiver that answers 503 while `down`, and counts the requests it accepted by
/// idempotency key.
#[derive(Clone, Default)]
struct Receiver {
    down: Arc<AtomicBool>,
    /// Refuses every request for good (404) while set.
    gone: Arc<AtomicBool>,
    accepted: Arc<Mutex<HashMap<String, usize>>>,
    refused: Arc<Mutex<usize>>,
}

impl Receiver {
    fn accepted(&self, key: &str) -> usize {
        self.accepted.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

async fn receive(State(rx): State<Receiver>, headers: HeaderMap) -> StatusCode {
    if rx.gone.load(Ordering::SeqCst) {
        return StatusCode::NOT_FOUND;
    }
    if rx.down.load(Ordering::SeqCst) {
        *rx.refused.lock().unwrap() += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    *rx.accepted.lock().unwrap().entry(key).or_default() += 1;
    StatusCode::OK
}

struct Rig {
    gateway: Gateway,
    queue: Arc<dyn RetryQueue>,
    receiver: Receiver,
    clock: VirtualClock,
    sink: beckon_gateway::MemorySink,
}

fn policy(give_up_after: Duration) -> RetryQueuePolicy {
    RetryQueuePolicy {
        backoff: RetryPolicy {
            max_attempts: u32::MAX,
            base_delay: std::time::Duration::from_secs(2),
            max_delay: std::time::Duration::from_secs(60),
        },
        give_up_after,
        hold: Duration::from_millis(30_000),
        batch: 16,
    }
}

async fn rig(queue: Arc<dyn RetryQueue>, keys: Arc<dyn KeyStore>, give_up_after: Duration) -> Rig {
    let t = test_deps();
    let receiver = Receiver::default();
    let router = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(receiver.clone());
    let addr = serve(router).await;
    let mut config = WebhookConfig::new(
        url::Url::parse(&format!("http://{addr}/hooks")).unwrap(),
        Secret::new("whsec-retry-3f9a"),
    );
    config.policy.retry.max_attempts = 2;
    config.policy.breaker = BreakerConfig {
        failure_threshold: 3,
        cool_down: std::time::Duration::from_secs(20),
    };
    let channel = webhook::channel(config, t.deps.clone()).unwrap();
    let gateway = Gateway::new()
        .with_key_store(keys)
        .with("webhook", Arc::new(channel))
        .with_retry_queue(
            queue.clone(),
            policy(give_up_after),
            Arc::new(t.clock.clone()),
            Arc::new(t.sink.clone()),
        );
    Rig {
        gateway,
        queue,
        receiver,
        clock: t.clock,
        sink: t.sink,
    }
}

impl Rig {
    fn advance(&self, ms: i64) {
        let now = self.clock.now();
        self.clock.advance_to(Ts(now.0 + ms));
    }
}

/// The provider is down for a while, then recovers.
async fn deferred_then_delivered_once(rig: Rig) {
    rig.receiver.down.store(true, Ordering::SeqCst);
    let ada = message("webhook", "k-ada-1", "ada");

    let first = rig.gateway.send(&ada).await.unwrap();
    assert!(first.deferred, "{first:?}");
    assert!(!first.duplicate);
    // The batch that made the send is redelivered while the message waits: still one entry.
    let again = rig.gateway.send(&ada).await.unwrap();
    assert!(again.deferred);
    assert_eq!(rig.queue.waiting().await.unwrap(), 1);

    // The user's record hears of the deferral once, with the provider's answer.
    let deferred = rig.sink.named(MESSAGE_DEFERRED);
    assert_eq!(deferred.len(), 1, "{deferred:?}");
    assert_eq!(deferred[0].user, "ada");
    assert_eq!(deferred[0].properties["idempotency_key"], "k-ada-1");
    assert_eq!(deferred[0].properties["step"], "nudge");
    assert_eq!(
        deferred[0].properties["reason"],
        "webhook is unavailable: http 503"
    );

    // Not due yet: the first retry waits between one and two seconds.
    assert_eq!(rig.gateway.redeliver_due().await.unwrap().total(), 0);

    // Due, and the provider is still down: back in the queue with a longer wait.
    rig.advance(2_500);
    let pass = rig.gateway.redeliver_due().await.unwrap();
    assert_eq!((pass.retried, pass.sent), (1, 0), "{pass:?}");
    assert_eq!(rig.queue.waiting().await.unwrap(), 1);

    // The provider recovers; once the circuit's cool-down has passed, the message goes out.
    rig.receiver.down.store(false, Ordering::SeqCst);
    let mut sent = 0;
    for _ in 0..20 {
        rig.advance(5_000);
        sent += rig.gateway.redeliver_due().await.unwrap().sent;
        if sent > 0 {
            break;
        }
    }
    assert_eq!(sent, 1);
    assert_eq!(rig.queue.waiting().await.unwrap(), 0);
    assert_eq!(rig.receiver.accepted("k-ada-1"), 1);

    // A late redelivery of the batch finds the key delivered: nothing goes out twice.
    let late = rig.gateway.send(&ada).await.unwrap();
    assert!(late.duplicate && !late.deferred, "{late:?}");
    assert_eq!(rig.receiver.accepted("k-ada-1"), 1);
    assert_eq!(rig.sink.named(MESSAGE_SENT).len(), 1);
    // ... and of the retry that sent it.
    let later = rig.sink.named(DEFERRED_MESSAGE_SENT);
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!(later[0].properties["idempotency_key"], "k-ada-1");
    assert!(later[0].properties["attempts"].as_u64().unwrap() >= 2);
    // Neither the deferral nor the failed retries were failures to report: the message went.
    assert!(
        rig.sink.named(MESSAGE_FAILED).is_empty(),
        "{:?}",
        rig.sink.named(MESSAGE_FAILED)
    );
}

/// The provider never recovers.
async fn given_up_after_its_time(rig: Rig) {
    rig.receiver.down.store(true, Ordering::SeqCst);
    let bob = message("webhook", "k-bob-1", "bob");
    assert!(rig.gateway.send(&bob).await.unwrap().deferred);

    let mut given_up = 0;
    let mut retried = 0;
    for _ in 0..100 {
        rig.advance(10_000);
        let pass = rig.gateway.redeliver_due().await.unwrap();
        given_up += pass.given_up;
        retried += pass.retried;
        if given_up > 0 {
            break;
        }
    }
    assert_eq!(given_up, 1);
    assert!(retried >= 2, "retried {retried} times before giving up");
    assert_eq!(rig.queue.waiting().await.unwrap(), 0);
    assert_eq!(rig.receiver.accepted("k-bob-1"), 0);

    // Only the giving up is reported; none of the retries before it.
    let finals = rig.sink.named(MESSAGE_FAILED);
    assert_eq!(finals.len(), 1, "one final failure: {finals:?}");
    assert_eq!(finals[0].properties["retryable"], false);
    assert_eq!(finals[0].user, "bob");
    assert_eq!(finals[0].properties["idempotency_key"], "k-bob-1");
    let reason = finals[0].properties["reason"].as_str().unwrap();
    assert!(reason.starts_with("gave up after"), "{reason}");
    assert_eq!(rig.sink.named(MESSAGE_DEFERRED).len(), 1);
    assert!(rig.sink.named(DEFERRED_MESSAGE_SENT).is_empty());
}

/// Says every message of `journey` is no longer wanted.
struct Ended {
    journey: &'static str,
}

impl Relevance for Ended {
    fn withdrawn<'a>(&'a self, message: &'a OutboundMessage) -> BoxFuture<'a, Option<String>> {
        let why = (message.journey == self.journey)
            .then(|| "the journey instance ended: Order Completed".to_string());
        Box::pin(async move { why })
    }
}

/// A message whose journey ended while it waited is dropped unsent, and its user told so.
async fn withdrawn_once_its_journey_ended(rig: Rig) {
    let gateway = rig.gateway.clone().with_relevance(Arc::new(Ended {
        journey: "cart-reminder",
    }));
    rig.receiver.down.store(true, Ordering::SeqCst);
    let dee = message("webhook", "k-dee-1", "dee");
    assert!(gateway.send(&dee).await.unwrap().deferred);

    rig.receiver.down.store(false, Ordering::SeqCst);
    rig.advance(5_000);
    let pass = gateway.redeliver_due().await.unwrap();
    assert_eq!((pass.withdrawn, pass.sent), (1, 0), "{pass:?}");
    assert_eq!(rig.queue.waiting().await.unwrap(), 0);
    assert_eq!(rig.receiver.accepted("k-dee-1"), 0);

    let withdrawn = rig.sink.named(MESSAGE_WITHDRAWN);
    assert_eq!(withdrawn.len(), 1, "{withdrawn:?}");
    assert_eq!(withdrawn[0].user, "dee");
    assert_eq!(withdrawn[0].properties["idempotency_key"], "k-dee-1");
    assert_eq!(
        withdrawn[0].properties["reason"],
        "the journey instance ended: Order Completed"
    );
    assert!(rig.sink.named(MESSAGE_FAILED).is_empty());
    assert!(rig.sink.named(DEFERRED_MESSAGE_SENT).is_empty());
}

/// Forgetting a user takes their deferred sends with them, and no one else's.
async fn forgotten_with_their_user(rig: Rig) {
    rig.receiver.down.store(true, Ordering::SeqCst);
    for (key, user) in [("k-ada-2", "ada"), ("k-ada-3", "ada"), ("k-cy-1", "cy")] {
        assert!(
            rig.gateway
                .send(&message("webhook", key, user))
                .await
                .unwrap()
                .deferred
        );
    }
    assert_eq!(rig.queue.waiting().await.unwrap(), 3);

    rig.queue.forget_user("acme", "ada").await.unwrap();
    assert_eq!(rig.queue.waiting().await.unwrap(), 1);

    rig.receiver.down.store(false, Ordering::SeqCst);
    for _ in 0..20 {
        rig.advance(5_000);
        rig.gateway.redeliver_due().await.unwrap();
    }
    assert_eq!(rig.receiver.accepted("k-cy-1"), 1);
    assert_eq!(rig.receiver.accepted("k-ada-2"), 0);
    assert_eq!(rig.receiver.accepted("k-ada-3"), 0);
}

fn memory() -> (Arc<dyn RetryQueue>, Arc<dyn KeyStore>) {
    (
        Arc::new(MemoryRetryQueue::new()),
        Arc::new(MemoryKeyStore::new()),
    )
}

async fn redis(server: &beckon_testkit::RedisServer) -> (Arc<dyn RetryQueue>, Arc<dyn KeyStore>) {
    let queue = RedisRetryQueue::new(redis_server::connect(server).await, server.namespace());
    (Arc::new(queue), redis_server::key_store(server).await)
}

const HOUR: Duration = Duration(3_600_000);
const MINUTE: Duration = Duration(60_000);

#[tokio::test]
async fn memory_queue_delivers_once_the_provider_recovers() {
    let (queue, keys) = memory();
    deferred_then_delivered_once(rig(queue, keys, HOUR).await).await;
}

#[tokio::test]
async fn redis_queue_delivers_once_the_provider_recovers() {
    let server = redis_server::server();
    let (queue, keys) = redis(&server).await;
    deferred_then_delivered_once(rig(queue, keys, HOUR).await).await;
}

#[tokio::test]
async fn memory_queue_gives_up_with_a_final_failure() {
    let (queue, keys) = memory();
    given_up_after_its_time(rig(queue, keys, MINUTE).await).await;
}

#[tokio::test]
async fn redis_queue_gives_up_with_a_final_failure() {
    let server = redis_server::server();
    let (queue, keys) = redis(&server).await;
    given_up_after_its_time(rig(queue, keys, MINUTE).await).await;
}

/// A deferred message its provider then refuses for good is reported failed once: by the
/// adapter, which reports its own refusals, or by the gateway for a channel that does not.
#[tokio::test]
async fn a_refusal_on_retry_is_reported_failed_once() {
    let (queue, keys) = memory();
    let rig = rig(queue, keys, HOUR).await;
    rig.receiver.down.store(true, Ordering::SeqCst);
    let eve = message("webhook", "k-eve-1", "eve");
    assert!(rig.gateway.send(&eve).await.unwrap().deferred);
    rig.receiver.gone.store(true, Ordering::SeqCst);
    rig.advance(5_000);
    let pass = rig.gateway.redeliver_due().await.unwrap();
    assert_eq!(pass.refused, 1, "{pass:?}");
    let failed = rig.sink.named(MESSAGE_FAILED);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].properties["reason"], "http 404");

    // A channel of the gateway's own kind, which reports nothing itself.
    let t = support::test_deps();
    let queue: Arc<dyn RetryQueue> = Arc::new(MemoryRetryQueue::new());
    let gateway = Gateway::new()
        .with("sms", Arc::new(RefusesOnRetry::default()))
        .with_retry_queue(
            queue.clone(),
            policy(HOUR),
            Arc::new(t.clock.clone()),
            Arc::new(t.sink.clone()),
        );
    assert!(
        gateway
            .send(&message("sms", "k-fay-1", "fay"))
            .await
            .unwrap()
            .deferred
    );
    let now = t.clock.now();
    t.clock.advance_to(Ts(now.0 + 5_000));
    let pass = gateway.redeliver_due().await.unwrap();
    assert_eq!(pass.refused, 1, "{pass:?}");
    let failed = t.sink.named(MESSAGE_FAILED);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].user, "fay");
    assert_eq!(failed[0].properties["retryable"], false);
    assert_eq!(
        failed[0].properties["reason"],
        "sms-test rejected the message: number disconnected"
    );
    assert_eq!(queue.waiting().await.unwrap(), 0);
}

/// Unavailable on its first call, refusing for good after.
#[derive(Default)]
struct RefusesOnRetry {
    calls: std::sync::atomic::AtomicUsize,
}

impl beckon_gateway::Channel for RefusesOnRetry {
    fn provider(&self) -> &str {
        "sms-test"
    }

    fn send<'a>(
        &'a self,
        _message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<beckon_gateway::Delivery, beckon_gateway::GatewayError>> {
        let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
        Box::pin(async move {
            let provider = "sms-test".to_string();
            Err(if first {
                beckon_gateway::GatewayError::Unavailable {
                    provider,
                    reason: "carrier busy".into(),
                }
            } else {
                beckon_gateway::GatewayError::Rejected {
                    provider,
                    reason: "number disconnected".into(),
                }
            })
        })
    }
}

#[tokio::test]
async fn memory_queue_withdraws_a_message_whose_journey_ended() {
    let (queue, keys) = memory();
    withdrawn_once_its_journey_ended(rig(queue, keys, HOUR).await).await;
}

#[tokio::test]
async fn redis_queue_withdraws_a_message_whose_journey_ended() {
    let server = redis_server::server();
    let (queue, keys) = redis(&server).await;
    withdrawn_once_its_journey_ended(rig(queue, keys, HOUR).await).await;
}

#[tokio::test]
async fn memory_queue_forgets_a_user() {
    let (queue, keys) = memory();
    forgotten_with_their_user(rig(queue, keys, HOUR).await).await;
}

#[tokio::test]
async fn redis_queue_forgets_a_user_and_keeps_nothing_naming_them() {
    let server = redis_server::server();
    let (queue, keys) = redis(&server).await;
    let r = rig(queue, keys.clone(), HOUR).await;
    forgotten_with_their_user(r).await;
    keys.forget_user("acme", "ada").await.unwrap();

    let mut conn = redis_server::connect(&server).await;
    for key in redis_server::all_keys(&server).await {
        assert!(!key.contains("ada"), "{key} names the forgotten user");
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if kind == "hash" {
            let values: Vec<String> = redis::cmd("HVALS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(
                values.iter().all(|v| !v.contains("\"ada\"")),
                "{key} holds the forgotten user"
            );
        }
    }
}

/// Two gateways share the Redis queue: an entry one has taken is hidden from the other for the
/// hold, then offered again (its taker died mid-attempt).
#[tokio::test]
async fn a_taken_entry_is_hidden_for_its_hold() {
    let server = redis_server::server();
    let conn = redis_server::connect(&server).await;
    let queue = RedisRetryQueue::new(conn, server.namespace());
    let entry = beckon_gateway::retry_queue::Deferred {
        message: message("webhook", "k-held", "ada"),
        attempts: 0,
        since: support::START,
        reason: "webhook is unavailable: http 503".into(),
        claim: None,
    };
    let t0 = support::START;
    queue.defer(&entry, t0).await.unwrap();
    queue.defer(&entry, t0).await.unwrap();

    let hold = Duration::from_millis(30_000);
    let taken = queue.take_due(t0, hold, 10).await.unwrap();
    assert_eq!(taken, vec![entry.clone()]);
    assert!(
        queue
            .take_due(Ts(t0.0 + 29_999), hold, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        queue.take_due(Ts(t0.0 + 30_000), hold, 10).await.unwrap(),
        vec![entry]
    );
}
