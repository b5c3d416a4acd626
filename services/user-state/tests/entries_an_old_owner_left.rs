//! Entries an earlier owner of a partition read and never acknowledged are applied by the
//! current owner, even when they were read after the current owner's loop started: an owner
//! whose lease lapsed can still be reading under the partition's consumer name until its next
//! write is fenced off. The loop does not look for such entries before every read (that costs
//! a round trip per batch) but looks again once a second of its clock has passed.

mod support;

use std::sync::Arc;

use beckon_core::{Clock, Duration, Ts, VirtualClock};
use beckon_gateway::{Gateway, RecordingChannel};
use beckon_ingest::log::{EventLog, MemoryLog};
use beckon_journey::Engine;
use beckon_scheduler::MemoryTimers;
use beckon_user_state::live;
use beckon_user_state::{MemoryStore, Outlet, PartitionWorker, StateStore, Timers};
use support::{app_opened, loop_config};
use tokio::sync::watch;

const BLOCK_MS: u64 = 10;

/// Waits, a read's block time at a time, until the partition's backlog is `want`; returns the
/// last one seen.
async fn backlog_until(log: &dyn EventLog, want: u64) -> u64 {
    let mut seen = u64::MAX;
    for _ in 0..500 {
        seen = log
            .backlog("w", 0)
            .await
            .expect("backlog")
            .expect("counted");
        if seen == want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(BLOCK_MS)).await;
    }
    seen
}

#[actix_rt::test]
async fn entries_read_by_an_old_owner_are_applied_within_a_second_of_the_loop_clock() {
    let wall = VirtualClock::new(Ts(1_780_000_000_000));
    let clock: Arc<dyn Clock> = Arc::new(wall.clone());
    let log = Arc::new(MemoryLog::new(clock.clone(), 1, 1_000));
    let store = Arc::new(MemoryStore::new());
    let outlet: Arc<dyn Outlet> =
        Arc::new(Gateway::new().with("push", Arc::new(RecordingChannel::new())));
    let worker = PartitionWorker::new(
        0,
        Arc::new(Engine::new(Vec::new())),
        store.clone() as Arc<dyn StateStore>,
        Timers::Local(Box::new(MemoryTimers::new())),
        outlet,
    );
    let config = loop_config(clock.clone(), BLOCK_MS);
    let (stop, stopped) = watch::channel(false);
    let run = actix::spawn(live::run_partition(
        worker,
        log.clone() as Arc<dyn EventLog>,
        config,
        stopped,
    ));

    // The loop applies Ada's event: it has started and looked for unacknowledged entries.
    let start = wall.now().0;
    log.append("w", &app_opened("ada", "a1", start), None)
        .await
        .expect("append");
    assert_eq!(backlog_until(log.as_ref(), 0).await, 0);

    // An old owner reads Bob's event under the partition's consumer name as it is appended,
    // before the loop can, and never acknowledges it. (The memory log answers at once, so
    // the loop's task does not run between the two calls.)
    log.append("w", &app_opened("bob", "b1", start + 1), None)
        .await
        .expect("append");
    let reader = live::consumer("w", 0);
    let stolen = log.read(&reader, 16, Duration(0)).await.expect("read");
    assert_eq!(stolen.len(), 1);

    // Reads of new entries do not see it.
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(BLOCK_MS)).await;
    }
    assert!(store.load("w", "bob").await.expect("load").is_none());
    assert_eq!(log.backlog("w", 0).await.expect("backlog"), Some(1));

    // A second later on the loop's clock it looks again, and applies it.
    wall.advance_to(Ts(wall.now().0 + 1_000));
    assert_eq!(backlog_until(log.as_ref(), 0).await, 0);
    let bob = store
        .load("w", "bob")
        .await
        .expect("load")
        .expect("bob applied");
    assert_eq!(bob.events["App Opened"].count, 1);

    let _ = stop.send(true);
    let report = run.await.expect("loop");
    assert_eq!(report.applied, 2);
    assert_eq!(report.failures, 0);
}
