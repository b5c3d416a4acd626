//! Forgetting a user erases every key about them (record, aliases, timers, inbox) and their
//! pending outbox entries, and leaves other users alone. Checked with SCAN over all keys.

mod support;

use beckon_core::{Effect, Ts};
use beckon_scheduler::keys::Keys;
use beckon_scheduler::{AsyncTimerStore, RedisTimers};
use beckon_testkit::RedisServer;
use beckon_user_state::StateStore;
use support::{PARTITIONS, all_keys, busy_user, store};

#[tokio::test]
async fn nothing_of_the_user_is_left() {
    let server = RedisServer::start().expect("redis");
    let store = store(&server).await;
    let client = redis::Client::open(server.url()).expect("client");
    let con = client.get_connection_manager().await.expect("connect");
    let timers = RedisTimers::new(con, server.namespace(), PARTITIONS);

    let target = "erase-me@example.com";
    let other = "keep-me";
    let state = busy_user(target, 10);
    let timer = beckon_core::Timer {
        id: "cart:1:wait".into(),
        workspace: "w".into(),
        user: target.into(),
        due: Ts(5_000),
        journey: "cart".into(),
        instance: 1,
        trace: None,
    };
    let effects = [Effect::SetTimer(timer.clone())];
    store
        .commit(&state, 0, &effects, None, None)
        .await
        .expect("commit");
    store.save(&busy_user(other, 3), 0).await.expect("other");
    timers.schedule(&timer).await.expect("timer");
    let mut other_timer = timer.clone();
    other_timer.user = other.into();
    timers.schedule(&other_timer).await.expect("other timer");
    store
        .add_alias("w", "anon-erase-me", target)
        .await
        .expect("alias");
    let inbox = Keys::of_user(server.namespace(), "w", target, PARTITIONS).user_inbox(target);
    let mut con = server.connection().expect("con");
    let _: () = redis::cmd("RPUSH")
        .arg(&inbox)
        .arg("hello")
        .query(&mut con)
        .expect("inbox");

    let exported = store
        .export("w", target)
        .await
        .expect("export")
        .expect("something");
    assert_eq!(exported["aliases"][0], "anon-erase-me");
    assert_eq!(exported["timers"][0]["id"], "cart:1:wait");
    assert_eq!(exported["state"]["user"], target);

    let removed = store.forget("w", target).await.expect("forget");
    // record, alias list, timer index, inbox, alias lookup, timer body, outbox entry
    assert_eq!(removed, 7);

    let left = all_keys(&server);
    let escaped = beckon_scheduler::keys::escape(target);
    assert!(
        !left
            .iter()
            .any(|k| k.contains(&escaped) || k.contains("anon-erase-me")),
        "{left:?}"
    );
    let p = beckon_core::partition::partition_of("w", target, PARTITIONS);
    let pending = store.read_outbox("w", p, "-", 100).await.expect("outbox");
    assert!(pending.iter().all(|e| e.user != target));
    let members: Vec<String> = redis::cmd("HKEYS")
        .arg(Keys::new(server.namespace(), "w", p).timer_bodies())
        .query(&mut con)
        .expect("bodies");
    assert!(!members.iter().any(|m| m.contains(&escaped)), "{members:?}");

    assert!(store.export("w", target).await.expect("export").is_none());
    assert!(store.load("w", other).await.expect("load").is_some());
    assert_eq!(
        timers
            .claim_due(
                "w",
                beckon_core::partition::partition_of("w", other, PARTITIONS),
                Ts(9_999),
                10
            )
            .await
            .expect("claim")
            .len(),
        1
    );
}
