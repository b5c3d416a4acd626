//! A stale writer cannot overwrite a newer record: the compare-and-set on the version fails
//! with a conflict and the stored record is unchanged.

mod support;

use beckon_testkit::RedisServer;
use beckon_user_state::{StateError, StateStore};
use support::{busy_user, store};

#[tokio::test]
async fn stale_writer_gets_a_conflict() {
    let server = RedisServer::start().expect("redis");
    let store = store(&server).await;

    let first = busy_user("u1", 3);
    store.save(&first, 0).await.expect("create");
    let err = store
        .save(&first, 0)
        .await
        .expect_err("second create must conflict");
    assert!(
        matches!(err, StateError::Conflict { expected: 0, .. }),
        "{err:?}"
    );

    // Two instances both loaded version 3; the first to write wins.
    let mut winner = first.clone();
    winner.set_trait(
        "plan",
        serde_json::json!("team"),
        beckon_core::Ts(i64::MAX - 1),
    );
    winner.version += 1;
    let mut loser = first.clone();
    loser.version += 1;
    store.save(&winner, first.version).await.expect("winner");
    let err = store.save(&loser, first.version).await.expect_err("loser");
    assert!(matches!(err, StateError::Conflict { .. }), "{err:?}");

    let stored = store.load("w", "u1").await.expect("load").expect("present");
    assert_eq!(stored, winner);
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::Aborted);
}
