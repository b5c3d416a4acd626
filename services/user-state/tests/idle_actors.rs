//! Idle actors stop once their state is written, and come back from the store unchanged.

use std::sync::Arc;

use beckon_core::{Duration, Event, EventKind, Props, Ts};
use beckon_gateway::{Gateway, RecordingChannel};
use beckon_journey::Engine;
use beckon_scheduler::MemoryTimers;
use beckon_user_state::{MemoryStore, Outlet, PartitionWorker, StateStore, Timers};

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

#[actix_rt::test]
async fn idle_users_are_stopped_and_reloaded_intact() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let outlet: Arc<dyn Outlet> =
        Arc::new(Gateway::new().with("push", Arc::new(RecordingChannel::new())));
    let mut worker = PartitionWorker::new(
        0,
        Arc::new(Engine::new(Vec::new())),
        store.clone(),
        Timers::Local(Box::new(MemoryTimers::new())),
        outlet,
    );
    let hour = 3_600_000;

    worker
        .on_event("w", event("early", "e1", 0))
        .await
        .expect("apply");
    worker
        .on_event("w", event("late", "l1", 2 * hour))
        .await
        .expect("apply");

    // Unwritten state is never dropped: nothing stops before the flush.
    assert_eq!(worker.evict_idle(Duration::hours(1)), 0);
    worker.flush().await.expect("flush");
    assert_eq!(
        worker.evict_idle(Duration::hours(1)),
        1,
        "only the user idle for 2 h"
    );
    assert_eq!(worker.users(), 1);

    // The next trigger loads the stopped user from the store, history intact.
    worker
        .on_event("w", event("early", "e2", 3 * hour))
        .await
        .expect("apply");
    let state = worker.user("w", "early").await.expect("state");
    assert_eq!(state.total_events, 2);
    assert!(
        state.has_applied("e1"),
        "the first event is remembered across the stop"
    );
}
