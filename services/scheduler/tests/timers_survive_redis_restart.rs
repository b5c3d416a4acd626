//! Timers are durable: with the append-only file on, a Redis restart keeps every pending
//! and claimed timer.

mod support;

use beckon_core::Ts;
use beckon_scheduler::AsyncTimerStore;
use beckon_testkit::{Fsync, Options, RedisServer};
use support::{timer, timers};

#[tokio::test]
async fn pending_and_claimed_timers_survive_a_restart_with_aof() {
    let mut server = RedisServer::start_with(Options::aof(Fsync::EverySec)).expect("redis");
    if server.is_external() {
        return; // a shared server cannot be restarted by a test
    }
    let store = timers(&server, 1).await;
    for (user, due) in [("a", 10), ("b", 20), ("c", 30)] {
        store
            .schedule(&timer(user, "t", due))
            .await
            .expect("schedule");
    }
    let claimed = store.claim_due("w", 0, Ts(10), 1).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    drop(store);

    // SHUTDOWN flushes the AOF; everysec alone may lose the last second on a crash, which the
    // log test covers with appendfsync always.
    server.restart_graceful().expect("restart");

    let store = timers(&server, 1).await;
    assert_eq!(store.len("w", 0).await.expect("len"), 3);
    assert_eq!(store.next_due("w", 0).await.expect("next"), Some(Ts(20)));
    assert!(
        store
            .ack(&claimed[0])
            .await
            .expect("ack of the pre-restart claim")
    );
    let fired = store.claim_due("w", 0, Ts(100), 10).await.expect("claim");
    let users: Vec<_> = fired.iter().map(|t| t.user.as_str()).collect();
    assert_eq!(users, ["b", "c"]);
}
