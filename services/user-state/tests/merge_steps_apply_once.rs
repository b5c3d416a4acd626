//! Each step of a merge lands once even when the batch that takes it fails after its trigger
//! was forwarded and before the state was written (what a crash there does): the partition
//! loops on the Redis log retry the batch, the retry forwards under the same key, and the log
//! appends it once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use beckon_core::{Event, EventKind, MergeStage, Props, Trigger, Ts};
use beckon_gateway::{Gateway, RecordingChannel};
use beckon_ingest::log::{Connect, EventLog, LogConfig, RedisLog};
use beckon_journey::{Engine, load_definitions_str};
use beckon_scheduler::MemoryTimers;
use beckon_testkit::RedisServer;
use beckon_user_state::live::{self, LoopConfig};
use beckon_user_state::redis::RedisStateStore;
use beckon_user_state::{
    Forwarder, LogForwarder, Outlet, PartitionWorker, StateError, StateStore, Timers,
};
use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use tokio::sync::watch;

const PARTITIONS: u32 = 8;

const DEFS: &str = "
id: onboarding
version: 1
workspace: w
entry:
  event: Signed Up
steps:
  - id: wait
    delay: 2d
  - id: nudge
    message:
      channel: push
      body: Still there?
";

/// Forwards, then fails the first time it sees a key: the batch fails after its forwarded
/// trigger is in the log and before the state that asked for it is written.
struct FailsAfterForwarding {
    inner: LogForwarder,
    failed: Mutex<HashSet<String>>,
}

impl Forwarder for FailsAfterForwarding {
    fn forward<'a>(
        &'a self,
        workspace: &'a str,
        key: &'a str,
        trigger: &'a Trigger,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            self.inner.forward(workspace, key, trigger).await?;
            let first = self
                .failed
                .lock()
                .map(|mut f| f.insert(key.to_string()))
                .unwrap_or(false);
            if first {
                return Err(StateError::Unavailable(format!(
                    "lost after forwarding {key}"
                )));
            }
            Ok(())
        })
    }
}

fn event(kind: EventKind, user: &str, anonymous: Option<&str>, name: &str, id: &str) -> Event {
    Event {
        kind,
        message_id: id.to_string(),
        user: user.to_string(),
        anonymous_id: anonymous.map(str::to_string),
        name: name.to_string(),
        properties: Props::new(),
        traits: Props::new(),
        timestamp: Ts(1_780_000_000_000 + id.len() as i64 * 1_000),
        previous_id: None,
    }
}

#[actix_rt::test]
async fn merge_steps_land_once_when_batches_fail_after_forwarding() {
    let server = RedisServer::start().expect("redis");
    let client = redis::Client::open(server.url()).expect("client");
    let con = client.get_connection_manager().await.expect("connect");
    // Blocking reads get connections of their own, as in the services.
    let readers = client.clone();
    let connect: Connect<ConnectionManager> = Arc::new(move || {
        let client = readers.clone();
        Box::pin(async move { client.get_connection_manager().await })
    });
    let log: Arc<dyn EventLog> = Arc::new(
        RedisLog::new(
            con.clone(),
            LogConfig {
                namespace: server.namespace().to_string(),
                partitions: PARTITIONS,
                ..LogConfig::default()
            },
        )
        .with_readers(connect),
    );
    let store = Arc::new(RedisStateStore::new(con, server.namespace(), PARTITIONS));
    let defs = load_definitions_str("defs.yaml", DEFS).expect("definitions");
    let engine = Arc::new(Engine::from_definitions(defs));
    let forwarder = Arc::new(FailsAfterForwarding {
        inner: LogForwarder(log.clone()),
        failed: Mutex::new(HashSet::new()),
    });

    let (anon, known) = ("anon-7f3", "user-42");
    let events = [
        event(EventKind::Page, anon, None, "Pricing", "a1"),
        event(EventKind::Page, anon, None, "Pricing", "a22"),
        event(EventKind::Track, known, None, "Signed Up", "k333"),
        event(EventKind::Page, known, None, "Pricing", "k4444"),
        event(EventKind::Identify, known, Some(anon), "Identify", "k55555"),
    ];
    for e in &events {
        log.append("w", e, None).await.expect("append");
    }

    // Every partition runs its loop, as a user-state instance would.
    let (stop, stopped) = watch::channel(false);
    let mut loops = Vec::new();
    for p in 0..PARTITIONS {
        let outlet: Arc<dyn Outlet> =
            Arc::new(Gateway::new().with("push", Arc::new(RecordingChannel::new())));
        let worker = PartitionWorker::new(
            p,
            engine.clone(),
            store.clone() as Arc<dyn StateStore>,
            Timers::Local(Box::new(MemoryTimers::new())),
            outlet,
        )
        .with_forwarder(forwarder.clone());
        let config = LoopConfig {
            workspace: "w".into(),
            consumer: "test".into(),
            batch: 16,
            block_ms: 20,
            retry_ms: 10,
            hibernate: beckon_core::Duration(600_000),
            idle: beckon_core::Duration::hours(1),
            clock: Arc::new(beckon_core::SystemClock),
            metrics: beckon_telemetry::Metrics::global(),
            warnings: Arc::new(beckon_telemetry::LogRateLimiter::new(
                Arc::new(beckon_core::SystemClock),
                3,
                beckon_core::Duration(10_000),
            )),
            lease: None,
        };
        loops.push(actix::spawn(live::run_partition(
            worker,
            log.clone(),
            config,
            stopped.clone(),
        )));
    }

    // Both sides written: the known user took the snapshot over, and the old id's retried
    // batch stored its tombstone (the merge-in may be applied before that retry ends).
    let mut merged = None;
    for _ in 0..400 {
        let state = store.load("w", known).await.expect("load");
        let tombstone = store.load("w", anon).await.expect("load");
        let done = state
            .as_ref()
            .is_some_and(|s| s.merged.get(anon) == Some(&MergeStage::Done));
        if done && tombstone.is_some_and(|t| t.merged_into.is_some()) {
            merged = state;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let _ = stop.send(true);
    let mut failures = 0;
    for l in loops {
        failures += l.await.expect("loop").failures;
    }

    let merged = merged.expect("the merge completed");
    assert_eq!(
        merged.events["Pricing"].count, 3,
        "the snapshot applied once"
    );
    assert_eq!(merged.journeys.len(), 1);
    let took_over = merged
        .decisions
        .iter()
        .filter(|d| d.reason == format!("took over {anon}"))
        .count();
    assert_eq!(took_over, 1);
    let tombstone = store
        .load("w", anon)
        .await
        .expect("load")
        .expect("tombstone");
    assert_eq!(tombstone.merged_into.as_deref(), Some(known));
    assert_eq!(
        failures, 2,
        "the merge-out and the merge-in batch each failed once and were retried"
    );
}
