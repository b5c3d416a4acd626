//! A Redis restart leaves the store's pooled connection dead until a command is sent on it.
//! Reading a user, a segment's members or sizes, an export and a forget each answer at the
//! first call after a restart, with what Redis kept (its append-only file, fsynced on every
//! write): a read, or an erase, that found its connection lost goes once more on a fresh one.

mod support;

use std::collections::BTreeMap;

use beckon_core::{Membership, Ts};
use beckon_testkit::{Fsync, Options, RedisServer};
use beckon_user_state::StateStore;
use beckon_user_state::store::MemberCursor;
use support::{busy_user, store};

#[tokio::test]
async fn each_call_after_a_redis_restart_answers_the_first_time() {
    let mut redis = RedisServer::start_with(Options::aof(Fsync::Always)).expect("redis");
    if redis.is_external() {
        return; // a shared server cannot be restarted by a test
    }
    let store = store(&redis).await;
    let mut ada = busy_user("ada", 3);
    let member = Membership {
        member: true,
        since: Ts(1),
        due: None,
    };
    ada.segments.insert("buyers".into(), member);
    store.save(&ada, 0).await.expect("save");

    redis.restart().expect("restart redis");
    let loaded = store.load_state("w", "ada").await.expect("the first load");
    assert_eq!(loaded, Some(ada.clone()));

    redis.restart().expect("restart redis");
    let page = store
        .segment_members("w", "buyers", MemberCursor::default(), 10)
        .await
        .expect("the first member list");
    assert_eq!(page.users, ["ada"]);

    redis.restart().expect("restart redis");
    let sizes = store.sizes("w").await.expect("the first sizes");
    assert_eq!(sizes, BTreeMap::from([("buyers".to_string(), 1)]));

    redis.restart().expect("restart redis");
    let export = store.export("w", "ada").await.expect("the first export");
    assert_eq!(export.map(|e| e["user"].clone()), Some("ada".into()));

    redis.restart().expect("restart redis");
    let removed = store
        .forget_user("w", "ada")
        .await
        .expect("the first forget");
    assert!(removed > 0, "the record was erased");
    assert_eq!(store.load_state("w", "ada").await.expect("load"), None);
}
