//! The timer scripts run on a three-master Redis Cluster: every key of a partition hashes to
//! one slot, and partitions spread over the masters.

mod support;

use std::collections::HashSet;

use beckon_core::Ts;
use beckon_core::partition::partition_of;
use beckon_scheduler::keys::Keys;
use beckon_scheduler::{AsyncTimerStore, RedisTimers};
use beckon_testkit::RedisCluster;
use support::timer;

const PARTITIONS: u32 = 16;

#[tokio::test]
async fn schedule_claim_ack_and_cancel_on_a_cluster() {
    let cluster = RedisCluster::start(3).expect("cluster");
    let client = redis::cluster::ClusterClient::new(cluster.urls()).expect("client");
    let con = client.get_async_connection().await.expect("connect");
    let store = RedisTimers::new(con.clone(), "bk", PARTITIONS);

    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    for (i, user) in users.iter().enumerate() {
        store
            .schedule(&timer(user, "t", 100 + i as i64))
            .await
            .expect("schedule");
    }
    assert!(store.cancel("w", "user-0", "t").await.expect("cancel"));

    let mut fired = 0;
    for p in 0..PARTITIONS {
        for t in store
            .claim_due("w", p, Ts(1_000), 100)
            .await
            .expect("claim")
        {
            assert_eq!(partition_of("w", &t.user, PARTITIONS), p);
            assert!(store.ack(&t).await.expect("ack"));
            fired += 1;
        }
        assert_eq!(store.len("w", p).await.expect("len"), 0);
    }
    assert_eq!(fired, users.len() - 1);

    // The batched scripts too: each call's keys are one partition's.
    let batch: Vec<_> = users.iter().map(|u| timer(u, "b", 50)).collect();
    store.schedule_many(&batch).await.expect("schedule many");
    let mut claimed = Vec::new();
    for p in 0..PARTITIONS {
        let c = store
            .claim_due_next("w", p, Ts(1_000), 100)
            .await
            .expect("claim");
        claimed.extend(c.timers);
    }
    assert_eq!(claimed.len(), users.len());
    let acked = store.ack_many(&claimed).await.expect("ack many");
    assert!(acked.iter().all(|a| *a));
    for p in 0..PARTITIONS {
        assert_eq!(store.len("w", p).await.expect("len"), 0);
    }

    // One slot per partition, and the partitions land on more than one master.
    let mut node = cluster.nodes()[0].connection().expect("node");
    let mut slots = HashSet::new();
    for p in 0..PARTITIONS {
        let keys = Keys::new("bk", "w", p);
        let names = [
            keys.timers(),
            keys.timer_bodies(),
            keys.timers_claimed(),
            keys.user_timers("x"),
        ];
        let per_key: HashSet<i64> = names
            .iter()
            .map(|k| {
                redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(k)
                    .query(&mut node)
                    .expect("slot")
            })
            .collect();
        assert_eq!(per_key.len(), 1, "partition {p} spans slots {per_key:?}");
        slots.extend(per_key);
    }
    assert!(slots.len() > 1);
}
