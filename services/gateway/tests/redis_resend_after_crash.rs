//! Two gateway processes share idempotency keys in Redis. The first dies after the provider
//! accepted a message and before the key was recorded; the retry on the second delivers the
//! message once: again through a provider that drops repeated keys, not at all through one
//! that cannot.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use beckon_core::OutboundMessage;
use beckon_gateway::{Channel, Delivery, Gateway, GatewayError};
use futures::future::BoxFuture;
use support::{message, redis_server};
use tokio::sync::mpsc;

/// A provider outside both gateways: it counts requests and the messages it delivered, and
/// can hang after delivering, as when the gateway dies before reading the answer.
struct Provider {
    dedupes: bool,
    requests: AtomicUsize,
    delivered: Mutex<Vec<String>>,
    hang: AtomicBool,
    accepted: mpsc::UnboundedSender<()>,
}

impl Provider {
    fn new(dedupes: bool) -> (Arc<Provider>, mpsc::UnboundedReceiver<()>) {
        let (accepted, rx) = mpsc::unbounded_channel();
        let provider = Provider {
            dedupes,
            requests: AtomicUsize::new(0),
            delivered: Mutex::new(Vec::new()),
            hang: AtomicBool::new(true),
            accepted,
        };
        (Arc::new(provider), rx)
    }

    fn delivered(&self) -> Vec<String> {
        self.delivered.lock().unwrap().clone()
    }
}

impl Channel for Provider {
    fn provider(&self) -> &str {
        "fake"
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Delivery, GatewayError>> {
        Box::pin(async move {
            self.requests.fetch_add(1, Ordering::SeqCst);
            let key = message.idempotency_key.clone();
            let repeat = self.delivered.lock().unwrap().contains(&key);
            if !(repeat && self.dedupes) {
                self.delivered.lock().unwrap().push(key.clone());
            }
            let _ = self.accepted.send(());
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            Ok(Delivery {
                provider_id: format!("fake-{key}"),
                duplicate: false,
                deferred: false,
            })
        })
    }

    fn resends_safely(&self) -> bool {
        self.dedupes
    }
}

/// A gateway process: its own Redis connection, the shared provider.
async fn process(server: &beckon_testkit::RedisServer, provider: &Arc<Provider>) -> Gateway {
    Gateway::new()
        .with_key_store(redis_server::key_store(server).await)
        .with("webhook", provider.clone())
}

/// Runs a send on `first` and kills it once the provider has accepted the message.
async fn crash_mid_send(
    first: Gateway,
    msg: &OutboundMessage,
    accepted: &mut mpsc::UnboundedReceiver<()>,
) {
    let in_flight = {
        let msg = msg.clone();
        tokio::spawn(async move { first.send(&msg).await })
    };
    accepted.recv().await.unwrap();
    in_flight.abort();
    assert!(in_flight.await.unwrap_err().is_cancelled());
}

#[tokio::test]
async fn a_deduplicating_provider_gets_the_retry_and_delivers_once() {
    let server = redis_server::server();
    let (provider, mut accepted) = Provider::new(true);
    let msg = message("webhook", "k-redis-crash-1", "ada");

    crash_mid_send(process(&server, &provider).await, &msg, &mut accepted).await;
    provider.hang.store(false, Ordering::SeqCst);

    let second = process(&server, &provider).await;
    let delivery = second.send(&msg).await.unwrap();
    assert!(!delivery.duplicate);
    assert_eq!(
        provider.requests.load(Ordering::SeqCst),
        2,
        "the retry reached it"
    );
    assert_eq!(
        provider.delivered(),
        vec!["k-redis-crash-1"],
        "delivered once"
    );

    // The key is recorded in Redis: a third process answers from it without a request.
    let third = process(&server, &provider).await;
    let again = third.send(&msg).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.provider_id, "fake-k-redis-crash-1");
    assert_eq!(provider.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_provider_without_dedupe_is_not_sent_the_retry() {
    let server = redis_server::server();
    let (provider, mut accepted) = Provider::new(false);
    let msg = message("webhook", "k-redis-crash-2", "ada");

    crash_mid_send(process(&server, &provider).await, &msg, &mut accepted).await;
    provider.hang.store(false, Ordering::SeqCst);

    let second = process(&server, &provider).await;
    let err = second.send(&msg).await.unwrap_err();
    assert!(matches!(err, GatewayError::InDoubt { .. }), "{err:?}");
    assert_eq!(provider.requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        provider.delivered(),
        vec!["k-redis-crash-2"],
        "delivered once"
    );
}
