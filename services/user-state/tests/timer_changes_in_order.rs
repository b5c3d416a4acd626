//! A partition worker holds its users' timer changes for the scheduler until the batch is
//! written, then sends each run of sets and each run of cancels as one request. The timers the
//! scheduler ends up with must be exactly those a worker keeping its timers in memory ends up
//! with after the same events, including when one batch sets, cancels and sets again the
//! timers of one user (a wait that every event restarts).

use std::sync::{Arc, Mutex};

use beckon_core::Timer;
use beckon_core::{Event, EventKind, Props, Ts};
use beckon_gateway::{Gateway, RecordingChannel};
use beckon_journey::{Engine, load_definitions_str};
use beckon_scheduler::{AsyncTimerStore, MemoryTimers, RedisTimers, TimerStore};
use beckon_testkit::RedisServer;
use beckon_user_state::{MemoryStore, Outlet, PartitionWorker, StateStore, TimerSink, Timers};
use redis::aio::ConnectionManager;

const HOUR: i64 = 3_600_000;

/// Any event restarts the quiet period; an order also starts a reminder of its own, which a
/// review cancels.
const DEFS: &str = "
id: win-back
version: 1
workspace: w
entry:
  event: Order Completed
  reentry: after_exit
steps:
  - id: quiet
    wait_for:
      event: '*'
      timeout: 48h
      on_event: quiet
      on_timeout: email
  - id: email
    message:
      channel: email
      subject: We miss you
      body: New arrivals are waiting.
---
id: review
version: 1
workspace: w
entry:
  event: Order Completed
  reentry: after_exit
steps:
  - id: ask
    wait_for:
      event: Review Written
      timeout: 30h
      on_event: thanks
      on_timeout: remind
  - id: remind
    message:
      channel: email
      subject: How was it?
      body: Tell us.
  - id: thanks
    message:
      channel: email
      subject: Thanks
      body: Thanks for the review.
";

fn event(user: &str, n: usize, name: &str, at: i64) -> Event {
    Event {
        kind: EventKind::Track,
        message_id: format!("{user}-{n}"),
        user: user.to_string(),
        anonymous_id: None,
        name: name.to_string(),
        properties: Props::new(),
        traits: Props::new(),
        timestamp: Ts(at),
        previous_id: None,
    }
}

/// Twelve users, each ordering, browsing, reviewing and ordering again, interleaved so that
/// every batch holds several changes to the same users' timers.
fn events() -> Vec<Event> {
    let names = [
        "Order Completed",
        "Product Viewed",
        "Review Written",
        "Product Viewed",
        "Order Completed",
        "Cart Viewed",
        "Product Viewed",
    ];
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for u in 0..12 {
            let at = HOUR + (i as i64) * 60_000 + u * 1_000;
            out.push(event(&format!("u{u}"), i, name, at));
        }
    }
    out
}

fn worker(timers: Timers) -> PartitionWorker {
    let defs = load_definitions_str("defs.yaml", DEFS).expect("definitions");
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
    let outlet: Arc<dyn Outlet> =
        Arc::new(Gateway::new().with("email", Arc::new(RecordingChannel::new())));
    PartitionWorker::new(
        0,
        Arc::new(Engine::from_definitions(defs)),
        store,
        timers,
        outlet,
    )
}

/// The in-memory timers of a worker, left readable to the test after the worker took them.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<MemoryTimers>>);

impl TimerStore for Shared {
    fn schedule(&mut self, timer: Timer) {
        self.0.lock().expect("timers").schedule(timer)
    }

    fn cancel(&mut self, workspace: &str, user: &str, id: &str) -> bool {
        self.0.lock().expect("timers").cancel(workspace, user, id)
    }

    fn cancel_user(&mut self, workspace: &str, user: &str) -> usize {
        self.0.lock().expect("timers").cancel_user(workspace, user)
    }

    fn pop_due(&mut self, now: Ts, limit: usize) -> Vec<Timer> {
        self.0.lock().expect("timers").pop_due(now, limit)
    }

    fn next_due(&self) -> Option<Ts> {
        self.0.lock().expect("timers").next_due()
    }

    fn len(&self) -> usize {
        self.0.lock().expect("timers").len()
    }
}

/// (user, timer id, due) of every timer, sorted.
type Pending = Vec<(String, String, i64)>;

fn sorted(timers: impl IntoIterator<Item = Timer>) -> Pending {
    let mut v: Pending = timers
        .into_iter()
        .map(|t| (t.user, t.id, t.due.as_millis()))
        .collect();
    v.sort();
    v
}

#[actix_rt::test]
async fn batched_timer_changes_leave_the_scheduler_as_immediate_ones_would() {
    let server = RedisServer::start().expect("redis");
    let client = redis::Client::open(server.url()).expect("client");
    let con: ConnectionManager = client.get_connection_manager().await.expect("connect");
    let redis_timers: Arc<dyn AsyncTimerStore> =
        Arc::new(RedisTimers::new(con, server.namespace(), 1));
    let sink: Arc<dyn TimerSink> = Arc::new(redis_timers.clone());

    let mut remote = worker(Timers::Remote(sink));
    let kept = Shared::default();
    let mut local = worker(Timers::Local(Box::new(kept.clone())));

    // Batches of 20 entries, as the partition loop would read them.
    for batch in events().chunks(20) {
        for e in batch {
            remote.on_event("w", e.clone()).await.expect("remote apply");
            local.on_event("w", e.clone()).await.expect("local apply");
        }
        remote.flush().await.expect("remote write");
        local.flush().await.expect("local write");
    }

    let far = Ts(1_000 * HOUR);
    let expected = sorted(kept.clone().pop_due(far, 10_000));
    let got = sorted(
        redis_timers
            .claim_due("w", 0, far, 10_000)
            .await
            .expect("claim"),
    );

    // Every user has the restarted quiet period and, after the second order, a review
    // reminder: two timers each, at the times the last events set them.
    assert_eq!(expected.len(), 24, "{expected:?}");
    assert_eq!(got, expected);
}
