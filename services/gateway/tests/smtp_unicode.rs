//! Email through a real SMTP server (aiosmtpd on 127.0.0.1): Unicode survives the trip,
//! unsubscribe headers are present, 4xx answers are retried and 5xx answers are final.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use beckon_gateway::email::{self, SmtpConfig, SmtpSecurity};
use beckon_gateway::events::{MESSAGE_FAILED, MESSAGE_SENT};
use beckon_gateway::{Channel, GatewayError, MemoryRecipients, Secret};
use mail_parser::MessageParser;
use support::{message, test_deps};
use unicode_normalization::UnicodeNormalization;

const UNSUB_SECRET: &str = "unsub-signing-key";

fn config(port: u16) -> SmtpConfig {
    let mut config = SmtpConfig::new(
        "127.0.0.1",
        port,
        "Beckon Shop <shop@beckon.test>",
        url::Url::parse("https://links.beckon.test/unsubscribe").unwrap(),
        Secret::new(UNSUB_SECRET),
    );
    config.security = SmtpSecurity::None;
    config
}

fn nfc(text: &str) -> String {
    text.nfc().collect()
}

#[tokio::test]
async fn unicode_subject_and_body_arrive_intact() {
    let server = support::smtp::start().await;
    let t = test_deps();
    let recipients = MemoryRecipients::new();
    recipients.set_email("acme", "u-uni", "anna@example.test");
    let channel =
        email::channel(config(server.port), Arc::new(recipients), t.deps.clone()).unwrap();

    // Emoji, Cyrillic, CJK, Arabic, and a decomposed "é" (e + U+0301) that NFC composes.
    let subject = "Votre panier 🛒 vous attend — Ваша корзина ждёт, 東京 ✨ cafe\u{301}";
    let body = "Привет, Анна! 👋\nВы оставили товары в корзине.\n\
                東京の新作 🍣 と مرحبا بك — naïve cafe\u{301} résumé 🧾";
    let mut msg = message("email", "k-unicode-1", "u-uni");
    msg.subject = Some(subject.to_string());
    msg.body = body.to_string();

    let delivery = channel.send(&msg).await.unwrap();

    let received = server.messages();
    assert_eq!(received.len(), 1);
    let parsed = MessageParser::default().parse(&received[0]).unwrap();

    assert_eq!(nfc(parsed.subject().unwrap()), nfc(subject));
    // Text parts travel in MIME canonical form, with CRLF line ends; undo only that.
    let text = parsed.body_text(0).unwrap().replace("\r\n", "\n");
    let (text_body, footer) = text.split_once("\n\n--\n").unwrap();
    assert_eq!(nfc(text_body).as_bytes(), nfc(body).as_bytes());
    assert!(footer.starts_with("Unsubscribe: https://links.beckon.test/unsubscribe?token="));

    let html = parsed.body_html(0).unwrap().replace("\r\n", "\n");
    assert!(nfc(&html).contains(&nfc(&body.replace('\n', "<br>\n"))));

    // One-click unsubscribe: the link carries a token that verifies to this user.
    let list_unsubscribe = parsed.header_raw("List-Unsubscribe").unwrap().trim();
    let link = list_unsubscribe
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix('>'))
        .unwrap();
    let link = url::Url::parse(link).unwrap();
    let token = link
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(
        email::verify_unsubscribe_token(&Secret::new(UNSUB_SECRET), &token),
        Some(("acme".to_string(), "u-uni".to_string()))
    );
    assert_eq!(
        parsed.header_raw("List-Unsubscribe-Post").unwrap().trim(),
        "List-Unsubscribe=One-Click"
    );

    // The Message-ID is derived from the idempotency key.
    assert_eq!(
        format!("<{}>", parsed.message_id().unwrap()),
        delivery.provider_id
    );
    assert!(delivery.provider_id.ends_with("@beckon.test>"));

    // The Date header comes from the injected clock, not the machine's.
    let date = parsed.date().unwrap();
    assert_eq!(date.to_timestamp() * 1_000, support::START.0);
    assert_eq!(t.sink.named(MESSAGE_SENT).len(), 1);
}

#[tokio::test]
async fn transient_smtp_answers_are_retried() {
    let server = support::smtp::start().await;
    let t = test_deps();
    let recipients = MemoryRecipients::new();
    recipients.set_email("acme", "u-busy", "busy@example.test");
    let channel =
        email::channel(config(server.port), Arc::new(recipients), t.deps.clone()).unwrap();

    channel
        .send(&message("email", "k-busy", "u-busy"))
        .await
        .unwrap();

    assert_eq!(
        server.messages().len(),
        1,
        "delivered once, on the third try"
    );
    assert_eq!(t.sleeper.slept().len(), 2);
    assert_eq!(t.sink.named(MESSAGE_SENT).len(), 1);
}

#[tokio::test]
async fn permanent_smtp_answers_are_final() {
    let server = support::smtp::start().await;
    let t = test_deps();
    let recipients = MemoryRecipients::new();
    recipients.set_email("acme", "u-gone", "gone@example.test");
    let channel =
        email::channel(config(server.port), Arc::new(recipients), t.deps.clone()).unwrap();

    let err = channel
        .send(&message("email", "k-gone", "u-gone"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, GatewayError::Rejected { ref reason, .. } if reason == "smtp 550"),
        "{err:?}"
    );
    assert!(server.messages().is_empty());
    assert!(t.sleeper.slept().is_empty(), "a 5xx is not retried");

    let failed = t.sink.named(MESSAGE_FAILED);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].properties["reason"], "smtp 550");
    assert_eq!(failed[0].properties["retryable"], false);
}

#[tokio::test]
async fn a_user_without_an_address_is_not_sent_to() {
    let t = test_deps();
    let recipients = Arc::new(MemoryRecipients::new());
    // No server: the lookup fails before any connection is made.
    let channel = email::channel(config(9), recipients, t.deps.clone()).unwrap();

    let err = channel
        .send(&message("email", "k-none", "nobody"))
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::NoRecipient { .. }), "{err:?}");
    assert_eq!(
        t.sink.named(MESSAGE_FAILED)[0].properties["reason"],
        "no_recipient"
    );
}

#[test]
fn config_debug_hides_secrets() {
    let mut cfg = config(25);
    cfg.username = Some("mailer".into());
    cfg.password = Some(Secret::new("smtp-password-9"));
    let text = format!("{cfg:?}");
    assert!(
        !text.contains("smtp-password-9") && !text.contains(UNSUB_SECRET),
        "{text}"
    );
}
