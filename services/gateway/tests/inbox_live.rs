//! The in-app inbox: delivery through the gateway, live subscription, read, dismiss, expiry.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use beckon_core::{Duration, Ts};
use beckon_gateway::Gateway;
use beckon_gateway::inbox::Inbox;
use support::{START, message, test_deps};

fn inbox(t: &support::TestDeps, per_user: usize) -> Arc<Inbox> {
    Arc::new(Inbox::new(
        t.deps.clock.clone(),
        Duration::hours(24),
        per_user,
    ))
}

#[tokio::test]
async fn a_subscriber_gets_new_messages_at_once() {
    let t = test_deps();
    let inbox = inbox(&t, 50);
    let gateway = Gateway::new().with("in_app", inbox.clone());
    let mut mine = inbox.subscribe("acme", "u1");
    let mut theirs = inbox.subscribe("acme", "u2");

    gateway
        .send(&message("in_app", "k-in-1", "u1"))
        .await
        .unwrap();

    // Delivered before the send returned: no waiting involved.
    let got = mine.try_next().unwrap();
    assert_eq!(got.id, "k-in-1");
    assert_eq!(got.body, "Your cart is waiting.");
    assert_eq!(got.expires, Ts(START.0 + 24 * 3_600_000));
    assert!(theirs.try_next().is_none());

    // A repeated key is not a second message.
    let again = gateway
        .send(&message("in_app", "k-in-1", "u1"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert!(mine.try_next().is_none());

    gateway
        .send(&message("in_app", "k-in-2", "u1"))
        .await
        .unwrap();
    assert_eq!(mine.next().await.unwrap().id, "k-in-2");
}

#[tokio::test]
async fn messages_are_listed_read_dismissed_and_expire() {
    let t = test_deps();
    let inbox = inbox(&t, 2);
    let gateway = Gateway::new().with("in_app", inbox.clone());
    for (i, key) in ["k-a", "k-b", "k-c"].into_iter().enumerate() {
        t.clock.advance_to(Ts(START.0 + i as i64 * 1_000));
        gateway.send(&message("in_app", key, "u1")).await.unwrap();
    }

    // Two per user: the oldest went; newest first.
    let ids: Vec<String> = inbox.list("acme", "u1").into_iter().map(|m| m.id).collect();
    assert_eq!(ids, vec!["k-c", "k-b"]);
    assert_eq!(inbox.unread("acme", "u1"), 2);

    assert!(inbox.mark_read("acme", "u1", "k-b"));
    assert!(!inbox.mark_read("acme", "u1", "k-a"));
    assert_eq!(inbox.unread("acme", "u1"), 1);

    assert!(inbox.dismiss("acme", "u1", "k-c"));
    assert!(!inbox.dismiss("acme", "u1", "k-c"));
    let ids: Vec<String> = inbox.list("acme", "u1").into_iter().map(|m| m.id).collect();
    assert_eq!(ids, vec!["k-b"]);

    t.clock.advance_to(Ts(START.0 + 25 * 3_600_000));
    assert!(inbox.list("acme", "u1").is_empty());
}
