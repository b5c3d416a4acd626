//! A worker that lost its partition's lease without noticing (a long pause, a partition of the
//! network) cannot overwrite what the new owner writes, nor erase it with a late forget: its
//! fencing token is stale, so the write or erase is refused and nothing of it reaches Redis.

use std::sync::Arc;

use beckon_core::{Clock, Event, EventKind, Forget, Props, Trigger, Ts, VirtualClock};
use beckon_gateway::{Gateway, RecordingChannel};
use beckon_ingest::log::{EventLog, LogConfig, RedisLog};
use beckon_journey::Engine;
use beckon_scheduler::MemoryTimers;
use beckon_testkit::RedisServer;
use beckon_user_state::lease::{LeaseConfig, LeaseWindow, Leases};
use beckon_user_state::live::{self, LoopConfig};
use beckon_user_state::redis::RedisStateStore;
use beckon_user_state::{Outlet, PartitionWorker, StateError, StateStore, Timers};
use tokio::sync::watch;

type Conn = redis::aio::MultiplexedConnection;

fn event(user: &str, id: &str, at: i64) -> Event {
    Event {
        kind: EventKind::Track,
        message_id: id.to_string(),
        user: user.to_string(),
        anonymous_id: None,
        name: "Product Viewed".to_string(),
        properties: Props::new(),
        traits: Props::new(),
        timestamp: Ts(at),
        previous_id: None,
    }
}

async fn connect(url: &str) -> Conn {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

fn leases(conn: Conn, instance: &str, clock: &VirtualClock) -> Leases<Conn> {
    let config = LeaseConfig {
        workspace: "w".into(),
        partitions: 1,
        instance: instance.into(),
        ttl_ms: 60_000,
    };
    Leases::new(conn, config, Arc::new(clock.clone()) as Arc<dyn Clock>)
}

fn worker(store: Arc<dyn StateStore>, fence: u64) -> PartitionWorker {
    let outlet: Arc<dyn Outlet> =
        Arc::new(Gateway::new().with("push", Arc::new(RecordingChannel::new())));
    PartitionWorker::new(
        0,
        Arc::new(Engine::new(Vec::new())),
        store,
        Timers::Local(Box::new(MemoryTimers::new())),
        outlet,
    )
    .with_fence(fence)
}

#[actix_rt::test]
async fn a_stale_owner_cannot_write_after_a_takeover() {
    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let clock = VirtualClock::new(Ts(1_000_000));
    let conn = connect(&redis.url()).await;
    let store: Arc<dyn StateStore> = Arc::new(RedisStateStore::new(conn.clone(), "bk", 1));

    // Instance A owns the only partition and writes a user under its token.
    let mut a = leases(conn.clone(), "a", &clock);
    a.tick().await.expect("tick a");
    let token_a = a.held()[&0].token;
    let mut old_owner = worker(store.clone(), token_a);
    old_owner
        .on_event("w", event("u", "m1", 1_000))
        .await
        .expect("apply");
    old_owner.flush().await.expect("A writes under its lease");

    // A stalls; its lease is gone (as when it expires) and B takes the partition over.
    let mut raw = conn.clone();
    let _: i64 = redis::cmd("DEL")
        .arg("bk:{w:0}:lease")
        .query_async(&mut raw)
        .await
        .expect("del lease");
    let mut b = leases(conn.clone(), "b", &clock);
    b.tick().await.expect("tick b");
    let token_b = b.held()[&0].token;
    assert!(token_b > token_a);

    // B applies a newer event for the same user and writes it.
    let mut new_owner = worker(store.clone(), token_b);
    new_owner
        .on_event("w", event("u", "m2", 2_000))
        .await
        .expect("apply");
    new_owner.flush().await.expect("B writes under its lease");
    let after_b = store.load("w", "u").await.expect("load").expect("user");

    // A wakes up and applies what it still had in hand: its write is refused as fenced...
    old_owner
        .on_event("w", event("u", "m3", 3_000))
        .await
        .expect("apply in memory");
    let err = old_owner.flush().await.expect_err("stale token");
    assert!(
        matches!(err, StateError::Fenced { held, .. } if held == token_a),
        "{err:?}"
    );

    // ...and Redis holds exactly what B wrote.
    let stored = store.load("w", "u").await.expect("load").expect("user");
    assert_eq!(stored.version, after_b.version);
    assert_eq!(
        serde_json::to_value(&stored).expect("json"),
        serde_json::to_value(&after_b).expect("json")
    );
}

/// Instance A wrote user `u` under its lease; then B took the partition over, wrote a newer
/// `u` with an alias, and holds the only valid token. Returns A's token and what B stored.
async fn taken_over(
    conn: &Conn,
    store: &Arc<RedisStateStore<Conn>>,
    clock: &VirtualClock,
) -> (u64, beckon_core::UserState) {
    let mut a = leases(conn.clone(), "a", clock);
    a.tick().await.expect("tick a");
    let token_a = a.held()[&0].token;
    let mut old_owner = worker(store.clone(), token_a);
    old_owner
        .on_event("w", event("u", "m1", 1_000))
        .await
        .expect("apply");
    old_owner.flush().await.expect("A writes under its lease");

    let mut raw = conn.clone();
    let _: i64 = redis::cmd("DEL")
        .arg("bk:{w:0}:lease")
        .query_async(&mut raw)
        .await
        .expect("del lease");
    let mut b = leases(conn.clone(), "b", clock);
    b.tick().await.expect("tick b");
    let token_b = b.held()[&0].token;
    assert!(token_b > token_a);

    let mut new_owner = worker(store.clone(), token_b);
    new_owner
        .on_event("w", event("u", "m2", 2_000))
        .await
        .expect("apply");
    new_owner.flush().await.expect("B writes under its lease");
    store.add_alias("w", "anon-u", "u").await.expect("alias");
    let after_b = store.load("w", "u").await.expect("load").expect("user");
    (token_a, after_b)
}

async fn assert_untouched(store: &RedisStateStore<Conn>, after_b: &beckon_core::UserState) {
    let stored = store
        .load("w", "u")
        .await
        .expect("load")
        .expect("user kept");
    assert_eq!(stored.version, after_b.version);
    assert_eq!(
        serde_json::to_value(&stored).expect("json"),
        serde_json::to_value(after_b).expect("json")
    );
    assert_eq!(
        store.resolve_alias("w", "anon-u").await.expect("alias"),
        Some("u".to_string())
    );
}

#[actix_rt::test]
async fn a_stale_owner_cannot_erase_a_user_after_a_takeover() {
    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let clock = VirtualClock::new(Ts(1_000_000));
    let conn = connect(&redis.url()).await;
    let store = Arc::new(RedisStateStore::new(conn.clone(), "bk", 1));
    let (token_a, after_b) = taken_over(&conn, &store, &clock).await;

    // A wakes up and applies a forget it read before the takeover: refused as fenced.
    let mut old_owner = worker(store.clone(), token_a);
    let forget = Trigger::Forget(Forget {
        user: "u".into(),
        at: Ts(3_000),
    });
    let err = old_owner
        .on_trigger("w", forget)
        .await
        .expect_err("stale token");
    assert!(
        matches!(err, StateError::Fenced { held, .. } if held == token_a),
        "{err:?}"
    );
    assert_untouched(&store, &after_b).await;

    // The embedded store has no leases: a fenced erase there is a plain one.
    let memory = beckon_user_state::MemoryStore::new();
    memory.save(&after_b, 0).await.expect("save");
    assert_eq!(
        memory
            .forget_fenced("w", "u", token_a)
            .await
            .expect("erase"),
        1
    );
    assert!(memory.load("w", "u").await.expect("load").is_none());
}

#[actix_rt::test]
async fn a_partition_loop_stops_on_a_fenced_forget_and_leaves_the_entry() {
    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let clock = VirtualClock::new(Ts(1_000_000));
    let conn = connect(&redis.url()).await;
    let store = Arc::new(RedisStateStore::new(conn.clone(), "bk", 1));
    let (token_a, after_b) = taken_over(&conn, &store, &clock).await;
    let log: Arc<dyn EventLog> = Arc::new(RedisLog::new(
        conn.clone(),
        LogConfig {
            partitions: 1,
            ..LogConfig::default()
        },
    ));
    let forget = Forget {
        user: "u".into(),
        at: Ts(3_000),
    };
    log.append_forget("w", &forget, None)
        .await
        .expect("append forget");

    // A's loop still believes its lease good (its renewals look fine to it), and reads the
    // forget with its stale token.
    let window = LeaseWindow::new(Arc::new(clock.clone()), Ts(i64::MAX));
    let config = LoopConfig {
        workspace: "w".into(),
        consumer: "a".into(),
        batch: 16,
        block_ms: 20,
        retry_ms: 10,
        hibernate: beckon_core::Duration(600_000),
        idle: beckon_core::Duration::hours(1),
        clock: Arc::new(clock.clone()),
        metrics: beckon_telemetry::Metrics::global(),
        warnings: Arc::new(beckon_telemetry::LogRateLimiter::new(
            Arc::new(clock.clone()),
            3,
            beckon_core::Duration(10_000),
        )),
        lease: Some(window),
    };
    let (stop, stopped) = watch::channel(false);
    let mut run = actix::spawn(live::run_partition(
        worker(store.clone(), token_a),
        log.clone(),
        config,
        stopped,
    ));

    // The loop ends on its own; a loop that went on (retrying, or past the forget) is stopped
    // so the test can say so.
    let ended = tokio::select! {
        r = &mut run => Some(r.expect("loop")),
        _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => None,
    };
    let report = match ended {
        Some(report) => report,
        None => {
            let _ = stop.send(true);
            let report = run.await.expect("loop");
            panic!("the loop did not stop on the fenced forget: {report:?}");
        }
    };
    assert_eq!((report.applied, report.failures), (0, 1), "{report:?}");
    assert_untouched(&store, &after_b).await;

    // The entry stays unacknowledged, for the new owner to apply.
    let pending = log
        .pending(&live::consumer("w", 0), 16)
        .await
        .expect("pending");
    assert_eq!(pending.len(), 1);
    assert!(matches!(&pending[0].trigger, Ok(Trigger::Forget(f)) if f.user == "u"));
}
