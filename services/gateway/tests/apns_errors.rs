//! APNs over HTTP/2 against a fake on 127.0.0.1 that speaks APNs's protocol and errors.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use beckon_core::{OutboundMessage, Ts};
use beckon_gateway::apns::{self, ApnsChannel, ApnsConfig};
use beckon_gateway::events::{DEVICE_TOKEN_INVALID, MESSAGE_SENT};
use beckon_gateway::recipients::platform;
use beckon_gateway::{Channel, DeviceRegistry, GatewayError, MemoryDevices, Secret};
use serde_json::json;
use support::apns::{FakeApns, KEY_ID, TEAM_ID, TOPIC, device_token};
use support::{START, TestDeps, message, test_deps};

struct Setup {
    fake: FakeApns,
    t: TestDeps,
    devices: MemoryDevices,
    channel: ApnsChannel,
}

async fn setup(configure: impl FnOnce(&mut ApnsConfig)) -> Setup {
    let t = test_deps();
    let fake = support::apns::start(t.clock.clone()).await;
    let mut config = ApnsConfig::new(
        fake.endpoint(),
        TEAM_ID,
        KEY_ID,
        Secret::new(fake.key_pem.clone()),
        TOPIC,
    );
    configure(&mut config);
    let devices = MemoryDevices::new();
    let channel = apns::channel(config, Arc::new(devices.clone()), t.deps.clone()).unwrap();
    Setup {
        fake,
        t,
        devices,
        channel,
    }
}

async fn tokens(devices: &MemoryDevices, user: &str, platform: &str) -> Vec<String> {
    devices.tokens("acme", user, platform).await
}

#[tokio::test]
async fn alert_push_carries_the_apns_headers_and_payload() {
    let s = setup(|_| {}).await;
    let token = device_token(1);
    s.devices.register("acme", "u1", platform::IOS, &token);

    let mut msg = message("push", "k-alert-1", "u1");
    msg.subject = Some("3 items".into());
    let delivery = s.channel.send(&msg).await.unwrap();

    let seen = s.fake.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert!(req.http2);
    assert_eq!(req.token, token);
    assert_eq!(req.headers["apns-push-type"], "alert");
    assert_eq!(req.headers["apns-topic"], TOPIC);
    assert_eq!(req.headers["apns-priority"], "10");
    let expiration = START.0 / 1_000 + 3_600;
    assert_eq!(req.headers["apns-expiration"], expiration.to_string());
    assert_eq!(req.headers["apns-collapse-id"], "cart-reminder.nudge");
    assert_eq!(req.headers["apns-id"], apns::apns_id("k-alert-1", &token));
    assert_eq!(delivery.provider_id, req.headers["apns-id"]);
    assert_eq!(req.iat, START.0 / 1_000);

    assert_eq!(
        req.payload["aps"]["alert"],
        json!({ "title": "Still thinking it over?", "subtitle": "3 items",
                "body": "Your cart is waiting." })
    );
    assert_eq!(req.payload["beckon"]["key"], "k-alert-1");
    assert_eq!(s.t.sink.named(MESSAGE_SENT).len(), 1);
}

#[tokio::test]
async fn bad_and_unregistered_tokens_remove_the_device() {
    let s = setup(|_| {}).await;
    let (bad, gone, good) = (device_token(2), device_token(3), device_token(4));
    for token in [&bad, &gone, &good] {
        s.devices.register("acme", "u2", platform::IOS, token);
    }
    s.fake.script(&bad, &[(400, "BadDeviceToken")]);
    s.fake.script(&gone, &[(410, "Unregistered")]);

    s.channel
        .send(&message("push", "k-prune", "u2"))
        .await
        .unwrap();

    assert_eq!(tokens(&s.devices, "u2", platform::IOS).await, vec![good]);
    assert_eq!(s.fake.seen().len(), 3, "refusals are not retried");
    assert!(s.t.sleeper.slept().is_empty());

    let invalid = s.t.sink.named(DEVICE_TOKEN_INVALID);
    let reasons: Vec<_> = invalid
        .iter()
        .map(|e| e.properties["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        vec![json!("BadDeviceToken"), json!("Unregistered")]
    );
    assert!(
        invalid
            .iter()
            .all(|e| e.user == "u2" && e.properties["platform"] == "ios")
    );
}

#[tokio::test]
async fn a_malformed_token_is_refused_by_apns_and_removed() {
    let s = setup(|_| {}).await;
    s.devices
        .register("acme", "u3", platform::IOS, "not-a-token");

    let err = s
        .channel
        .send(&message("push", "k-malformed", "u3"))
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Rejected { ref reason, .. } if reason == "BadDeviceToken"));
    assert!(tokens(&s.devices, "u3", platform::IOS).await.is_empty());
}

#[tokio::test]
async fn throttling_and_unavailability_are_retried_and_never_remove() {
    let s = setup(|_| {}).await;
    let token = device_token(5);
    s.devices.register("acme", "u4", platform::IOS, &token);
    s.fake.script(
        &token,
        &[(429, "TooManyRequests"), (503, "ServiceUnavailable")],
    );

    s.channel
        .send(&message("push", "k-busy", "u4"))
        .await
        .unwrap();
    assert_eq!(s.fake.seen().len(), 3);
    assert_eq!(s.t.sleeper.slept().len(), 2);

    // Every attempt carries the same apns-id.
    let ids: Vec<_> = s
        .fake
        .seen()
        .iter()
        .map(|r| r.headers["apns-id"].clone())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]));

    s.fake.script(&token, &[(503, "ServiceUnavailable"); 4]);
    let err = s
        .channel
        .send(&message("push", "k-down", "u4"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(tokens(&s.devices, "u4", platform::IOS).await, vec![token]);
    assert!(s.t.sink.named(DEVICE_TOKEN_INVALID).is_empty());
}

#[tokio::test]
async fn the_provider_token_is_reused_then_refreshed_before_it_expires() {
    let s = setup(|_| {}).await;
    let token = device_token(6);
    s.devices.register("acme", "u5", platform::IOS, &token);

    for (i, minutes) in [0, 30, 51, 120].into_iter().enumerate() {
        s.t.clock.advance_to(Ts(START.0 + minutes * 60_000));
        s.channel
            .send(&message("push", &format!("k-jwt-{i}"), "u5"))
            .await
            .unwrap();
    }

    let seen = s.fake.seen();
    assert_eq!(seen.len(), 4, "no request was refused for an expired token");
    assert_eq!(seen[0].jwt, seen[1].jwt, "reused within the refresh period");
    assert_ne!(seen[1].jwt, seen[2].jwt);
    let iats: Vec<i64> = seen.iter().map(|r| r.iat).collect();
    let start = START.0 / 1_000;
    assert_eq!(iats, vec![start, start, start + 51 * 60, start + 120 * 60]);
}

#[tokio::test]
async fn an_expired_provider_token_is_re_signed_and_resent() {
    let s = setup(|_| {}).await;
    let token = device_token(7);
    s.devices.register("acme", "u6", platform::IOS, &token);
    s.fake.script(&token, &[(403, "ExpiredProviderToken")]);

    s.channel
        .send(&message("push", "k-expired", "u6"))
        .await
        .unwrap();
    let seen = s.fake.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0].jwt, seen[1].jwt, "a new token was signed");
    assert!(s.t.sleeper.slept().is_empty(), "resent at once");
    assert_eq!(tokens(&s.devices, "u6", platform::IOS).await, vec![token]);
}

#[tokio::test]
async fn background_push_has_content_available_and_low_priority() {
    let s = setup(|_| {}).await;
    let token = device_token(8);
    s.devices.register("acme", "u7", platform::IOS, &token);

    let mut msg = message("push", "k-bg", "u7");
    msg.title = None;
    msg.body = json!({ "cart_id": "c-42", "refresh": true }).to_string();
    s.channel.send(&msg).await.unwrap();

    let req = &s.fake.seen()[0];
    assert_eq!(req.headers["apns-push-type"], "background");
    assert_eq!(req.headers["apns-priority"], "5");
    assert!(!req.headers.contains_key("apns-collapse-id"));
    assert_eq!(req.payload["aps"], json!({ "content-available": 1 }));
    assert_eq!(req.payload["cart_id"], "c-42");
}

fn live_activity(key: &str, user: &str, body: serde_json::Value) -> OutboundMessage {
    let mut msg = message("live_activity", key, user);
    msg.title = None;
    msg.body = body.to_string();
    msg
}

#[tokio::test]
async fn live_activities_start_update_and_end() {
    let s = setup(|_| {}).await;
    let (start_token, activity_token) = (device_token(9), device_token(10));
    s.devices
        .register("acme", "u8", platform::IOS_PUSH_TO_START, &start_token);
    s.devices
        .register("acme", "u8", platform::IOS_LIVE_ACTIVITY, &activity_token);

    let start = json!({
        "event": "start",
        "content-state": { "status": "packing", "eta_minutes": 40 },
        "attributes-type": "DeliveryAttributes",
        "attributes": { "order_id": "o-7" },
    });
    let update = json!({ "event": "update", "content-state": { "status": "on the way",
                                                                "eta_minutes": 12 } });
    let end = json!({ "event": "end", "content-state": { "status": "delivered",
                                                          "eta_minutes": 0 },
                      "dismissal-date": START.0 / 1_000 + 900 });
    s.channel
        .send(&live_activity("k-la-1", "u8", start))
        .await
        .unwrap();
    s.t.clock.advance_to(Ts(START.0 + 60_000));
    s.channel
        .send(&live_activity("k-la-2", "u8", update))
        .await
        .unwrap();
    s.channel
        .send(&live_activity("k-la-3", "u8", end))
        .await
        .unwrap();

    let seen = s.fake.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].token, start_token);
    assert_eq!(seen[1].token, activity_token);
    assert_eq!(seen[2].token, activity_token);
    for req in &seen {
        assert_eq!(req.headers["apns-push-type"], "liveactivity");
        assert_eq!(
            req.headers["apns-topic"],
            format!("{TOPIC}.push-type.liveactivity")
        );
        assert_eq!(req.headers["apns-priority"], "10");
    }

    let aps: Vec<_> = seen.iter().map(|r| r.payload["aps"].clone()).collect();
    assert_eq!(aps[0]["event"], "start");
    assert_eq!(aps[0]["attributes-type"], "DeliveryAttributes");
    assert_eq!(aps[0]["attributes"]["order_id"], "o-7");
    assert_eq!(aps[0]["timestamp"], START.0 / 1_000);
    assert_eq!(aps[1]["event"], "update");
    assert_eq!(aps[1]["content-state"]["status"], "on the way");
    assert_eq!(aps[1]["timestamp"], START.0 / 1_000 + 60);
    assert_eq!(aps[2]["event"], "end");
    assert_eq!(aps[2]["dismissal-date"], START.0 / 1_000 + 900);
}

#[tokio::test]
async fn a_malformed_live_activity_is_refused_before_any_request() {
    let s = setup(|_| {}).await;
    s.devices
        .register("acme", "u9", platform::IOS_LIVE_ACTIVITY, &device_token(11));

    let msg = live_activity("k-la-bad", "u9", json!({ "event": "pause" }));
    let err = s.channel.send(&msg).await.unwrap_err();
    assert!(
        matches!(err, GatewayError::InvalidArgument { .. }),
        "{err:?}"
    );
    assert!(s.fake.seen().is_empty());
}

#[tokio::test]
async fn oversized_payloads_are_refused_locally() {
    let s = setup(|_| {}).await;
    s.devices
        .register("acme", "u10", platform::IOS, &device_token(12));
    let mut msg = message("push", "k-big", "u10");
    msg.body = "x".repeat(5_000);

    let err = s.channel.send(&msg).await.unwrap_err();
    assert!(
        matches!(err, GatewayError::Rejected { ref reason, .. } if reason == "PayloadTooLarge")
    );
    assert!(s.fake.seen().is_empty());
}

#[test]
fn config_debug_hides_the_signing_key() {
    let config = ApnsConfig::new(
        url::Url::parse("http://127.0.0.1:1").unwrap(),
        TEAM_ID,
        KEY_ID,
        Secret::new("-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMG\n-----END PRIVATE KEY-----"),
        TOPIC,
    );
    let text = format!("{config:?}");
    assert!(!text.contains("MIGHAgEAMBMG"), "{text}");
}
