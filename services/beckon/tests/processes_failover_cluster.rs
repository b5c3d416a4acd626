//! The failover case on a three-master Redis Cluster: every service is given the nodes'
//! URLs, so the log, state, leases, timers and idempotency keys all live on the cluster.
//! One user-state instance is killed with SIGKILL mid-stream; every acknowledged event is
//! applied exactly once, and every expected message goes out once.

mod support;

use beckon::serve::redis_target::RedisTarget;
use beckon_testkit::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_user_state_instance_on_a_cluster_loses_and_duplicates_nothing() {
    let cluster = RedisCluster::start(3).expect("redis cluster");
    let urls = cluster.urls();
    let joined = urls.join(",");
    let target = RedisTarget::new(urls, true);
    support::failover::killed_instance_loses_and_duplicates_nothing(target, &joined).await;
}
