//! Partition leases against a real redis-server: fair shares, takeover after a crash, and a
//! clean hand-back on drain.

use std::sync::Arc;

use beckon_core::{Clock, Ts, VirtualClock};
use beckon_scheduler::keys::{DEFAULT_NAMESPACE, Keys};
use beckon_testkit::RedisServer;
use beckon_user_state::lease::{LeaseConfig, LeaseWindow, Leases};

type Conn = redis::aio::MultiplexedConnection;

async fn leases(url: &str, instance: &str, clock: &VirtualClock) -> Leases<Conn> {
    let client = redis::Client::open(url).expect("redis url");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let config = LeaseConfig {
        workspace: "w".into(),
        partitions: 8,
        instance: instance.into(),
        ttl_ms: 1_000,
    };
    Leases::new(conn, config, Arc::new(clock.clone()) as Arc<dyn Clock>)
}

#[tokio::test]
async fn instances_split_partitions_and_take_over_a_dead_ones_share() {
    let redis = RedisServer::start().expect("redis-server");
    let clock = VirtualClock::new(Ts(1_000_000));
    let mut a = leases(&redis.url(), "a", &clock).await;
    let mut b = leases(&redis.url(), "b", &clock).await;

    // Alone, `a` takes everything.
    a.tick().await.expect("tick");
    assert_eq!(a.held().len(), 8);

    // `b` joins: `a` gives back down to its share, `b` takes the rest.
    b.tick().await.expect("tick");
    let surplus = a.tick().await.expect("tick").surplus;
    assert_eq!(surplus.len(), 4);
    for p in surplus {
        a.release(p).await.expect("release");
    }
    b.tick().await.expect("tick");
    assert_eq!((a.held().len(), b.held().len()), (4, 4));
    let overlap = a.held().keys().filter(|p| b.held().contains_key(p)).count();
    assert_eq!(overlap, 0, "a partition has one owner");

    // `a` dies without a word. Its leases live on in Redis until their ttl passes.
    drop(a);
    b.tick().await.expect("tick");
    assert_eq!(b.held().len(), 4);

    // Lease keys expire on Redis's own clock, which no test can drive: wait out the short
    // ttl, then move the virtual clock past the dead member's heartbeat too.
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    clock.advance_to(Ts(1_000_000 + 1_200));
    b.tick().await.expect("tick");
    assert_eq!(b.held().len(), 8);
}

#[tokio::test]
async fn tokens_grow_with_each_acquisition_and_release_hands_back_at_once() {
    let redis = RedisServer::start().expect("redis-server");
    let clock = VirtualClock::new(Ts(5_000));
    let mut a = leases(&redis.url(), "a", &clock).await;
    a.tick().await.expect("tick");
    let first = a.held()[&0].token;

    let released = a.release_all().await.expect("release");
    assert_eq!(released.len(), 8);

    // No waiting for expiry: `b` gets everything at once, with newer fencing tokens.
    let mut b = leases(&redis.url(), "b", &clock).await;
    b.tick().await.expect("tick");
    assert_eq!(b.held().len(), 8);
    assert!(b.held()[&0].token > first);
    assert!(b.holds(0));
}

#[tokio::test]
async fn a_lease_window_closes_when_renewals_fall_behind_and_opens_on_renewal() {
    let redis = RedisServer::start().expect("redis-server");
    let clock = VirtualClock::new(Ts(1_000_000));
    let mut a = leases(&redis.url(), "a", &clock).await;
    a.tick().await.expect("tick");
    let held = a.held()[&0];
    let window = LeaseWindow::new(a.clock(), held.until);
    assert!(window.is_open());

    // No renewal for longer than the lease is safe to act on: the window closes before
    // the lease itself expires in Redis (ttl 1,000 ms, safe until 800 ms after renewal).
    clock.advance_to(Ts(1_000_000 + 850));
    assert!(!window.is_open(), "acting stops once renewals fall behind");
    assert!(!a.holds(0));

    // A renewal in time moves the window forward again.
    a.tick().await.expect("tick");
    window.extend(a.held()[&0].until);
    assert!(window.is_open());

    // An older renewal reported late never moves it back.
    window.extend(held.until);
    assert!(window.is_open());
}

async fn leases_in(
    url: &str,
    workspace: &str,
    instance: &str,
    clock: &VirtualClock,
) -> Leases<Conn> {
    let client = redis::Client::open(url).expect("redis url");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let config = LeaseConfig {
        workspace: workspace.into(),
        partitions: 2,
        instance: instance.into(),
        ttl_ms: 60_000,
    };
    Leases::new(conn, config, Arc::new(clock.clone()) as Arc<dyn Clock>)
}

#[tokio::test]
async fn lease_keys_escape_the_workspace_as_every_other_key_of_the_partition() {
    let redis = RedisServer::start().expect("redis-server");
    let clock = VirtualClock::new(Ts(1_000_000));
    let mut conn = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");

    // Raw, a `}` would end the hash tag early (`bk:{a}b:{c:0}:lease` hashes on `a`), and the
    // fencing token would not be the one the state store's scripts read from
    // `<partition prefix>:lease:token`, so every fenced write would be refused.
    for workspace in ["a}b:{c", "w:1", "100%"] {
        let mut a = leases_in(&redis.url(), workspace, "a", &clock).await;
        a.tick().await.expect("tick");
        assert_eq!(a.held().len(), 2, "{workspace}");
        for p in 0..2 {
            let prefix = Keys::new(DEFAULT_NAMESPACE, workspace, p)
                .prefix()
                .to_string();
            let lease = format!("{prefix}:lease");
            let owner: Option<String> = redis::cmd("GET")
                .arg(&lease)
                .query_async(&mut conn)
                .await
                .expect("get");
            assert_eq!(owner.as_deref(), Some("a"), "{lease}");
            let token: Option<u64> = redis::cmd("GET")
                .arg(format!("{prefix}:lease:token"))
                .query_async(&mut conn)
                .await
                .expect("get");
            assert_eq!(token, Some(a.held()[&p].token), "{lease}");
        }
    }

    // Raw, the member set of workspace `{w:0}:u` would be `bk:{w:0}:u:members`: the record
    // of user `members` in partition 0 of workspace `w`, which a heartbeat would then break.
    let record = format!(
        "{}:u:members",
        Keys::new(DEFAULT_NAMESPACE, "w", 0).prefix()
    );
    let _: i64 = redis::cmd("HSET")
        .arg(&record)
        .arg("v")
        .arg("1")
        .query_async(&mut conn)
        .await
        .expect("hset");
    let mut odd = leases_in(&redis.url(), "{w:0}:u", "odd", &clock).await;
    odd.tick().await.expect("a heartbeat beside the record");
    let kind: String = redis::cmd("TYPE")
        .arg(&record)
        .query_async(&mut conn)
        .await
        .expect("type");
    assert_eq!(kind, "hash", "the user's record is untouched");
}
