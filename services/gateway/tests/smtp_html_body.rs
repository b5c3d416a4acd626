//! An email body rendered as HTML goes out as the HTML part unchanged, and its text part is
//! the same content with the tags stripped.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use beckon_gateway::email::{self, SmtpConfig, SmtpSecurity};
use beckon_gateway::{Channel, MemoryRecipients, Secret};
use mail_parser::MessageParser;
use support::{message, test_deps};

#[tokio::test]
async fn an_html_body_is_sent_as_html_with_a_derived_text_part() {
    let server = support::smtp::start().await;
    let t = test_deps();
    let recipients = MemoryRecipients::new();
    recipients.set_email("acme", "ada", "ada@example.test");
    let mut config = SmtpConfig::new(
        "127.0.0.1",
        server.port,
        "Beckon Shop <shop@beckon.test>",
        url::Url::parse("https://links.beckon.test/unsubscribe").unwrap(),
        Secret::new("unsub-key"),
    );
    config.security = SmtpSecurity::None;
    let channel = email::channel(config, Arc::new(recipients), t.deps.clone()).unwrap();

    let mut msg = message("email", "k-html-1", "ada");
    msg.subject = Some("Your cart".into());
    msg.body = "<p>Hello Ada</p><p>Your cart is <a href=\"https://shop.test/cart\">waiting\
                </a> &amp; so are we.</p>"
        .into();
    channel.send(&msg).await.unwrap();

    let received = server.messages();
    assert_eq!(received.len(), 1);
    let parsed = MessageParser::default().parse(&received[0]).unwrap();

    let html = parsed.body_html(0).unwrap().replace("\r\n", "\n");
    assert!(html.contains(&msg.body), "{html}");
    assert!(!html.contains("&lt;p&gt;"), "{html}");
    assert!(html.contains(">Unsubscribe</a>"), "{html}");

    let text = parsed.body_text(0).unwrap().replace("\r\n", "\n");
    let (text_body, footer) = text.split_once("\n\n--\n").unwrap();
    assert_eq!(
        text_body,
        "Hello Ada\n\nYour cart is waiting (https://shop.test/cart) & so are we."
    );
    assert!(footer.starts_with("Unsubscribe: https://links.beckon.test/unsubscribe?token="));
}
