//! State, outbox and log acknowledgement are one write: after a successful commit all three
//! are there; after a lost compare-and-set or a stale lease, none is.

mod support;

use beckon_core::{Effect, Timer, Ts};
use beckon_ingest::log::{Consumer, EventLog, LogConfig, RedisLog};
use beckon_testkit::RedisServer;
use beckon_user_state::StateError;
use beckon_user_state::redis::LogAck;
use support::{PARTITIONS, busy_user, store};

fn pending_count(server: &RedisServer, stream: &str) -> u64 {
    let mut con = server.connection().expect("con");
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg("user-state")
        .query(&mut con)
        .expect("xpending");
    match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            _ => 0,
        },
        _ => 0,
    }
}

#[tokio::test]
async fn commit_writes_state_outbox_and_ack_together() {
    let server = RedisServer::start().expect("redis");
    let store = store(&server).await;
    let client = redis::Client::open(server.url()).expect("client");
    let con = client.get_connection_manager().await.expect("connect");
    let log = RedisLog::new(
        con,
        LogConfig {
            namespace: server.namespace().to_string(),
            partitions: PARTITIONS,
            ..LogConfig::default()
        },
    );

    let user = busy_user("u1", 2);
    let event = support::track("u1", "m-99");
    let appended = log.append("w", &event, None).await.expect("append");
    let reader = Consumer::new("w", appended.partition, "user-state", "a");
    log.ensure_group(&reader).await.expect("group");
    let entries = log
        .read(&reader, 10, beckon_core::Duration(0))
        .await
        .expect("read");
    assert_eq!(entries.len(), 1);
    let stream = log.stream("w", appended.partition);
    assert_eq!(pending_count(&server, &stream), 1);

    let timer = Timer {
        id: "t1".into(),
        workspace: "w".into(),
        user: "u1".into(),
        due: Ts(10_000),
        journey: "cart".into(),
        instance: 1,
        trace: None,
    };
    let effects = [
        Effect::SetTimer(timer),
        Effect::CancelTimer {
            workspace: "w".into(),
            user: "u1".into(),
            id: "t0".into(),
        },
    ];
    let ack = LogAck {
        group: "user-state".into(),
        entry_ids: vec![entries[0].offset.clone()],
    };

    // A stale writer: nothing is written, the entry stays pending for redelivery.
    let err = store
        .commit(&user, 7, &effects, Some(&ack), None)
        .await
        .expect_err("stale");
    assert!(matches!(err, StateError::Conflict { .. }));
    assert_eq!(pending_count(&server, &stream), 1);
    assert!(
        store
            .read_outbox("w", appended.partition, "-", 10)
            .await
            .expect("outbox")
            .is_empty()
    );
    assert!(store.load_state("w", "u1").await.expect("load").is_none());

    // A writer whose partition lease moved on (the fencing token changed): nothing either.
    let token_key = format!("{}:lease:token", store.keys("w", "u1").prefix());
    let mut sync = server.connection().expect("con");
    let _: () = redis::cmd("SET")
        .arg(&token_key)
        .arg(5)
        .query(&mut sync)
        .expect("token");
    let err = store
        .commit(&user, 0, &effects, Some(&ack), Some(4))
        .await
        .expect_err("fenced");
    assert!(
        matches!(err, StateError::Fenced { held: 4, ref current } if current == "5"),
        "{err:?}"
    );
    assert!(store.load_state("w", "u1").await.expect("load").is_none());

    // The current writer: state, both effects and the acknowledgement at once.
    store
        .commit(&user, 0, &effects, Some(&ack), Some(5))
        .await
        .expect("commit");
    assert_eq!(pending_count(&server, &stream), 0);
    assert_eq!(
        store.load_state("w", "u1").await.expect("load"),
        Some(user.clone())
    );
    let outbox = store
        .read_outbox("w", appended.partition, "-", 10)
        .await
        .expect("outbox");
    let got: Vec<_> = outbox.iter().map(|e| e.effect.clone()).collect();
    assert_eq!(got, effects);
    assert!(outbox.iter().all(|e| e.user == "u1"));

    let after = store
        .read_outbox("w", appended.partition, &outbox[0].id, 10)
        .await
        .expect("next");
    assert_eq!(after.len(), 1);
    let ids: Vec<_> = outbox.iter().map(|e| e.id.clone()).collect();
    assert_eq!(
        store
            .delete_outbox("w", appended.partition, &ids)
            .await
            .expect("delete"),
        2
    );
}
