//! Forgetting a user erases the user's inbox and idempotency keys, and nothing of anyone
//! else's: afterwards no key of the user is left in Redis (checked with SCAN).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use beckon_core::Duration;
use beckon_gateway::inbox::Inbox;
use beckon_gateway::{Gateway, RecordingChannel, forget_user};
use support::{message, redis_server, test_deps};

#[tokio::test]
async fn forgetting_a_user_leaves_no_key_of_theirs() {
    let server = redis_server::server();
    let t = test_deps();
    let inbox = Arc::new(Inbox::new(t.deps.clock.clone(), Duration::hours(24), 50));
    let gateway = Gateway::new()
        .with_key_store(redis_server::key_store(&server).await)
        .with("push", Arc::new(RecordingChannel::new()))
        .with("in_app", inbox.clone());

    // Keys name their user, so a leftover of Ada's would show in the SCAN below.
    for user in ["ada", "bob"] {
        for (channel, n) in [("push", 1), ("push", 2), ("in_app", 3)] {
            let key = format!("{user}-key-{n}");
            gateway.send(&message(channel, &key, user)).await.unwrap();
        }
    }
    let before = redis_server::all_keys(&server).await;
    assert_eq!(before.iter().filter(|k| k.contains("ada")).count(), 4);

    forget_user(&gateway, &inbox, "acme", "ada").await.unwrap();

    let after = redis_server::all_keys(&server).await;
    assert!(after.iter().all(|k| !k.contains("ada")), "{after:?}");
    assert_eq!(
        after.iter().filter(|k| k.contains("bob")).count(),
        4,
        "{after:?}"
    );
    assert!(inbox.list("acme", "ada").is_empty());
    assert_eq!(inbox.list("acme", "bob").len(), 1);

    // Forgotten means forgotten: the same key is a new send now.
    let again = gateway
        .send(&message("push", "ada-key-1", "ada"))
        .await
        .unwrap();
    assert!(!again.duplicate);
}
