//! When the log lives in the same Redis as the users, a partition writes its batch's changed
//! users and acknowledges the batch in one script call: one round trip per batch, and the
//! acknowledgement happens only if every write does.

mod support;

use std::sync::Arc;

use beckon_core::{Clock, Ts, UserState, VirtualClock};
use beckon_gateway::{Gateway, RecordingChannel};
use beckon_ingest::log::{Connect, EventLog, LogConfig, RedisLog};
use beckon_journey::Engine;
use beckon_scheduler::MemoryTimers;
use beckon_testkit::RedisServer;
use beckon_user_state::live;
use beckon_user_state::redis::RedisStateStore;
use beckon_user_state::{Outlet, PartitionWorker, StateStore, Timers, Write};
use redis::aio::ConnectionManager;
use support::{app_opened, calls, loop_config};
use tokio::sync::watch;

const BLOCK_MS: u64 = 10;

#[actix_rt::test]
async fn a_batch_is_written_and_acknowledged_in_one_call() {
    let server = RedisServer::start_own(Default::default()).expect("redis");
    let client = redis::Client::open(server.url()).expect("client");
    let con = client.get_connection_manager().await.expect("connect");
    let readers = client.clone();
    let connect: Connect<ConnectionManager> = Arc::new(move || {
        let client = readers.clone();
        Box::pin(async move { client.get_connection_manager().await })
    });
    let log = Arc::new(
        RedisLog::new(
            con.clone(),
            LogConfig {
                namespace: server.namespace().to_string(),
                partitions: 1,
                ..LogConfig::default()
            },
        )
        .with_readers(connect),
    );
    let store = Arc::new(RedisStateStore::new(con, server.namespace(), 1));

    // Three users' events wait in the log before the partition starts: one batch.
    let start = 1_780_000_000_000;
    for (i, user) in ["ada", "bob", "cy"].into_iter().enumerate() {
        log.append(
            "w",
            &app_opened(user, &format!("m{i}"), start + i as i64),
            None,
        )
        .await
        .expect("append");
    }
    // The write script is loaded first, so the counts below are of calls, not of loading.
    let mut other = UserState::new("x", "warm-up");
    other.version = 1;
    let warm = [Write {
        state: &other,
        expected: 0,
    }];
    let written = store.save_all(&warm, None, None).await;
    assert!(written.results.iter().all(Result::is_ok), "warm-up write");
    let mut con = server.connection().expect("con");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut con)
        .expect("reset");

    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new(Ts(start)));
    let outlet: Arc<dyn Outlet> =
        Arc::new(Gateway::new().with("push", Arc::new(RecordingChannel::new())));
    let worker = PartitionWorker::new(
        0,
        Arc::new(Engine::new(Vec::new())),
        store.clone() as Arc<dyn StateStore>,
        Timers::Local(Box::new(MemoryTimers::new())),
        outlet,
    )
    .with_log_in_store();
    let config = loop_config(clock.clone(), BLOCK_MS);
    let (stop, stopped) = watch::channel(false);
    let run = actix::spawn(live::run_partition(
        worker,
        log.clone() as Arc<dyn EventLog>,
        config,
        stopped,
    ));

    let mut left = None;
    for _ in 0..500 {
        left = log.backlog("w", 0).await.expect("backlog");
        if left == Some(0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(BLOCK_MS)).await;
    }
    assert_eq!(left, Some(0), "the batch is applied and acknowledged");
    let _ = stop.send(true);
    let report = run.await.expect("loop");
    assert_eq!((report.applied, report.batches, report.failures), (3, 1, 0));

    // Each user was written, and the acknowledgement (with the deletion) rode along with
    // those writes: one script call in all.
    for user in ["ada", "bob", "cy"] {
        let stored = store.load("w", user).await.expect("load").expect("written");
        assert_eq!(stored.events["App Opened"].count, 1);
    }
    assert_eq!(calls(&server, "evalsha") + calls(&server, "eval"), 1);
    assert_eq!(calls(&server, "xack"), 1);
    assert_eq!(calls(&server, "xdel"), 1);
}
