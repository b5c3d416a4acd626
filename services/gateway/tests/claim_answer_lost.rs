//! A send's claim is written but its answer is lost, and the deferral fails too, so the
//! caller gets an error and sends again. The claim in Redis is under the first attempt's
//! token: the resend takes it over and the message goes out once, instead of finding its own
//! first attempt in doubt and never going out at all. The same holds when the caller stops
//! waiting while the claim is on its way (a gRPC deadline drops the `Send` handler); once a
//! provider may have the message, a resend finds it in doubt instead.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use beckon_core::OutboundMessage;
use beckon_gateway::keys::{Claim, KeyStore, SendKey};
use beckon_gateway::redis_retry::RedisRetryQueue;
use beckon_gateway::retry_queue::{RetryQueue, RetryQueuePolicy};
use beckon_gateway::{Channel, Delivery, Gateway, GatewayError};
use beckon_testkit::RedisServer;
use futures::future::BoxFuture;
use redis::aio::ConnectionManagerConfig;
use support::{message, redis_server, test_deps};

/// A provider that records every message it is given.
#[derive(Default)]
struct Recorded {
    delivered: Mutex<Vec<String>>,
}

impl Channel for Recorded {
    fn provider(&self) -> &str {
        "recorded"
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Delivery, GatewayError>> {
        Box::pin(async move {
            self.delivered
                .lock()
                .unwrap()
                .push(message.idempotency_key.clone());
            Ok(Delivery {
                provider_id: format!("p-{}", message.idempotency_key),
                duplicate: false,
                deferred: false,
            })
        })
    }
}

/// What becomes of the answer to the first claim, which Redis has written.
#[derive(Clone, Copy)]
enum FirstAnswer {
    /// Lost on the way back: the gateway hears a timeout.
    Lost,
    /// Never comes: the caller stops waiting first, as a gRPC deadline drops a `Send`.
    NeverComes,
}

/// The Redis key store, except for the answer to its first claim.
struct FirstClaim<K> {
    store: Arc<K>,
    first: FirstAnswer,
    answered_once: AtomicBool,
    written: tokio::sync::Notify,
}

impl<K> FirstClaim<K> {
    fn new(store: Arc<K>, first: FirstAnswer) -> FirstClaim<K> {
        FirstClaim {
            store,
            first,
            answered_once: AtomicBool::new(false),
            written: tokio::sync::Notify::new(),
        }
    }
}

impl<K: KeyStore> KeyStore for FirstClaim<K> {
    fn claim<'a>(
        &'a self,
        key: SendKey<'a>,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Claim, GatewayError>> {
        Box::pin(async move {
            let claim = self.store.claim(key, token).await;
            if self.answered_once.swap(true, Ordering::SeqCst) {
                return claim;
            }
            assert!(matches!(claim, Ok(Claim::New)), "{claim:?}");
            self.written.notify_one();
            match self.first {
                FirstAnswer::Lost => Err(GatewayError::KeyStore("timed out".into())),
                FirstAnswer::NeverComes => std::future::pending().await,
            }
        })
    }

    fn complete<'a>(
        &'a self,
        key: SendKey<'a>,
        provider_id: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        self.store.complete(key, provider_id)
    }

    fn release<'a>(
        &'a self,
        key: SendKey<'a>,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        self.store.release(key, token)
    }

    fn forget_user<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        self.store.forget_user(workspace, user)
    }
}

/// With the claim of `message` in Redis and in flight, a gateway of another process finds the
/// message in doubt, while `gateway`, which holds the claim's token, takes it over and
/// delivers it, once.
async fn in_doubt_elsewhere_taken_over_here<K: KeyStore>(
    gateway: &Gateway,
    store: &Arc<K>,
    provider: &Arc<Recorded>,
    message: &OutboundMessage,
) {
    let other = Gateway::new()
        .with_key_store(store.clone())
        .with("webhook", provider.clone());
    let doubt = other.send(message).await.unwrap_err();
    assert!(matches!(doubt, GatewayError::InDoubt { .. }), "{doubt:?}");

    let resent = gateway.send(message).await.unwrap();
    assert!(!resent.deferred && !resent.duplicate, "{resent:?}");
    let delivered = provider.delivered.lock().unwrap().clone();
    assert_eq!(delivered, std::slice::from_ref(&message.idempotency_key));
}

#[tokio::test]
async fn a_resend_takes_over_the_claim_whose_answer_was_lost() {
    let server = RedisServer::start().unwrap();
    let store = redis_server::key_store(&server).await;
    let keys = Arc::new(FirstClaim::new(store, FirstAnswer::Lost));

    // The retry queue's Redis is gone, so the failed attempt cannot be deferred.
    let mut gone = RedisServer::start().unwrap();
    let config =
        ConnectionManagerConfig::new().set_response_timeout(Some(StdDuration::from_millis(200)));
    let queue_conn = redis::Client::open(gone.url())
        .unwrap()
        .get_connection_manager_with_config(config)
        .await
        .unwrap();
    let queue: Arc<dyn RetryQueue> = Arc::new(RedisRetryQueue::new(queue_conn, gone.namespace()));
    gone.kill();

    let provider = Arc::new(Recorded::default());
    let t = test_deps();
    let gateway = Gateway::new()
        .with_key_store(keys.clone())
        .with("webhook", provider.clone())
        .with_retry_queue(
            queue,
            RetryQueuePolicy::default(),
            Arc::new(t.clock.clone()),
            Arc::new(t.sink.clone()),
        );

    let welcome = message("webhook", "k-welcome", "ada");
    let failed = gateway.send(&welcome).await.unwrap_err();
    assert!(failed.is_retryable(), "{failed:?}");
    assert!(provider.delivered.lock().unwrap().is_empty());

    // The caller's resend holds the token, takes the claim over and delivers, once.
    in_doubt_elsewhere_taken_over_here(&gateway, &keys.store, &provider, &welcome).await;
    let again = gateway.send(&welcome).await.unwrap();
    assert!(again.duplicate, "{again:?}");
    assert_eq!(provider.delivered.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn sends_of_one_key_in_one_process_go_one_at_a_time() {
    let server = RedisServer::start().unwrap();
    let keys = redis_server::key_store(&server).await;
    let provider = Arc::new(Recorded::default());
    let gateway = Gateway::new()
        .with_key_store(keys)
        .with("webhook", provider.clone());

    // Twenty sends of one message at once: one goes out, the others are answered from the
    // store, none finds another in flight and calls the message in doubt.
    let welcome = message("webhook", "k-once", "ada");
    let sends = (0..20).map(|_| gateway.send(&welcome));
    let answers = futures::future::join_all(sends).await;
    let answers: Vec<Delivery> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(answers.iter().filter(|d| !d.duplicate).count(), 1);
    assert_eq!(*provider.delivered.lock().unwrap(), ["k-once"]);
}

#[tokio::test]
async fn a_send_dropped_while_its_claim_is_answered_leaves_the_claim_to_the_resend() {
    let server = RedisServer::start().unwrap();
    let store = redis_server::key_store(&server).await;
    let keys = Arc::new(FirstClaim::new(store, FirstAnswer::NeverComes));
    let provider = Arc::new(Recorded::default());
    let gateway = Gateway::new()
        .with_key_store(keys.clone())
        .with("webhook", provider.clone());

    // The claim is written and the send dropped before it hears so.
    let welcome = message("webhook", "k-dropped", "ada");
    let first = tokio::spawn({
        let (gateway, welcome) = (gateway.clone(), welcome.clone());
        async move { gateway.send(&welcome).await }
    });
    keys.written.notified().await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert!(provider.delivered.lock().unwrap().is_empty());

    // Anyone else finds the message in doubt; the same process's resend takes it over.
    in_doubt_elsewhere_taken_over_here(&gateway, &keys.store, &provider, &welcome).await;
}

/// A provider that never answers its first send: the caller stops waiting with the message
/// possibly on its way.
struct FirstSendHangs {
    recorded: Recorded,
    started: tokio::sync::Notify,
    hung_once: AtomicBool,
}

impl Channel for FirstSendHangs {
    fn provider(&self) -> &str {
        "hangs"
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Delivery, GatewayError>> {
        Box::pin(async move {
            let delivered = self.recorded.send(message).await;
            if !self.hung_once.swap(true, Ordering::SeqCst) {
                self.started.notify_one();
                std::future::pending::<()>().await;
            }
            delivered
        })
    }
}

#[tokio::test]
async fn a_send_dropped_at_its_provider_leaves_the_message_in_doubt() {
    let server = RedisServer::start().unwrap();
    let keys = redis_server::key_store(&server).await;
    let provider = Arc::new(FirstSendHangs {
        recorded: Recorded::default(),
        started: tokio::sync::Notify::new(),
        hung_once: AtomicBool::new(false),
    });
    let gateway = Gateway::new()
        .with_key_store(keys)
        .with("webhook", provider.clone());

    let welcome = message("webhook", "k-maybe-sent", "ada");
    let first = tokio::spawn({
        let (gateway, welcome) = (gateway.clone(), welcome.clone());
        async move { gateway.send(&welcome).await }
    });
    provider.started.notified().await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());

    // The provider may have the message: the resend must not send it a second time.
    let resent = gateway.send(&welcome).await.unwrap_err();
    assert!(matches!(resent, GatewayError::InDoubt { .. }), "{resent:?}");
    assert_eq!(
        *provider.recorded.delivered.lock().unwrap(),
        ["k-maybe-sent"]
    );
}
