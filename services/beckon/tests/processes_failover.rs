//! Separate processes on one real Redis server: ingest, scheduler, gateway and three
//! user-state instances. One user-state instance is killed with SIGKILL mid-stream and
//! started again later. Every acknowledged event is applied exactly once, and every expected
//! message goes out once.

mod support;

use beckon::serve::redis_target::RedisTarget;
use beckon_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_user_state_instance_loses_and_duplicates_nothing() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let target = RedisTarget::new(vec![url.clone()], false);
    support::failover::killed_instance_loses_and_duplicates_nothing(target, &url).await;
}
