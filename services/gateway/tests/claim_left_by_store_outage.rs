//! The idempotency key store goes away between a send's claim and its release: the attempt
//! reached no provider (the store it needed was down), and the claim stays in Redis. The
//! deferred entry keeps the claim's token, so once Redis is back the retry takes the claim
//! over and the message goes out, exactly once; a repeat of it is answered from the store.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::{Arc, Mutex};

use beckon_core::{Clock, OutboundMessage, Ts};
use beckon_gateway::retry_queue::{MemoryRetryQueue, RetryQueue, RetryQueuePolicy};
use beckon_gateway::{Channel, Delivery, Gateway, GatewayError};
use beckon_testkit::{Fsync, Options, RedisServer};
use futures::future::BoxFuture;
use support::{message, redis_server, test_deps};

/// A channel whose first attempt needs the store and finds it gone: it stops the test's
/// redis-server (a real outage, so the release that follows fails for real) and fails the way
/// a contact lookup on a dead store fails. Later attempts deliver and are counted.
struct NeedsTheStore {
    server: Arc<Mutex<RedisServer>>,
    delivered: Mutex<Vec<String>>,
    outage_done: Mutex<bool>,
}

impl Channel for NeedsTheStore {
    fn provider(&self) -> &str {
        "store-bound"
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Delivery, GatewayError>> {
        Box::pin(async move {
            let mut outage_done = self.outage_done.lock().unwrap();
            if !*outage_done {
                *outage_done = true;
                self.server.lock().unwrap().kill();
                return Err(GatewayError::Unavailable {
                    provider: "store-bound".into(),
                    reason: "contacts not read: the store is down".into(),
                });
            }
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

#[tokio::test]
async fn a_claim_left_by_an_attempt_that_reached_no_provider_is_taken_over() {
    // Every write fsynced, so the claim written before the outage is there after it.
    let server = RedisServer::start_own(Options::aof(Fsync::Always)).unwrap();
    let keys = redis_server::key_store(&server).await;
    let server = Arc::new(Mutex::new(server));
    let channel = Arc::new(NeedsTheStore {
        server: server.clone(),
        delivered: Mutex::new(Vec::new()),
        outage_done: Mutex::new(false),
    });

    let t = test_deps();
    let queue: Arc<dyn RetryQueue> = Arc::new(MemoryRetryQueue::new());
    let gateway = Gateway::new()
        .with_key_store(keys.clone())
        .with("webhook", channel.clone())
        .with_retry_queue(
            queue.clone(),
            RetryQueuePolicy::default(),
            Arc::new(t.clock.clone()),
            Arc::new(t.sink.clone()),
        );

    let welcome = message("webhook", "k-welcome", "ada");
    let first = gateway.send(&welcome).await.unwrap();
    assert!(first.deferred, "{first:?}");
    assert!(channel.delivered.lock().unwrap().is_empty());

    // The claim outlived the outage: in flight, under the attempt's token.
    server.lock().unwrap().restart().unwrap();
    let name = keys.key_name(beckon_gateway::SendKey::of(&welcome));
    let held: Option<String> = {
        let mut con = server.lock().unwrap().connection().unwrap();
        redis::cmd("GET").arg(&name).query(&mut con).unwrap()
    };
    let held = held.expect("the claim was left in Redis");
    assert!(held.starts_with("i:"), "{held}");

    // A send of the same message by anyone else still finds it in doubt.
    let other = Gateway::new()
        .with_key_store(keys.clone())
        .with("webhook", channel.clone());
    let doubt = other.send(&welcome).await.unwrap_err();
    assert!(matches!(doubt, GatewayError::InDoubt { .. }), "{doubt:?}");

    // The retry holds the token, takes the claim over and delivers.
    t.clock.advance_to(Ts(t.clock.now().0 + 10 * 60_000));
    let pass = gateway.redeliver_due().await.unwrap();
    assert_eq!(pass.sent, 1, "{pass:?}");
    assert_eq!(*channel.delivered.lock().unwrap(), ["k-welcome"]);
    assert_eq!(queue.waiting().await.unwrap(), 0);

    // Delivered for good: a repeat is answered from the store and sends nothing.
    let again = gateway.send(&welcome).await.unwrap();
    assert!(again.duplicate, "{again:?}");
    assert_eq!(channel.delivered.lock().unwrap().len(), 1);
    let done: Option<String> = {
        let mut con = server.lock().unwrap().connection().unwrap();
        redis::cmd("GET").arg(&name).query(&mut con).unwrap()
    };
    assert_eq!(done.as_deref(), Some("d:p-k-welcome"));
}
