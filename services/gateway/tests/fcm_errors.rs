//! FCM HTTP v1 against a fake on 127.0.0.1: OAuth with a service-account JWT, notification
//! and data messages, and FCM's error answers.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use beckon_core::Ts;
use beckon_gateway::events::{DEVICE_TOKEN_INVALID, MESSAGE_SENT};
use beckon_gateway::fcm::{self, FcmChannel, FcmConfig, ServiceAccount};
use beckon_gateway::recipients::platform;
use beckon_gateway::{Channel, DeviceRegistry, GatewayError, MemoryDevices};
use serde_json::json;
use support::fcm::{FakeFcm, FcmAnswer, PROJECT};
use support::{START, TestDeps, message, test_deps};

struct Setup {
    fake: FakeFcm,
    t: TestDeps,
    devices: MemoryDevices,
    channel: FcmChannel,
}

async fn setup() -> Setup {
    let t = test_deps();
    let fake = support::fcm::start(t.clock.clone()).await;
    let config = FcmConfig::new(
        fake.base.clone(),
        fake.token_url.clone(),
        fake.account.clone(),
    );
    let devices = MemoryDevices::new();
    let channel = fcm::channel(config, Arc::new(devices.clone()), t.deps.clone()).unwrap();
    Setup {
        fake,
        t,
        devices,
        channel,
    }
}

async fn tokens(devices: &MemoryDevices, user: &str) -> Vec<String> {
    devices.tokens("acme", user, platform::FCM).await
}

#[tokio::test]
async fn notification_message_is_sent_with_an_oauth_token() {
    let s = setup().await;
    s.devices
        .register("acme", "u1", platform::FCM, "fcm-token-a");

    let delivery = s
        .channel
        .send(&message("push", "k-n1", "u1"))
        .await
        .unwrap();
    assert_eq!(
        delivery.provider_id,
        format!("projects/{PROJECT}/messages/0:11")
    );

    let sends = s.fake.sends();
    assert_eq!(sends.len(), 1);
    let (access, body) = &sends[0];
    assert_eq!(access, "ya29.fake-1");
    assert_eq!(
        body["message"]["notification"],
        json!({ "title": "Still thinking it over?", "body": "Your cart is waiting." })
    );
    assert_eq!(body["message"]["token"], "fcm-token-a");
    assert_eq!(body["message"]["data"]["beckon_key"], "k-n1");
    assert_eq!(s.t.sink.named(MESSAGE_SENT).len(), 1);
}

#[tokio::test]
async fn data_messages_carry_string_values_only() {
    let s = setup().await;
    s.devices
        .register("acme", "u2", platform::FCM, "fcm-token-b");
    let mut msg = message("push", "k-data", "u2");
    msg.title = None;
    msg.body = json!({ "cart_id": "c-1", "items": 3, "refresh": true }).to_string();

    s.channel.send(&msg).await.unwrap();
    let body = &s.fake.sends()[0].1;
    assert!(body["message"].get("notification").is_none());
    assert_eq!(body["message"]["data"]["cart_id"], "c-1");
    assert_eq!(body["message"]["data"]["items"], "3");
    assert_eq!(body["message"]["data"]["refresh"], "true");
}

#[tokio::test]
async fn the_access_token_is_cached_until_near_expiry() {
    let s = setup().await;
    s.devices
        .register("acme", "u3", platform::FCM, "fcm-token-c");

    // The token lives 3599 s; with a five-minute margin it is replaced after 54:59.
    for (i, minutes) in [0, 20, 54, 55].into_iter().enumerate() {
        s.t.clock.advance_to(Ts(START.0 + minutes * 60_000));
        s.channel
            .send(&message("push", &format!("k-c{i}"), "u3"))
            .await
            .unwrap();
    }
    let used: Vec<String> = s.fake.sends().into_iter().map(|(a, _)| a).collect();
    assert_eq!(
        used,
        vec!["ya29.fake-1", "ya29.fake-1", "ya29.fake-1", "ya29.fake-2"]
    );
    assert_eq!(s.fake.tokens_issued(), 2);
}

#[tokio::test]
async fn a_refused_access_token_is_replaced_and_the_message_resent() {
    let s = setup().await;
    s.devices
        .register("acme", "u4", platform::FCM, "fcm-token-d");
    s.fake.script("fcm-token-d", &[FcmAnswer::Unauthenticated]);

    s.channel
        .send(&message("push", "k-reauth", "u4"))
        .await
        .unwrap();
    let used: Vec<String> = s.fake.sends().into_iter().map(|(a, _)| a).collect();
    assert_eq!(used, vec!["ya29.fake-1", "ya29.fake-2"]);
    assert!(s.t.sleeper.slept().is_empty());
}

#[tokio::test]
async fn unregistered_and_invalid_tokens_remove_the_device() {
    let s = setup().await;
    for token in ["gone-token", "bad-token", "good-token"] {
        s.devices.register("acme", "u5", platform::FCM, token);
    }
    s.fake.script("gone-token", &[FcmAnswer::Unregistered]);
    s.fake.script("bad-token", &[FcmAnswer::InvalidToken]);

    s.channel
        .send(&message("push", "k-prune", "u5"))
        .await
        .unwrap();
    assert_eq!(tokens(&s.devices, "u5").await, vec!["good-token"]);

    let invalid = s.t.sink.named(DEVICE_TOKEN_INVALID);
    let reasons: Vec<_> = invalid
        .iter()
        .map(|e| e.properties["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        vec![json!("UNREGISTERED"), json!("INVALID_ARGUMENT")]
    );
    assert!(s.t.sleeper.slept().is_empty());
}

#[tokio::test]
async fn an_invalid_argument_about_another_field_keeps_the_device() {
    let s = setup().await;
    s.devices
        .register("acme", "u6", platform::FCM, "kept-token");
    s.fake.script("kept-token", &[FcmAnswer::InvalidOtherField]);

    let err = s
        .channel
        .send(&message("push", "k-field", "u6"))
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Rejected { .. }), "{err:?}");
    assert_eq!(tokens(&s.devices, "u6").await, vec!["kept-token"]);
    assert!(s.t.sink.named(DEVICE_TOKEN_INVALID).is_empty());
}

#[tokio::test]
async fn quota_and_unavailability_are_retried_and_never_remove() {
    let s = setup().await;
    s.devices
        .register("acme", "u7", platform::FCM, "busy-token");
    s.fake.script(
        "busy-token",
        &[FcmAnswer::QuotaExceeded, FcmAnswer::Unavailable],
    );

    s.channel
        .send(&message("push", "k-quota", "u7"))
        .await
        .unwrap();
    assert_eq!(s.fake.sends().len(), 3);
    assert_eq!(s.t.sleeper.slept().len(), 2);

    s.fake.script("busy-token", &[FcmAnswer::Unavailable; 4]);
    let err = s
        .channel
        .send(&message("push", "k-quota-2", "u7"))
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(tokens(&s.devices, "u7").await, vec!["busy-token"]);
    assert!(s.t.sink.named(DEVICE_TOKEN_INVALID).is_empty());
}

#[test]
fn service_account_debug_hides_the_private_key() {
    let account = ServiceAccount::from_json(
        r#"{"project_id":"p","client_email":"a@p.iam","private_key_id":"k1",
            "private_key":"-----BEGIN PRIVATE KEY-----\nSECRETSTUFF\n-----END PRIVATE KEY-----"}"#,
    )
    .unwrap();
    let text = format!("{account:?}");
    assert!(!text.contains("SECRETSTUFF"), "{text}");
    assert!(ServiceAccount::from_json("{}").is_err());
}
