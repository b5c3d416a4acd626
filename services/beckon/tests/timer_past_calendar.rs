//! A journey whose wait ends past the calendar (years -9999 to 9999) on the services as
//! separate processes: such a timer can never come due, and the scheduler refuses it. It is
//! not set, so the users wait in the step until an event moves them on, and every other
//! event of their partitions is applied as usual instead of the partition retrying the
//! refused timer for ever. Specs refuse waits that long, so here the events come near the
//! calendar's end instead. Ingest refuses events that far ahead of its clock, so they are
//! written straight to the partition logs, as a log restored from elsewhere could hold them.

mod support;

use std::collections::HashMap;

use beckon_ingest::log::{EventLog as _, LogConfig, RedisLog};
use beckon_ingest::segment;
use beckon_proto::v1::PendingRequest;
use beckon_proto::v1::scheduler_client::SchedulerClient;
use beckon_testkit::RedisServer;
use serde_json::json;
use support::deployment::{Deployment, PARTITIONS, WORKSPACE, wait_applied};

const USERS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_past_the_calendar_holds_up_no_partition() {
    let redis = RedisServer::start().expect("redis-server");
    // The longest wait a spec takes, about a hundred years, from events in the year 9990:
    // the cart reminder would come due after year 9999.
    let deployment = Deployment::start(&redis.url(), "36500d", 1, 1_500);
    let conn =
        redis::aio::ConnectionManager::new(redis::Client::open(redis.url().as_str()).expect("url"))
            .await
            .expect("connect");
    let log = RedisLog::new(
        conn.clone(),
        LogConfig {
            partitions: PARTITIONS,
            ..LogConfig::default()
        },
    );

    let at = "9990-01-01T00:00:00.000Z";
    let mut acked = HashMap::new();
    for (round, name) in ["Product Added", "Page Viewed"].into_iter().enumerate() {
        let events: Vec<_> = (0..USERS)
            .map(|u| {
                let line = json!({
                    "type": "track",
                    "userId": format!("user-{u}"),
                    "event": name,
                    "messageId": format!("user-{u}-{round}"),
                    "timestamp": at.replace(".000Z", &format!(".00{round}Z")),
                    "properties": {"name": "lamp"},
                });
                segment::parse_line(&line.to_string()).expect("a well-formed event")
            })
            .collect();
        for appended in log.append_all(WORKSPACE, &events, None).await {
            appended.expect("appended");
        }
        for u in 0..USERS {
            *acked.entry(format!("user-{u}")).or_insert(0u64) += 1;
        }
    }

    // Every event of every partition is applied: both events of each user.
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
