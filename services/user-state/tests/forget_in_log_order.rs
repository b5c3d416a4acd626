//! Forgetting a user reaches the copies held in memory, in log order. ForgetUser is called over
//! gRPC; the partition's worker reads the same Redis log the forget entry went to. A live user,
//! a hibernated user and a timer set before the forget are each let go of: what comes after
//! the forget starts from an empty user, and Redis keeps nothing naming the user.

mod support;

use std::sync::Arc;

use beckon_core::{Clock, Duration, Event, EventKind, Props, Ts, VirtualClock};
use beckon_gateway::{Gateway, RecordingChannel, RedisKeyStore, RedisKeysConfig};
use beckon_ingest::log::{EventLog, LogConfig, RedisLog};
use beckon_journey::{Engine, load_definitions_str};
use beckon_proto::v1::GetUserRequest;
use beckon_proto::v1::user_state_client::UserStateClient;
use beckon_scheduler::{AsyncTimerStore, RedisTimers};
use beckon_testkit::RedisServer;
use beckon_user_state::grpc::UserStateService;
use beckon_user_state::redis::RedisStateStore;
use beckon_user_state::{Outlet, PartitionWorker, StateStore, TimerSink, Timers, live};
use redis::aio::ConnectionManager;
use tonic::transport::Channel;

/// One partition, so every user of a test shares its worker.
const PARTITIONS: u32 = 1;

const HOUR: i64 = 3_600_000;

/// Opening the app within two days of signing up earns a welcome back; otherwise a nudge.
/// A new sign-up also gets a greeting at once, so a send key exists to be erased.
const DEFS: &str = "
id: onboarding
version: 1
workspace: w
entry:
  event: Signed Up
steps:
  - id: wait
    wait_for:
      event: App Opened
      timeout: 2d
      on_event: back
  - id: nudge
    message:
      channel: push
      body: Still there?
    next: exit
  - id: back
    message:
      channel: push
      body: Welcome back, {{ user.first_name }}
---
id: greeting
version: 1
workspace: w
entry:
  event: Signed Up
steps:
  - id: hello
    message:
      channel: push
      body: Hello {{ user.first_name }}
";

/// The parts of one test: a Redis of its own, the stores on it, the partition's worker, and
/// the UserState service on loopback.
struct Setup {
    worker: PartitionWorker,
    log: Arc<dyn EventLog>,
    timers: Arc<dyn AsyncTimerStore>,
    store: Arc<dyn StateStore>,
    sent: RecordingChannel,
    users: UserStateClient<Channel>,
    server: RedisServer,
}

async fn setup() -> Setup {
    let server = RedisServer::start().expect("redis");
    let ns = server.namespace().to_string();
    let client = redis::Client::open(server.url()).expect("client");
    let con: ConnectionManager = client.get_connection_manager().await.expect("connect");

    let store: Arc<dyn StateStore> = Arc::new(RedisStateStore::new(con.clone(), &ns, PARTITIONS));
    let config = LogConfig {
        namespace: ns.clone(),
        partitions: PARTITIONS,
        ..LogConfig::default()
    };
    let log: Arc<dyn EventLog> = Arc::new(RedisLog::new(con.clone(), config));
    let timers: Arc<dyn AsyncTimerStore> = Arc::new(RedisTimers::new(con.clone(), &ns, PARTITIONS));
    let keys = RedisKeyStore::new(
        con,
        RedisKeysConfig {
            namespace: ns,
            partitions: PARTITIONS,
            ttl: Duration::hours(24),
        },
    );
    let sent = RecordingChannel::new();
    let outlet: Arc<dyn Outlet> = Arc::new(
        Gateway::new()
            .with_key_store(Arc::new(keys))
            .with("push", Arc::new(sent.clone())),
    );

    let defs = load_definitions_str("defs.yaml", DEFS).expect("definitions");
    let sink: Arc<dyn TimerSink> = Arc::new(timers.clone());
    let worker = PartitionWorker::new(
        0,
        Arc::new(Engine::from_definitions(defs)),
        store.clone(),
        Timers::Remote(sink),
        outlet,
    );

    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new(Ts(0)));
    let users = support::serve(UserStateService::new(store.clone(), log.clone(), clock)).await;
    Setup {
        worker,
        log,
        timers,
        store,
        sent,
        users,
        server,
    }
}

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

impl Setup {
    async fn track(&self, user: &str, id: &str, name: &str, at: i64) {
        self.log
            .append("w", &event(user, id, name, at), None)
            .await
            .expect("append");
    }

    /// What the partition loop does with each batch, until the log is empty: apply every
    /// entry in order, write the changed users, acknowledge (which deletes the entries). A
    /// batch that fails is read again from the user's last written state, as the loop does.
    async fn drain(&mut self) {
        let reader = live::consumer("w", 0);
        self.log.ensure_group(&reader).await.expect("group");
        for _ in 0..10 {
            let mut entries = self.log.pending(&reader, 100).await.expect("pending");
            if entries.is_empty() {
                entries = self
                    .log
                    .read(&reader, 100, Duration(0))
                    .await
                    .expect("read");
            }
            if entries.is_empty() {
                return;
            }
            let offsets: Vec<String> = entries.iter().map(|e| e.offset.clone()).collect();
            match self.apply(entries).await {
                Ok(()) => {
                    self.log.ack(&reader, &offsets).await.expect("ack");
                }
                Err(_) => {
                    self.worker.discard_unsaved();
                }
            }
        }
        panic!("the log did not drain");
    }

    async fn apply(
        &mut self,
        entries: Vec<beckon_ingest::log::LogEntry>,
    ) -> Result<(), beckon_user_state::StateError> {
        for entry in entries {
            let trigger = entry.trigger.expect("a readable entry");
            self.worker.on_trigger("w", trigger).await?;
        }
        self.worker.flush().await.map(drop)
    }

    /// What the scheduler's firing loop does: claim the timers due by `now`, append them to
    /// the log, acknowledge them. Returns the users whose timers fired.
    async fn fire(&self, now: i64) -> Vec<String> {
        let due = self.claim(now).await;
        self.deliver(&due).await;
        due.into_iter().map(|t| t.user).collect()
    }

    async fn claim(&self, now: i64) -> Vec<beckon_core::Timer> {
        self.timers
            .claim_due("w", 0, Ts(now), 100)
            .await
            .expect("claim")
    }

    async fn deliver(&self, timers: &[beckon_core::Timer]) {
        for t in timers {
            self.log.append_fired(t, None).await.expect("append fired");
        }
        self.timers.ack_many(timers).await.expect("ack timers");
    }

    async fn forget(&mut self, user: &str) -> u64 {
        self.users
            .forget_user(GetUserRequest {
                workspace: "w".into(),
                user_id: user.into(),
            })
            .await
            .expect("forget")
            .into_inner()
            .keys_removed
    }

    /// Steps of the messages sent to `user` since the last look.
    fn sent_to(&self, user: &str) -> Vec<String> {
        self.sent
            .take()
            .into_iter()
            .filter(|m| m.user_id == user)
            .map(|m| m.step)
            .collect()
    }

    /// Where the test's Redis still names `needle`: key names and contents of every type.
    fn traces_of(&self, needle: &str) -> Vec<String> {
        self.server.mentions(needle).expect("scan")
    }
}

#[actix_rt::test]
async fn a_live_user_forgotten_starts_fresh_on_the_next_event() {
    let mut s = setup().await;
    s.track("ada", "a1", "Signed Up", 0).await;
    s.drain().await;
    assert_eq!(s.sent_to("ada"), ["hello"]);
    assert_eq!(s.worker.users(), 1, "ada's actor is live");

    s.forget("ada").await;
    // The app opened after the forget: the old state would have earned a welcome back.
    s.track("ada", "a2", "App Opened", HOUR).await;
    s.drain().await;

    assert!(
        s.sent_to("ada").is_empty(),
        "nothing follows from the old state"
    );
    let fresh = s.store.load("w", "ada").await.expect("load").expect("new");
    assert_eq!(fresh.total_events, 1, "only the event after the forget");
    assert!(fresh.journeys.is_empty());
    assert!(!fresh.traits.contains_key("first_name"));

    // The timer the old state set was erased with it.
    assert!(s.fire(3 * 24 * HOUR).await.is_empty());
    s.drain().await;
    assert!(s.sent_to("ada").is_empty());
}

#[actix_rt::test]
async fn a_hibernated_user_forgotten_starts_fresh_on_the_next_event() {
    let mut s = setup().await;
    s.track("ada", "a1", "Signed Up", 0).await;
    s.track("bob", "b1", "Page Viewed", HOUR).await;
    s.drain().await;
    assert_eq!(s.sent_to("ada"), ["hello"]);
    // An hour of partition time later, ada is idle long enough to hibernate; bob is not.
    let hibernated = s
        .worker
        .hibernate_idle(Duration(10 * 60_000))
        .await
        .expect("hibernate");
    assert_eq!((hibernated, s.worker.hibernated()), (1, 1));

    s.forget("ada").await;
    s.track("ada", "a2", "App Opened", 2 * HOUR).await;
    s.drain().await;

    assert_eq!(
        s.worker.hibernated(),
        0,
        "the record was dropped, not woken"
    );
    assert!(
        s.sent_to("ada").is_empty(),
        "nothing follows from the old state"
    );
    let fresh = s.store.load("w", "ada").await.expect("load").expect("new");
    assert_eq!(fresh.total_events, 1);
    assert!(fresh.journeys.is_empty());

    // Bob was not touched.
    assert!(s.store.load("w", "bob").await.expect("load").is_some());
}

#[actix_rt::test]
async fn a_timer_set_before_the_forget_fires_no_message_after_it() {
    let mut s = setup().await;
    s.track("ada", "a1", "Signed Up", 0).await;
    s.drain().await;
    assert_eq!(s.sent_to("ada"), ["hello"]);

    // The firing loop claims the timeout just before the forget, and it reaches the log just
    // after it: a fired timer already on its way when the user is forgotten.
    let claimed = s.claim(2 * 24 * HOUR).await;
    assert_eq!(claimed.len(), 1);
    s.forget("ada").await;
    s.deliver(&claimed).await;
    s.drain().await;

    assert!(
        s.sent_to("ada").is_empty(),
        "the timer found no state to act on"
    );
    assert!(
        s.store.load("w", "ada").await.expect("load").is_none(),
        "a dropped timer brings nobody back"
    );
    assert_eq!(s.worker.users(), 0);
}
#[actix_rt::test]
async fn a_delivery_outcome_after_the_forget_brings_nobody_back() {
    let mut s = setup().await;
    s.track("ada", "a1", "Signed Up", 0).await;
    s.drain().await;
    let hello = s.sent.take().pop().expect("the greeting");

    // The provider reports the greeting delivered only after the user was forgotten.
    s.forget("ada").await;
    let delivered = beckon_gateway::events::delivery_event(
        beckon_gateway::events::MESSAGE_DELIVERED,
        &hello,
        "apns",
        "",
        Ts(HOUR),
        Props::new(),
    );
    s.log.append("w", &delivered, None).await.expect("append");
    s.drain().await;

    assert!(
        s.store.load("w", "ada").await.expect("load").is_none(),
        "the outcome of a message to a forgotten user starts no new user"
    );
    assert_eq!(s.worker.users(), 0);
    assert!(s.traces_of("ada").is_empty(), "{:?}", s.traces_of("ada"));

    // An event of the user's own after the forget does start one.
    s.track("ada", "a2", "App Opened", 2 * HOUR).await;
    s.drain().await;
    assert!(s.store.load("w", "ada").await.expect("load").is_some());
}

#[actix_rt::test]
async fn nothing_in_redis_names_a_forgotten_user() {
    let mut s = setup().await;
    let target = "forget-me-7f3a";
    s.track(target, "t1", "Signed Up", 0).await;
    s.track("bob", "b1", "Signed Up", 0).await;
    s.drain().await;
    // The timeout fires: a nudge goes out and a fired-timer marker is kept. Then the user
    // enters again, so a timer is pending too.
    let fired = s.fire(2 * 24 * HOUR).await;
    assert_eq!(fired.len(), 2);
    s.drain().await;
    assert_eq!(s.sent_to(target), ["hello", "nudge"]);
    s.track(target, "t2", "Signed Up", 3 * 24 * HOUR).await;
    s.drain().await;
    assert!(!s.traces_of(target).is_empty(), "the check finds the user");

    let removed = s.forget(target).await;
    assert!(removed > 0);
    // Erased by the call itself, before the worker applied the entry; the entry in the log
    // is all that names the user then.
    let left = s.traces_of(target);
    assert!(
        left.iter().all(|t| t.ends_with(":log")),
        "only the forget entry: {left:?}"
    );

    s.drain().await;
    assert_eq!(s.worker.users(), 1, "bob alone");
    let left = s.traces_of(target);
    assert!(left.is_empty(), "{left:?}");
    assert!(!s.traces_of("bob").is_empty(), "bob is kept");
}
