//! Timers in Redis fire in due order, once per id, and a claim not acknowledged before its
//! deadline is handed out again (a crashed scheduler's timers still fire).

mod support;

use beckon_core::{Duration, Ts};
use beckon_scheduler::AsyncTimerStore;
use beckon_testkit::RedisServer;
use support::{timer, timers};

#[tokio::test]
async fn due_order_replace_and_cancel() {
    let server = RedisServer::start().expect("redis");
    // One partition, so every user's timers are in one sorted set.
    let store = timers(&server, 1).await;

    store
        .schedule(&timer("b", "t1", 20))
        .await
        .expect("schedule");
    store
        .schedule(&timer("a", "t1", 10))
        .await
        .expect("schedule");
    store
        .schedule(&timer("c", "t1", 30))
        .await
        .expect("schedule");
    store
        .schedule(&timer("c", "t1", 30))
        .await
        .expect("idempotent repeat");
    store
        .schedule(&timer("d", "t1", 5))
        .await
        .expect("schedule");
    store
        .schedule(&timer("d", "t1", 500))
        .await
        .expect("replace moves it");
    assert_eq!(store.len("w", 0).await.expect("len"), 4);
    assert_eq!(store.next_due("w", 0).await.expect("next"), Some(Ts(10)));

    assert!(store.cancel("w", "b", "t1").await.expect("cancel"));
    assert!(!store.cancel("w", "b", "t1").await.expect("cancel twice"));

    let fired = store.claim_due("w", 0, Ts(30), 10).await.expect("claim");
    let users: Vec<_> = fired.iter().map(|t| t.user.as_str()).collect();
    assert_eq!(users, ["a", "c"]);
    for t in &fired {
        assert!(store.ack(t).await.expect("ack"));
    }
    assert_eq!(store.len("w", 0).await.expect("len"), 1, "only d remains");
    assert!(
        store
            .claim_due("w", 0, Ts(30), 10)
            .await
            .expect("claim")
            .is_empty()
    );
}

#[tokio::test]
async fn unacknowledged_claims_fire_again_after_the_lease() {
    let server = RedisServer::start().expect("redis");
    let crashed = timers(&server, 4).await.with_claim_lease(Duration(1_000));
    let t = timer("u1", "wait", 100);
    let p = beckon_core::partition::partition_of("w", "u1", 4);
    crashed.schedule(&t).await.expect("schedule");

    // The first scheduler claims the timer and dies before acknowledging it.
    let claimed = crashed.claim_due("w", p, Ts(100), 10).await.expect("claim");
    assert_eq!(claimed, vec![t.clone()]);
    drop(crashed);

    let survivor = timers(&server, 4).await.with_claim_lease(Duration(1_000));
    assert!(
        survivor
            .claim_due("w", p, Ts(1_099), 10)
            .await
            .expect("claim")
            .is_empty(),
        "still leased to the first scheduler"
    );
    let again = survivor
        .claim_due("w", p, Ts(1_100), 10)
        .await
        .expect("claim");
    assert_eq!(again, vec![t.clone()], "fired again at the claim deadline");
    assert!(survivor.ack(&t).await.expect("ack"));
    assert_eq!(survivor.len("w", p).await.expect("len"), 0);
}

#[tokio::test]
async fn a_late_ack_does_not_remove_a_rescheduled_timer() {
    let server = RedisServer::start().expect("redis");
    let store = timers(&server, 1).await;
    let first = timer("u1", "wait", 100);
    store.schedule(&first).await.expect("schedule");
    let claimed = store.claim_due("w", 0, Ts(100), 10).await.expect("claim");
    assert_eq!(claimed.len(), 1);

    // The journey moved on and set the same timer id for later while the firing was applied.
    let later = timer("u1", "wait", 900);
    store.schedule(&later).await.expect("reschedule");
    assert!(
        !store.ack(&first).await.expect("ack"),
        "the old firing is gone"
    );
    assert_eq!(store.next_due("w", 0).await.expect("next"), Some(Ts(900)));
}

#[tokio::test]
async fn batched_calls_do_what_single_calls_do() {
    let server = RedisServer::start().expect("redis");
    let store = timers(&server, 4).await;

    // The second "a"/"t" replaces the first, as two schedule calls in a row would.
    let batch = vec![
        timer("a", "t", 50),
        timer("b", "t", 20),
        timer("c", "t", 10),
        timer("a", "t", 30),
        timer("d", "t", 900),
    ];
    store.schedule_many(&batch).await.expect("schedule many");
    let mut pending = 0;
    for p in 0..4 {
        pending += store.len("w", p).await.expect("len");
    }
    assert_eq!(pending, 4);

    let mut fired = Vec::new();
    let mut next = Vec::new();
    for p in 0..4 {
        let claimed = store
            .claim_due_next("w", p, Ts(100), 10)
            .await
            .expect("claim");
        assert!(claimed.timers.iter().all(|t| t.due <= Ts(100)));
        next.extend(claimed.next);
        fired.extend(claimed.timers);
    }
    fired.sort_by(|x, y| x.user.cmp(&y.user));
    let due: Vec<_> = fired.iter().map(|t| (t.user.as_str(), t.due.0)).collect();
    assert_eq!(due, [("a", 30), ("b", 20), ("c", 10)]);
    assert_eq!(next.iter().min(), Some(&Ts(900)), "d is due next");

    // "b" is set again while its firing is applied: its ack must leave the new one.
    store
        .schedule(&timer("b", "t", 700))
        .await
        .expect("reschedule");
    let acked = store.ack_many(&fired).await.expect("ack many");
    assert_eq!(acked, [true, false, true]);
    let mut left = Vec::new();
    for p in 0..4 {
        left.extend(store.next_due("w", p).await.expect("next"));
    }
    left.sort();
    assert_eq!(left, [Ts(700), Ts(900)]);
}

#[tokio::test]
async fn batched_cancels_do_what_single_cancels_do() {
    let server = RedisServer::start().expect("redis");
    let store = timers(&server, 4).await;
    let batch = vec![
        timer("a", "t", 10),
        timer("a", "u", 40),
        timer("b", "t", 20),
        timer("c", "t", 30),
        timer("d", "t", 900),
    ];
    store.schedule_many(&batch).await.expect("schedule many");

    // "b" is claimed (its firing on its way) when it is cancelled: it must not come back.
    let mut claimed = Vec::new();
    for p in 0..4 {
        claimed.extend(store.claim_due("w", p, Ts(25), 10).await.expect("claim"));
    }
    assert_eq!(claimed.len(), 2, "{claimed:?}");

    // Pending, claimed, unknown and repeated timers, over several partitions.
    let cancel = [("a", "u"), ("b", "t"), ("zz", "t"), ("c", "t"), ("c", "t")]
        .map(|(u, id)| (u.to_string(), id.to_string()));
    let cancelled = store.cancel_many("w", &cancel).await.expect("cancel many");
    assert_eq!(cancelled, 3);

    // Long after every claim's deadline: only "a"/"t" (claimed, not cancelled) comes back,
    // and "d" is due.
    let mut left = Vec::new();
    for p in 0..4 {
        left.extend(
            store
                .claim_due("w", p, Ts(1_000_000), 10)
                .await
                .expect("claim"),
        );
    }
    let mut left: Vec<_> = left
        .iter()
        .map(|t| (t.user.clone(), t.id.clone()))
        .collect();
    left.sort();
    assert_eq!(left, [("a".into(), "t".into()), ("d".into(), "t".into())]);
    assert_eq!(store.cancel_many("w", &[]).await.expect("nothing"), 0);
}
