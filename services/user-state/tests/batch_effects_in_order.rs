//! A partition loop's worker holds its users' messages and timer changes until the batch is
//! written, then sends messages of many users at once and each run of timer sets or cancels as
//! one request. What comes out must be what a worker performing each effect at once produces:
//! the same timers left with the scheduler, including when one batch sets, cancels and sets
//! again the timers of one user (a wait that every event restarts), and the same messages in
//! each user's order.

use std::sync::{Arc, Mutex};

use beckon_core::OutboundMessage;
use beckon_core::Timer;
use beckon_core::{Event, EventKind, Props, Ts};
use beckon_gateway::{Channel, Delivery, Gateway, GatewayError, RecordingChannel};
use beckon_journey::{Engine, load_definitions_str};
use beckon_scheduler::{AsyncTimerStore, MemoryTimers, RedisTimers, TimerStore};
use beckon_testkit::RedisServer;
use beckon_user_state::{MemoryStore, Outlet, PartitionWorker, StateStore, TimerSink, Timers};
use futures::future::BoxFuture;
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
    worker_sending_to(timers, RecordingChannel::new())
}

/// Records what it is sent after a few turns of the runtime, more for a user's first message
/// than for later ones, so sends in flight together finish out of the order they began.
struct Uneven(RecordingChannel);

impl Channel for Uneven {
    fn provider(&self) -> &str {
        "uneven"
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Delivery, GatewayError>> {
        Box::pin(async move {
            let turns = if message.step == "thanks" { 40 } else { 3 };
            for _ in 0..turns {
                tokio::task::yield_now().await;
            }
            self.0.send(message).await
        })
    }
}

fn worker_sending_to(timers: Timers, sent: RecordingChannel) -> PartitionWorker {
    let defs = load_definitions_str("defs.yaml", DEFS).expect("definitions");
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
    let outlet: Arc<dyn Outlet> = Arc::new(Gateway::new().with("email", Arc::new(Uneven(sent))));
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

/// Each user's messages (step names), in the order the channel received them.
fn by_user(sent: &RecordingChannel) -> Vec<(String, Vec<String>)> {
    let mut users: Vec<(String, Vec<String>)> = Vec::new();
    for m in sent.take() {
        match users.iter_mut().find(|(u, _)| *u == m.user_id) {
            Some((_, steps)) => steps.push(m.step),
            None => users.push((m.user_id, vec![m.step])),
        }
    }
    users.sort();
    users
}

#[actix_rt::test]
async fn held_messages_go_out_when_the_batch_is_written_in_each_users_order() {
    let held = RecordingChannel::new();
    let at_once = RecordingChannel::new();
    let mut concurrent =
        worker_sending_to(Timers::Local(Box::new(MemoryTimers::new())), held.clone())
            .with_concurrent_sends(4);
    let mut sequential = worker_sending_to(
        Timers::Local(Box::new(MemoryTimers::new())),
        at_once.clone(),
    );

    // Every user writes a review, orders again and writes another within one batch: a thank
    // you, then (the second order's wait timing out 30 hours on) a reminder and the step after
    // it, then a thank you for the third order, all for the same user, in that order.
    let mut batch = Vec::new();
    for u in 0..10 {
        let user = format!("u{u}");
        let t = HOUR + u * 1_000;
        batch.push(event(&user, 0, "Order Completed", t));
        batch.push(event(&user, 1, "Review Written", t + 60_000));
        batch.push(event(&user, 2, "Order Completed", t + 120_000));
        batch.push(event(&user, 3, "Product Viewed", t + 40 * HOUR));
        batch.push(event(&user, 4, "Order Completed", t + 41 * HOUR));
        batch.push(event(&user, 5, "Review Written", t + 42 * HOUR));
    }
    for e in &batch {
        concurrent.on_event("w", e.clone()).await.expect("apply");
        sequential.on_event("w", e.clone()).await.expect("apply");
    }
    assert!(
        held.messages().is_empty(),
        "nothing is sent before the write"
    );

    assert_eq!(concurrent.flush().await.expect("write"), 10);
    sequential.flush().await.expect("write");
    let got = by_user(&held);
    let expected = by_user(&at_once);
    assert_eq!(got.len(), 10);
    assert_eq!(
        got[0].1,
        ["thanks", "remind", "thanks", "thanks"],
        "{got:?}"
    );
    assert_eq!(got, expected);
}
