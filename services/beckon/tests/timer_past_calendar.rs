//! A journey whose wait ends past the calendar (years -9999 to 9999) on the services as
//! separate processes: such a timer can never come due, and the scheduler refuses it. It is
//! not set, so the users wait in the step until an event moves them on, and every other
//! event of their partitions is applied as usual instead of the partition retrying the
//! refused timer for ever. Specs refuse waits that long, so here the events come near the
//! calendar's end instead.

mod support;

use std::collections::HashMap;

use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::scheduler_client::SchedulerClient;
use beckon_proto::v1::{BatchRequest, PendingRequest};
use beckon_testkit::RedisServer;
use serde_json::json;
use support::deployment::{Deployment, PARTITIONS, WORKSPACE, wait_applied};
use support::track;

const USERS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_past_the_calendar_holds_up_no_partition() {
    let redis = RedisServer::start().expect("redis-server");
    // The longest wait a spec takes, about a hundred years, from events in the year 9990:
    // the cart reminder would come due after year 9999.
    let deployment = Deployment::start(&redis.url(), "36500d", 1, 1_500);
    let mut client = IngestClient::connect(deployment.ingest.url())
        .await
        .expect("connect ingest");

    let at = beckon_core::Ts::parse_rfc3339("9990-01-01T00:00:00Z")
        .expect("an instant")
        .as_millis();
    let mut acked = HashMap::new();
    for (round, name) in ["Product Added", "Page Viewed"].into_iter().enumerate() {
        let events = (0..USERS)
            .map(|u| {
                let user = format!("user-{u}");
                let id = format!("{user}-{round}");
                track(&user, name, &id, at + round as i64, json!({"name": "lamp"}))
            })
            .collect();
        client
            .batch(BatchRequest {
                workspace: WORKSPACE.into(),
                events,
            })
            .await
            .expect("batch");
        for u in 0..USERS {
            *acked.entry(format!("user-{u}")).or_insert(0u64) += 1;
        }
    }

    // Every event of every partition is applied: both events of each user.
    let conn =
        redis::aio::ConnectionManager::new(redis::Client::open(redis.url().as_str()).expect("url"))
            .await
            .expect("connect");
    let store = beckon_user_state::redis::RedisStateStore::new(conn, "bk", PARTITIONS);
    let off = wait_applied(&store, &acked, 300).await;
    assert!(off.is_empty(), "users not applied: {off:?}");

    // Each user entered the journey and waits in it; no timer was stored for the wait.
    let state = beckon_user_state::StateStore::load(&store, WORKSPACE, "user-0")
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(state.journeys.len(), 1, "user-0 is in the cart journey");
    let pending = SchedulerClient::connect(deployment.scheduler.url())
        .await
        .expect("connect scheduler")
        .pending(PendingRequest {
            workspace: WORKSPACE.into(),
            partitions: Vec::new(),
        })
        .await
        .expect("pending")
        .into_inner()
        .pending;
    assert_eq!(pending, 0, "no timer past the calendar stored");
    assert!(deployment.messages().is_empty(), "nothing sent");
}
