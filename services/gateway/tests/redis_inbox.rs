//! The Redis inbox: messages per user with expiry (on a virtual clock), list, mark read,
//! dismiss and the per-user cap, all under one hash-tagged key per user that forgetting the
//! user deletes; and a message inserted through one replica is pushed at once to an app
//! subscribed on another.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use beckon_core::{Clock, Duration, VirtualClock};
use beckon_gateway::inbox::InboxStore;
use beckon_gateway::{Channel, RedisInbox, RedisInboxConfig};
use beckon_testkit::RedisServer;
use redis::aio::ConnectionManager;
use support::{START, message, redis_server};

fn later(clock: &VirtualClock, by: Duration) {
    clock.advance_to(clock.now().saturating_add(by));
}

async fn inbox(server: &RedisServer, clock: &VirtualClock) -> RedisInbox<ConnectionManager> {
    let config = RedisInboxConfig {
        namespace: server.namespace().to_string(),
        partitions: 64,
        ttl: Duration::hours(24),
        per_user: 3,
    };
    let pubsub = redis::Client::open(server.url()).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    RedisInbox::start(redis_server::connect(server).await, pubsub, config, clock)
        .await
        .unwrap()
}

#[tokio::test]
async fn messages_are_kept_listed_read_dismissed_capped_and_forgotten() {
    let server = redis_server::server();
    let clock = VirtualClock::new(START);
    let inbox = inbox(&server, &clock).await;

    for key in ["k1", "k2"] {
        let sent = inbox.send(&message("in_app", key, "ada")).await.unwrap();
        assert!(!sent.duplicate);
        later(&clock, Duration::from_millis(60_000));
    }
    let again = inbox.send(&message("in_app", "k1", "ada")).await.unwrap();
    assert!(again.duplicate, "a repeated key is not inserted twice");

    let list = inbox.list("acme", "ada").await.unwrap();
    let ids: Vec<_> = list.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["k2", "k1"], "newest first");
    assert_eq!(list[0].title.as_deref(), Some("Still thinking it over?"));
    assert_eq!(
        list[0].expires,
        list[0].created.saturating_add(Duration::hours(24))
    );

    assert!(inbox.mark_read("acme", "ada", "k1").await.unwrap());
    assert!(!inbox.mark_read("acme", "ada", "nope").await.unwrap());
    let read: Vec<_> = inbox
        .list("acme", "ada")
        .await
        .unwrap()
        .iter()
        .map(|m| m.read)
        .collect();
    assert_eq!(read, [false, true]);
    assert!(inbox.dismiss("acme", "ada", "k2").await.unwrap());
    assert!(!inbox.dismiss("acme", "ada", "k2").await.unwrap());

    // At most three a user: the oldest goes first.
    for key in ["k3", "k4", "k5"] {
        later(&clock, Duration::from_millis(60_000));
        inbox.send(&message("in_app", key, "ada")).await.unwrap();
    }
    let ids: Vec<_> = inbox
        .list("acme", "ada")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, ["k5", "k4", "k3"]);

    // A day later they have all expired, and are neither listed nor readable.
    later(&clock, Duration::hours(24));
    assert!(inbox.list("acme", "ada").await.unwrap().is_empty());
    assert!(!inbox.mark_read("acme", "ada", "k5").await.unwrap());

    // Everything of one user sits under one key, in the user's slot; forgetting deletes it.
    inbox.send(&message("in_app", "k6", "ada")).await.unwrap();
    inbox.send(&message("in_app", "b1", "bob")).await.unwrap();
    let key = inbox.user_key("acme", "ada");
    let layout = beckon_scheduler::keys::Keys::of_user(server.namespace(), "acme", "ada", 64);
    assert_eq!(
        key,
        layout.user_inbox("ada"),
        "the key user-state's ForgetUser deletes"
    );
    let keys = redis_server::all_keys(&server).await;
    assert!(keys.contains(&key), "{keys:?}");
    assert_eq!(inbox.forget_user("acme", "ada").await.unwrap(), 1);
    let keys = redis_server::all_keys(&server).await;
    assert!(!keys.contains(&key), "{keys:?}");
    assert_eq!(inbox.list("acme", "bob").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_message_inserted_on_one_replica_reaches_a_subscriber_on_another() {
    let server = redis_server::server();
    let clock = VirtualClock::new(START);
    let here = inbox(&server, &clock).await;
    let there = inbox(&server, &clock).await;

    let mut ada = there.subscribe("acme", "ada").await.unwrap();
    let mut also_ada = there.subscribe("acme", "ada").await.unwrap();
    let mut bob = there.subscribe("acme", "bob").await.unwrap();

    here.send(&message("in_app", "k1", "ada")).await.unwrap();

    // Pushed, not polled: the subscription wakes on the notification itself.
    let got = ada.next().await.unwrap();
    assert_eq!((got.id.as_str(), got.user_id.as_str()), ("k1", "ada"));
    assert_eq!(also_ada.next().await.unwrap().id, "k1");
    assert!(bob.try_next().is_none());

    // The last subscription of a user leaving unsubscribes; a new one works again.
    drop((ada, also_ada));
    let mut ada = there.subscribe("acme", "ada").await.unwrap();
    here.send(&message("in_app", "k2", "ada")).await.unwrap();
    assert_eq!(ada.next().await.unwrap().id, "k2");
}
