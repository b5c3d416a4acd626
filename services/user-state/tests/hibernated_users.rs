//! Idle users hibernate once written: their actor stops and their state stays in memory in
//! compact form. A timer or an event wakes them with their state intact, without a store
//! read, and the next write's compare-and-set expects the version they were written at.

use std::sync::Arc;

use beckon_core::{Duration, Event, EventKind, Props, Ts};
use beckon_gateway::{Gateway, RecordingChannel};
use beckon_journey::{Engine, load_definitions_str};
use beckon_scheduler::MemoryTimers;
use beckon_user_state::{MemoryStore, Outlet, PartitionWorker, StateStore, Timers};

const DEFS: &str = "
id: onboarding
version: 1
workspace: w
entry:
  event: Signed Up
steps:
  - id: wait
    delay: 2d
  - id: nudge
    message:
      channel: push
      body: Still there?
";

const HOUR: i64 = 3_600_000;

fn event(user: &str, id: &str, name: &str, at: i64) -> Event {
    let mut traits = Props::new();
    if name == "Signed Up" {
        traits.insert("first_name".into(), "Ada".into());
    }
    Event {
        kind: EventKind::Track,
        message_id: id.to_string(),
        user: user.to_string(),
        anonymous_id: None,
        name: name.to_string(),
        properties: Props::new(),
        traits,
        timestamp: Ts(at),
        previous_id: None,
    }
}

#[actix_rt::test]
async fn hibernated_users_wake_intact_on_timers_and_events() {
    let defs = load_definitions_str("defs.yaml", DEFS).expect("definitions");
    let store = Arc::new(MemoryStore::new());
    let recorder = RecordingChannel::new();
    let outlet: Arc<dyn Outlet> = Arc::new(Gateway::new().with("push", Arc::new(recorder.clone())));
    let mut worker = PartitionWorker::new(
        0,
        Arc::new(Engine::from_definitions(defs)),
        store.clone() as Arc<dyn StateStore>,
        Timers::Local(Box::new(MemoryTimers::new())),
        outlet,
    );
    let after = Duration(600_000);

    worker
        .on_event("w", event("ada", "a1", "Signed Up", 0))
        .await
        .expect("apply");
    worker
        .on_event("w", event("bob", "b1", "App Opened", HOUR))
        .await
        .expect("apply");

    // Unwritten state never hibernates.
    assert_eq!(worker.hibernate_idle(after).await.expect("hibernate"), 0);
    worker.flush().await.expect("flush");
    assert_eq!(
        worker.hibernate_idle(after).await.expect("hibernate"),
        1,
        "only the user idle for an hour"
    );
    assert_eq!((worker.users(), worker.hibernated()), (1, 1));
    let written = store.load("w", "ada").await.expect("load").expect("stored");

    // Two days on, the pending timer wakes the hibernated user, who gets the nudge.
    worker
        .on_event("w", event("bob", "b2", "App Opened", 49 * HOUR))
        .await
        .expect("apply");
    assert_eq!(worker.hibernated(), 0);
    let sent: Vec<_> = recorder
        .take()
        .into_iter()
        .filter(|m| m.user_id == "ada")
        .collect();
    assert_eq!(sent.len(), 1, "the nudge goes out once");
    assert_eq!(sent[0].step, "nudge");

    // The write expects the version stored before hibernation, so it goes through.
    worker.flush().await.expect("flush after waking");
    let state = worker.user("w", "ada").await.expect("state");
    assert!(state.version > written.version);
    assert_eq!(
        store
            .load("w", "ada")
            .await
            .expect("load")
            .map(|s| s.version),
        Some(state.version)
    );

    // Hibernated again, a redelivered event is still recognised and changes nothing.
    worker
        .on_event("w", event("bob", "b3", "App Opened", 50 * HOUR))
        .await
        .expect("apply");
    worker.flush().await.expect("flush");
    assert_eq!(worker.hibernate_idle(after).await.expect("hibernate"), 1);
    worker
        .on_event("w", event("ada", "a1", "Signed Up", 0))
        .await
        .expect("apply");
    let again = worker.user("w", "ada").await.expect("state");
    assert_eq!(again.total_events, state.total_events);
    assert_eq!(again.version, state.version);
    assert_eq!(again.traits, state.traits);
    assert_eq!(again.journeys, state.journeys);
    assert_eq!(again.decisions, state.decisions);
}

#[actix_rt::test]
async fn hibernated_users_leave_memory_after_the_eviction_period() {
    let store = Arc::new(MemoryStore::new());
    let outlet: Arc<dyn Outlet> =
        Arc::new(Gateway::new().with("push", Arc::new(RecordingChannel::new())));
    let mut worker = PartitionWorker::new(
        0,
        Arc::new(Engine::new(Vec::new())),
        store.clone() as Arc<dyn StateStore>,
        Timers::Local(Box::new(MemoryTimers::new())),
        outlet,
    );

    worker
        .on_event("w", event("ada", "a1", "App Opened", 0))
        .await
        .expect("apply");
    worker
        .on_event("w", event("bob", "b1", "App Opened", HOUR))
        .await
        .expect("apply");
    worker.flush().await.expect("flush");
    worker
        .hibernate_idle(Duration(600_000))
        .await
        .expect("hibernate");
    assert_eq!(worker.hibernated(), 1);

    worker
        .on_event("w", event("bob", "b2", "App Opened", 30 * HOUR))
        .await
        .expect("apply");
    worker.flush().await.expect("flush");
    worker.evict_idle(Duration::hours(24));
    assert_eq!(worker.hibernated(), 0, "a day idle: out of memory");

    // The next event reads the user from the store, history intact.
    worker
        .on_event("w", event("ada", "a2", "App Opened", 31 * HOUR))
        .await
        .expect("apply");
    let state = worker.user("w", "ada").await.expect("state");
    assert_eq!(state.total_events, 2);
    assert!(state.has_applied("a1"));
}
