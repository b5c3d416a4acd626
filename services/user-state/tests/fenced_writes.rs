//! A worker that lost its partition's lease without noticing (a long pause, a partition of the
//! network) cannot overwrite what the new owner writes: its fencing token is stale, so the
//! write is refused and nothing of it reaches Redis.

use std::sync::Arc;

use beckon_core::{Clock, Event, EventKind, Props, Ts, VirtualClock};
use beckon_gateway::{Gateway, RecordingChannel};
use beckon_journey::Engine;
use beckon_scheduler::MemoryTimers;
use beckon_testkit::RedisServer;
use beckon_user_state::lease::{LeaseConfig, Leases};
use beckon_user_state::redis::RedisStateStore;
use beckon_user_state::{Outlet, PartitionWorker, StateError, StateStore, Timers};

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
