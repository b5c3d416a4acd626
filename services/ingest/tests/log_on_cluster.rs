//! The log works on a three-master Redis Cluster: the dedup script touches two keys of one
//! slot, and partitions spread over the masters.

mod support;

use std::collections::HashSet;

use beckon_core::Duration;
use beckon_ingest::log::{Consumer, EventLog, RedisLog};
use beckon_testkit::RedisCluster;
use support::{config, event};

#[tokio::test]
async fn append_dedup_read_and_ack_on_a_cluster() {
    let cluster = RedisCluster::start(3).expect("cluster");
    let client = redis::cluster::ClusterClient::new(cluster.urls()).expect("client");
    let con = client.get_async_connection().await.expect("connect");
    let log = RedisLog::new(con, config("bk"));

    let mut partitions = HashSet::new();
    for i in 0..40 {
        let e = event(&format!("user-{i}"), &format!("m{i}"), i);
        let a = log.append("w", &e, None).await.expect("append");
        assert!(log.append("w", &e, None).await.expect("repeat").duplicate);
        partitions.insert(a.partition);
    }
    let mut read = 0;
    for p in &partitions {
        let c = Consumer::new("w", *p, "user-state", "a");
        log.ensure_group(&c).await.expect("group");
        let entries = log.read(&c, 100, Duration(0)).await.expect("read");
        let offsets: Vec<_> = entries.iter().map(|e| e.offset.clone()).collect();
        assert_eq!(
            log.ack(&c, &offsets).await.expect("ack"),
            entries.len() as u64
        );
        read += entries.len();
    }
    assert_eq!(read, 40);

    let mut node = cluster.nodes()[0].connection().expect("node");
    let slots: HashSet<i64> = partitions
        .iter()
        .map(|p| {
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(log.stream("w", *p))
                .query(&mut node)
                .expect("slot")
        })
        .collect();
    assert!(slots.len() > 1, "partitions should not all share a slot");
}
