//! The scheduler is killed with SIGKILL while 10,000 timers are pending, and started again;
//! then killed again in the middle of firing them. Every timer fires, and each user's
//! reminder is applied once by user-state and sent once.

mod support;

use beckon_core::DecisionKind;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::scheduler_client::SchedulerClient;
use beckon_proto::v1::{BatchRequest, PendingRequest};
use beckon_testkit::RedisServer;
use beckon_user_state::StateStore;
use serde_json::json;
use support::deployment::{
    Deployment, PARTITIONS, Role, WORKSPACE, duplicate_sends, reminders, wait_applied,
};
use support::{eventually, track, wall_clock_ms};

const USERS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pending_timer_fires_once_after_a_scheduler_crash() {
    let redis = RedisServer::start().expect("redis-server");
    // Every add is stamped with one instant, so every reminder is due at once, 40 s later:
    // time to set all timers (and kill the scheduler) before the first comes due, even on a
    // busy machine.
    let mut deployment = Deployment::start(&redis.url(), "40s", 2, 1_500);

    let t0 = wall_clock_ms();
    let mut client = IngestClient::connect(deployment.ingest.url())
        .await
        .expect("connect ingest");
    let mut acked = std::collections::HashMap::new();
    let at = wall_clock_ms();
    for first in (0..USERS).step_by(1_000) {
        let events = (first..first + 1_000)
            .map(|u| {
                let user = format!("user-{u}");
                let id = format!("{user}-0");
                track(&user, "Product Added", &id, at, json!({"name": "lamp"}))
            })
            .collect();
        let r = client
            .batch(BatchRequest {
                workspace: WORKSPACE.into(),
                events,
            })
            .await
            .expect("batch")
            .into_inner();
        assert!(r.results.iter().all(|r| matches!(
            r.outcome,
            Some(beckon_proto::v1::batch_result::Outcome::Ack(_))
        )));
        for u in first..first + 1_000 {
            acked.insert(format!("user-{u}"), 1u64);
        }
    }

    // Wait until every reminder timer sits in the scheduler, then kill it.
    let mut scheduler = SchedulerClient::connect(deployment.scheduler.url())
        .await
        .expect("connect scheduler");
    let mut pending = 0;
    for _ in 0..350 {
        pending = scheduler
            .pending(PendingRequest {
                workspace: WORKSPACE.into(),
                partitions: Vec::new(),
            })
            .await
            .expect("pending")
            .into_inner()
            .pending;
        if pending >= USERS as u64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(pending, USERS as u64, "all timers set before any came due");
    assert!(deployment.messages().is_empty(), "nothing fired yet");
    deployment.kill(Role::Scheduler);
    eprintln!(
        "scheduler killed with {pending} timers pending, {} ms after the first send",
        wall_clock_ms() - t0
    );
    deployment.start_again(Role::Scheduler);

    // Once the first reminders go out, kill it again: now in the middle of firing, with
    // timers claimed and not all delivered. Their claims lapse and they fire again.
    let firing = eventually(1_200, || !deployment.messages().is_empty()).await;
    assert!(firing, "timers fire after the restart");
    deployment.kill(Role::Scheduler);
    eprintln!(
        "scheduler killed again with {} reminders out, {} ms after the first send",
        reminders(&deployment.messages()).len(),
        wall_clock_ms() - t0
    );
    deployment.start_again(Role::Scheduler);

    // Every user's reminder goes out, once.
    let all_sent = eventually(1_200, || reminders(&deployment.messages()).len() == USERS).await;
    eprintln!(
        "reminders out {} ms after the first send",
        wall_clock_ms() - t0
    );
    let messages = deployment.messages();
    let sent = reminders(&messages);
    assert!(all_sent, "reminders sent: {} of {USERS}", sent.len());
    assert!(sent.values().all(|n| *n == 1), "a reminder sent twice");
    assert!(duplicate_sends(&messages).is_empty());

    // And user-state applied each timer once: one event, one send, the journey over.
    let conn =
        redis::aio::ConnectionManager::new(redis::Client::open(redis.url().as_str()).expect("url"))
            .await
            .expect("connect");
    let store = beckon_user_state::redis::RedisStateStore::new(conn, "bk", PARTITIONS);
    assert!(wait_applied(&store, &acked, 100).await.is_empty());
    for u in 0..USERS {
        let user = format!("user-{u}");
        let state = store
            .load(WORKSPACE, &user)
            .await
            .expect("load")
            .expect("stored");
        let sends = state
            .decisions
            .iter()
            .filter(|d| d.kind == DecisionKind::Sent)
            .count();
        assert_eq!(sends, 1, "{user} decided to send once");
        assert!(state.journeys.is_empty(), "{user}'s journey is over");
    }
}
