//! The in-memory timers behind the async interface behave like the Redis ones for the
//! single-process case: per-partition due order, replace by id, cancel.

use beckon_core::partition::partition_of;
use beckon_core::{Timer, Ts};
use beckon_scheduler::{AsyncTimerStore, MemoryAsyncTimers};

fn timer(user: &str, id: &str, due: i64) -> Timer {
    Timer {
        id: id.to_string(),
        workspace: "w".into(),
        user: user.to_string(),
        due: Ts(due),
        journey: "j".into(),
        instance: 1,
        trace: None,
    }
}

#[tokio::test]
async fn claims_by_partition_in_due_order() {
    let store = MemoryAsyncTimers::new(4);
    let users = ["a", "b", "c", "d", "e", "f"];
    for (i, user) in users.iter().enumerate() {
        store
            .schedule(&timer(user, "t", 100 - i as i64))
            .await
            .expect("schedule");
    }
    store
        .schedule(&timer("a", "t", 500))
        .await
        .expect("replace");
    assert!(store.cancel("w", "b", "t").await.expect("cancel"));

    let mut fired = Vec::new();
    for p in 0..4 {
        let claimed = store.claim_due("w", p, Ts(200), 10).await.expect("claim");
        assert!(claimed.windows(2).all(|w| w[0].due <= w[1].due));
        for t in &claimed {
            assert_eq!(partition_of("w", &t.user, 4), p);
            assert!(store.ack(t).await.expect("ack"));
        }
        fired.extend(claimed.into_iter().map(|t| t.user));
    }
    fired.sort();
    assert_eq!(fired, ["c", "d", "e", "f"]);
    let pa = partition_of("w", "a", 4);
    assert_eq!(store.next_due("w", pa).await.expect("next"), Some(Ts(500)));
    assert_eq!(store.len("w", pa).await.expect("len"), 1);
}
