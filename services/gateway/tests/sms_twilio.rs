//! SMS through a fake Twilio Messages API on 127.0.0.1.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use beckon_gateway::events::{MESSAGE_FAILED, MESSAGE_SENT};
use beckon_gateway::sms::{self, SmsChannel, TwilioConfig};
use beckon_gateway::{Channel, GatewayError, MemoryRecipients, Secret};
use support::twilio::{FakeTwilio, SID, TOKEN};
use support::{TestDeps, message, test_deps};

async fn setup(token: &str) -> (FakeTwilio, TestDeps, SmsChannel) {
    let fake = support::twilio::start().await;
    let t = test_deps();
    let recipients = MemoryRecipients::new();
    recipients.set_phone("acme", "u1", "+4915112345678");
    recipients.set_phone("acme", "u-bad", "015112345678");
    let mut config = TwilioConfig::new(fake.base.clone(), SID, Secret::new(token), "+15005550006");
    config.status_callback = Some(url::Url::parse("https://hooks.beckon.test/sms").unwrap());
    let channel = sms::channel(config, Arc::new(recipients), t.deps.clone()).unwrap();
    (fake, t, channel)
}

#[tokio::test]
async fn a_message_is_posted_as_a_form_with_basic_auth() {
    let (fake, t, channel) = setup(TOKEN).await;
    let mut msg = message("sms", "k-sms-1", "u1");
    msg.body = "Ihr Warenkorb wartet 🛒".into();

    let delivery = channel.send(&msg).await.unwrap();
    assert_eq!(delivery.provider_id, format!("SM{:032}", 1));

    let received = fake.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["From"], "+15005550006");
    assert_eq!(received[0]["To"], "+4915112345678");
    assert_eq!(received[0]["Body"], "Ihr Warenkorb wartet 🛒");
    assert_eq!(
        received[0]["StatusCallback"],
        "https://hooks.beckon.test/sms"
    );
    assert_eq!(
        t.sink.named(MESSAGE_SENT)[0].properties["provider_id"],
        delivery.provider_id
    );
}

#[tokio::test]
async fn wrong_credentials_are_final() {
    let (fake, t, channel) = setup("wrong-token").await;
    let err = channel
        .send(&message("sms", "k-auth", "u1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, GatewayError::Rejected { ref reason, .. } if reason == "http 401 code 20003"),
        "{err:?}"
    );
    assert!(fake.received().is_empty());
    assert!(t.sleeper.slept().is_empty());
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let (fake, t, channel) = setup(TOKEN).await;
    fake.script("+4915112345678", &[(429, 20429), (503, 0)]);

    channel
        .send(&message("sms", "k-retry", "u1"))
        .await
        .unwrap();
    assert_eq!(fake.received().len(), 3);
    assert_eq!(t.sleeper.slept().len(), 2);
}

#[tokio::test]
async fn an_invalid_number_is_final() {
    let (fake, t, channel) = setup(TOKEN).await;
    let err = channel
        .send(&message("sms", "k-badnum", "u-bad"))
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Rejected { ref reason, .. } if reason.contains("21211")));
    assert!(fake.received().is_empty());
    let failed = t.sink.named(MESSAGE_FAILED);
    assert_eq!(failed[0].properties["retryable"], false);
}

#[tokio::test]
async fn a_user_without_a_number_is_not_sent_to() {
    let (fake, _t, channel) = setup(TOKEN).await;
    let err = channel
        .send(&message("sms", "k-none", "nobody"))
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::NoRecipient { .. }));
    assert!(fake.received().is_empty());
}

#[test]
fn config_debug_hides_the_auth_token() {
    let config = TwilioConfig::new(
        url::Url::parse("http://127.0.0.1:1").unwrap(),
        SID,
        Secret::new(TOKEN),
        "+15005550006",
    );
    assert!(!format!("{config:?}").contains(TOKEN));
}
