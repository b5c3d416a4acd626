//! A send retried after the gateway died between the provider's acceptance and the recording
//! of its key is not delivered twice.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use beckon_core::{Clock, VirtualClock};
use beckon_gateway::sms::{self, TwilioConfig};
use beckon_gateway::webhook::{self, WebhookConfig};
use beckon_gateway::{
    Channel, Gateway, GatewayError, MemoryKeyStore, MemoryRecipients, RecordingChannel, Secret,
};
use bytes::Bytes;
use support::{message, test_deps};
use tokio::sync::mpsc;

const SECRET: &str = "whsec-idem";

/// A webhook receiver that honours `Idempotency-Key`: a repeated key is answered 200 and not
/// processed again.
#[derive(Clone)]
struct Receiver {
    clock: VirtualClock,
    processed: Arc<Mutex<HashSet<String>>>,
    requests: Arc<AtomicUsize>,
    hang: Arc<AtomicBool>,
    accepted: mpsc::UnboundedSender<()>,
}

async fn receive(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    rx.requests.fetch_add(1, Ordering::SeqCst);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let window = Duration::from_secs(300);
    let signature = header("beckon-signature");
    if webhook::verify(SECRET.as_bytes(), &signature, &body, rx.clock.now(), window).is_err() {
        return StatusCode::UNAUTHORIZED;
    }

    let first = rx
        .processed
        .lock()
        .unwrap()
        .insert(header("idempotency-key"));
    if first {
        let _ = rx.accepted.send(());
        if rx.hang.load(Ordering::SeqCst) {
            // The work is done; the answer never leaves, as when the sender dies first.
            std::future::pending::<()>().await;
        }
    }
    StatusCode::OK
}

#[tokio::test]
async fn a_webhook_resent_after_a_crash_is_processed_once() {
    let t = test_deps();
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    let rx = Receiver {
        clock: t.clock.clone(),
        processed: Arc::default(),
        requests: Arc::default(),
        hang: Arc::new(AtomicBool::new(true)),
        accepted: accepted_tx,
    };
    let router = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(rx.clone());
    let addr = support::serve(router).await;
    let url = url::Url::parse(&format!("http://{addr}/hook")).unwrap();
    let config = WebhookConfig::new(url, Secret::new(SECRET));

    // The key store outlives the gateway process, as a shared store would.
    let keys = Arc::new(MemoryKeyStore::new());
    let msg = message("webhook", "k-crash-1", "u1");

    let first_process = {
        let channel = Arc::new(webhook::channel(config.clone(), t.deps.clone()).unwrap());
        Gateway::new()
            .with_key_store(keys.clone())
            .with("webhook", channel)
    };
    let in_flight = {
        let msg = msg.clone();
        tokio::spawn(async move { first_process.send(&msg).await })
    };
    accepted.recv().await.unwrap();
    in_flight.abort();
    assert!(in_flight.await.unwrap_err().is_cancelled());

    // A new gateway process with the same key store retries the send.
    rx.hang.store(false, Ordering::SeqCst);
    let second_process = {
        let channel = Arc::new(webhook::channel(config, t.deps.clone()).unwrap());
        Gateway::new()
            .with_key_store(keys.clone())
            .with("webhook", channel)
    };
    let delivery = second_process.send(&msg).await.unwrap();
    assert!(!delivery.duplicate);
    assert_eq!(
        rx.requests.load(Ordering::SeqCst),
        2,
        "the resend reached the receiver"
    );
    assert_eq!(
        rx.processed.lock().unwrap().len(),
        1,
        "and was processed once"
    );

    // Now the key is recorded: a further repeat is answered from the store.
    let again = second_process.send(&msg).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(rx.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_sms_in_doubt_after_a_crash_is_not_sent_again() {
    let t = test_deps();
    let fake = support::twilio::start().await;
    let recipients = MemoryRecipients::new();
    recipients.set_phone("acme", "u1", "+4915112345678");
    let recipients = Arc::new(recipients);
    let config = TwilioConfig::new(
        fake.base.clone(),
        support::twilio::SID,
        Secret::new(support::twilio::TOKEN),
        "+15005550006",
    );
    let keys = Arc::new(MemoryKeyStore::new());
    let msg = message("sms", "k-crash-sms", "u1");

    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    fake.hang_after_accepting(accepted_tx);
    let first_process = {
        let channel = sms::channel(config.clone(), recipients.clone(), t.deps.clone()).unwrap();
        Gateway::new()
            .with_key_store(keys.clone())
            .with("sms", Arc::new(channel))
    };
    let in_flight = {
        let msg = msg.clone();
        tokio::spawn(async move { first_process.send(&msg).await })
    };
    accepted.recv().await.unwrap();
    in_flight.abort();
    let _ = in_flight.await;
    fake.answer_normally();

    // Twilio has no idempotency key: at most once means not sending again.
    let second_process = {
        let channel = sms::channel(config, recipients, t.deps.clone()).unwrap();
        Gateway::new()
            .with_key_store(keys)
            .with("sms", Arc::new(channel))
    };
    let err = second_process.send(&msg).await.unwrap_err();
    assert!(matches!(err, GatewayError::InDoubt { .. }), "{err:?}");
    assert_eq!(fake.received().len(), 1);
}

#[tokio::test]
async fn a_failed_send_releases_its_key_for_a_later_retry() {
    let t = test_deps();
    let fake = support::twilio::start().await;
    let recipients = MemoryRecipients::new();
    recipients.set_phone("acme", "u1", "+4915112345678");
    let config = TwilioConfig::new(
        fake.base.clone(),
        support::twilio::SID,
        Secret::new(support::twilio::TOKEN),
        "+15005550006",
    );
    let channel = sms::channel(config, Arc::new(recipients), t.deps.clone()).unwrap();
    let gateway = Gateway::new().with("sms", Arc::new(channel));
    fake.script("+4915112345678", &[(400, 21610)]);

    let msg = message("sms", "k-release", "u1");
    assert!(gateway.send(&msg).await.is_err());
    let delivery = gateway.send(&msg).await.unwrap();
    assert!(!delivery.duplicate);
    assert_eq!(fake.received().len(), 2);
}

#[tokio::test]
async fn the_recording_channel_still_delivers_each_key_once() {
    let recorder = RecordingChannel::new();
    let gateway = Gateway::new().with("push", Arc::new(recorder.clone()));
    let msg = message("push", "k-rec", "u1");

    let first = gateway.send(&msg).await.unwrap();
    let second = gateway.send(&msg).await.unwrap();
    assert!(!first.duplicate && second.duplicate);
    assert_eq!(first.provider_id, second.provider_id);
    assert_eq!(recorder.messages().len(), 1);
    assert_eq!(recorder.take().len(), 1);
    assert!(recorder.messages().is_empty());
    assert_eq!(recorder.provider(), "recording");
}
