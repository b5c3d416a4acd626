//! A batch's changed users are written together, in as few script calls as their slots and
//! sizes allow, and each keeps its own compare-and-set: one user's conflict leaves the others
//! written and the batch unacknowledged, a stale lease writes nobody, and the acknowledgement
//! waits until every user is written.

mod support;

use std::sync::Arc;

use beckon_core::state::TraitValue;
use beckon_core::{Ts, UserState};
use beckon_ingest::log::{Consumer, EventLog, LogConfig, RedisLog};
use beckon_testkit::RedisServer;
use beckon_user_state::redis::RedisStateStore;
use beckon_user_state::store::LogAck;
use beckon_user_state::{StateError, StateStore, Write};
use redis::aio::ConnectionManager;
use support::{app_opened, calls};

/// A store and a log of one partition, with two entries read by a consumer and not yet
/// acknowledged.
async fn set_up(
    server: &RedisServer,
) -> (
    RedisStateStore<ConnectionManager>,
    Arc<RedisLog<ConnectionManager>>,
    LogAck,
) {
    let client = redis::Client::open(server.url()).expect("client");
    let con = client.get_connection_manager().await.expect("connect");
    let store = RedisStateStore::new(con.clone(), server.namespace(), 1);
    let log = Arc::new(RedisLog::new(
        con,
        LogConfig {
            namespace: server.namespace().to_string(),
            partitions: 1,
            ..LogConfig::default()
        },
    ));

    let consumer = Consumer::new("w", 0, "user-state", "a");
    log.ensure_group(&consumer).await.expect("group");
    for (i, user) in ["a", "b"].into_iter().enumerate() {
        let event = app_opened(user, &format!("m{i}"), 1_780_000_000_000 + i as i64);
        log.append("w", &event, None).await.expect("append");
    }
    let read = log
        .read(&consumer, 10, beckon_core::Duration(0))
        .await
        .expect("read");
    assert_eq!(read.len(), 2);
    let ack = LogAck {
        group: consumer.group.clone(),
        entry_ids: read.into_iter().map(|e| e.offset).collect(),
    };
    (store, log, ack)
}

fn user(workspace: &str, id: &str, version: u64) -> UserState {
    let mut state = UserState::new(workspace, id);
    state.version = version;
    state
}

fn writes(states: &[(UserState, u64)]) -> Vec<Write<'_>> {
    states
        .iter()
        .map(|(state, expected)| Write {
            state,
            expected: *expected,
        })
        .collect()
}

#[tokio::test]
async fn one_conflict_leaves_the_others_written_and_the_batch_unacknowledged() {
    let server = RedisServer::start_own(Default::default()).expect("redis");
    let (store, log, ack) = set_up(&server).await;

    // Someone else wrote `b` first.
    store
        .save(&user("w", "b", 1), 0)
        .await
        .expect("earlier write");

    let batch = [
        (user("w", "a", 1), 0),
        (user("w", "b", 2), 0),
        (user("w", "c", 1), 0),
    ];
    let written = store.save_all(&writes(&batch), None, Some(&ack)).await;
    assert!(written.results[0].is_ok(), "{:?}", written.results);
    assert!(
        matches!(&written.results[1], Err(StateError::Conflict { user, expected: 0 }) if user == "b"),
        "{:?}",
        written.results
    );
    assert!(written.results[2].is_ok(), "{:?}", written.results);
    assert_eq!(written.backlog, None, "not acknowledged");
    assert_eq!(log.backlog("w", 0).await.expect("backlog"), Some(2));

    for (id, version) in [("a", 1), ("b", 1), ("c", 1)] {
        let stored = store.load("w", id).await.expect("load").expect("stored");
        assert_eq!(stored.version, version, "{id}");
    }

    // The retried batch finds `a` and `c` written and writes `b` on what is stored now.
    let retry = [(user("w", "b", 2), 1)];
    let written = store.save_all(&writes(&retry), None, Some(&ack)).await;
    assert!(written.results[0].is_ok(), "{:?}", written.results);
    assert_eq!(written.backlog, Some(0));
    assert_eq!(log.backlog("w", 0).await.expect("backlog"), Some(0));
}

#[tokio::test]
async fn a_stale_lease_writes_nobody() {
    let server = RedisServer::start_own(Default::default()).expect("redis");
    let (store, log, ack) = set_up(&server).await;
    let token_key = format!("{}:lease:token", store.keys("w", "a").prefix());
    let mut con = server.connection().expect("con");
    let _: () = redis::cmd("SET")
        .arg(&token_key)
        .arg("7")
        .query(&mut con)
        .expect("token");

    let batch = [(user("w", "a", 1), 0), (user("w", "b", 1), 0)];
    let written = store.save_all(&writes(&batch), Some(6), Some(&ack)).await;
    for result in &written.results {
        assert!(
            matches!(result, Err(StateError::Fenced { held: 6, current }) if current == "7"),
            "{result:?}"
        );
    }
    for id in ["a", "b"] {
        assert!(store.load("w", id).await.expect("load").is_none(), "{id}");
    }
    assert_eq!(log.backlog("w", 0).await.expect("backlog"), Some(2));

    let written = store.save_all(&writes(&batch), Some(7), Some(&ack)).await;
    assert!(
        written.results.iter().all(Result::is_ok),
        "{:?}",
        written.results
    );
    assert_eq!(written.backlog, Some(0));
}

#[tokio::test]
async fn a_large_batch_goes_in_several_calls_and_is_acknowledged_after_all() {
    let server = RedisServer::start_own(Default::default()).expect("redis");
    let (store, log, ack) = set_up(&server).await;

    // The write script is loaded first, so the counts below are of calls, not of loading.
    let warm = [(user("w", "warm-up", 1), 0)];
    assert!(store.save_all(&writes(&warm), None, None).await.results[0].is_ok());
    let mut con = server.connection().expect("con");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut con)
        .expect("reset");

    // 150 small users of `w` (64 to a call), two records of 600 KB each (one to a call, by
    // size), and three users of another workspace (another slot, so another call); the last
    // user of the batch is of `w`, and its call carries the acknowledgement.
    let mut batch: Vec<(UserState, u64)> = Vec::new();
    for i in 0..3 {
        batch.push((user("v", &format!("v{i}"), 1), 0));
    }
    for i in 0..2 {
        let mut big = user("w", &format!("big{i}"), 1);
        let bio = TraitValue {
            value: serde_json::json!("x".repeat(600_000)),
            at: Ts(1_780_000_000_000),
        };
        big.traits.insert("bio".into(), bio);
        batch.push((big, 0));
    }
    for i in 0..150 {
        batch.push((user("w", &format!("u{i}"), 1), 0));
    }

    let written = store.save_all(&writes(&batch), None, Some(&ack)).await;
    assert!(
        written.results.iter().all(Result::is_ok),
        "{:?}",
        written.results
    );
    assert_eq!(written.backlog, Some(0));
    assert_eq!(log.backlog("w", 0).await.expect("backlog"), Some(0));
    for (state, _) in &batch {
        let stored = store
            .load(&state.workspace, &state.user)
            .await
            .expect("load")
            .expect("stored");
        assert_eq!(stored, *state);
    }

    // `v` in one call; `w` in four: the first big record alone (the second does not fit
    // beside it), the second with 63 small users, the next 64, then the last 23.
    assert_eq!(calls(&server, "evalsha") + calls(&server, "eval"), 5);
    assert_eq!(calls(&server, "xack"), 1);
}
