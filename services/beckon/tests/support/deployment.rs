//! A whole deployment as separate `beckon serve` processes on one Redis: scheduler, gateway,
//! ingest and user-state instances, each restartable on its own address, plus a client that
//! keeps sending events and retries what may be retried.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use beckon_proto::v1::BatchRequest;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_user_state::StateStore;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Code;

use super::{Served, examples, recorded, track, wall_clock_ms};

pub const PARTITIONS: u32 = 8;
pub const WORKSPACE: &str = "default";
/// How long the scheduler's claim on a due timer lasts: short, so timers claimed by a
/// scheduler that was killed fire again within the test.
pub const TIMER_CLAIM_MS: &str = "2000";

/// Which process of the deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Scheduler,
    Gateway,
    Ingest,
    UserState(usize),
}

pub struct Deployment {
    /// Holds the journeys and the gateway's record of sent messages.
    pub dir: tempfile::TempDir,
    pub messages: PathBuf,
    redis_url: String,
    journeys: String,
    lease_ttl_ms: u64,
    pub scheduler: Served,
    pub gateway: Served,
    pub ingest: Served,
    pub user_states: Vec<Served>,
}

impl Deployment {
    /// Starts every service on `redis_url`, with the cart journey's wait shortened to
    /// `cart_timeout` (a journey duration such as `2s`) so reminders come due during a test.
    pub fn start(
        redis_url: &str,
        cart_timeout: &str,
        user_states: usize,
        lease_ttl_ms: u64,
    ) -> Deployment {
        let dir = tempfile::tempdir().expect("tempdir");
        let messages = dir.path().join("messages.jsonl");
        let spec_dir = dir.path().join("journeys");
        std::fs::create_dir_all(&spec_dir).expect("mkdir");
        let cart = std::fs::read_to_string(examples().join("cart-abandonment.yaml")).expect("spec");
        std::fs::write(
            spec_dir.join("cart.yaml"),
            cart.replace("timeout: 1h", &format!("timeout: {cart_timeout}")),
        )
        .expect("write spec");
        let journeys = spec_dir.to_str().unwrap_or_default().to_string();

        let any = "127.0.0.1:0";
        let base = |service: &str, extra: &[String]| -> Served {
            let mut args = vec![
                "--redis-url".to_string(),
                redis_url.to_string(),
                "--partitions".to_string(),
                PARTITIONS.to_string(),
            ];
            args.extend_from_slice(extra);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            Served::start_on(service, any, &refs)
        };
        let scheduler = base(
            "scheduler",
            &["--timer-claim-ms".into(), TIMER_CLAIM_MS.into()],
        );
        let gateway = base(
            "gateway",
            &[
                "--messages-out".into(),
                messages.to_str().unwrap_or_default().into(),
            ],
        );
        let ingest = base("ingest", &[]);
        let mut deployment = Deployment {
            dir,
            messages,
            redis_url: redis_url.to_string(),
            journeys,
            lease_ttl_ms,
            scheduler,
            gateway,
            ingest,
            user_states: Vec::new(),
        };
        for n in 0..user_states {
            let served = deployment.launch(Role::UserState(n), any);
            deployment.user_states.push(served);
        }
        deployment
    }

    fn args(&self, role: Role) -> Vec<String> {
        let mut args = vec![
            "--redis-url".to_string(),
            self.redis_url.clone(),
            "--partitions".to_string(),
            PARTITIONS.to_string(),
        ];
        match role {
            Role::Scheduler => {
                args.extend(["--timer-claim-ms".to_string(), TIMER_CLAIM_MS.to_string()])
            }
            Role::Ingest => {}
            Role::Gateway => args.extend([
                "--messages-out".to_string(),
                self.messages.to_str().unwrap_or_default().to_string(),
            ]),
            Role::UserState(n) => args.extend([
                "--scheduler-url".to_string(),
                self.scheduler.url(),
                "--gateway-url".to_string(),
                self.gateway.url(),
                "--journeys".to_string(),
                self.journeys.clone(),
                "--lease-ttl-ms".to_string(),
                self.lease_ttl_ms.to_string(),
                "--instance".to_string(),
                format!("us-{n}"),
            ]),
        }
        args
    }

    fn service(role: Role) -> &'static str {
        match role {
            Role::Scheduler => "scheduler",
            Role::Gateway => "gateway",
            Role::Ingest => "ingest",
            Role::UserState(_) => "user-state",
        }
    }

    fn launch(&self, role: Role, listen: &str) -> Served {
        let args = self.args(role);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Served::start_on(Self::service(role), listen, &refs)
    }

    fn slot(&mut self, role: Role) -> &mut Served {
        match role {
            Role::Scheduler => &mut self.scheduler,
            Role::Gateway => &mut self.gateway,
            Role::Ingest => &mut self.ingest,
            Role::UserState(n) => &mut self.user_states[n],
        }
    }

    /// Stops a process (SIGTERM and its drain, or SIGKILL) and starts it again on the same
    /// address, so its clients' URLs stay valid.
    pub fn restart(&mut self, role: Role, graceful: bool) {
        let addr = self.slot(role).addr.clone();
        if graceful {
            self.slot(role).terminate();
        } else {
            self.slot(role).kill();
        }
        let fresh = self.launch(role, &addr);
        *self.slot(role) = fresh;
    }

    /// Kills a process with SIGKILL; [`Deployment::start_again`] brings it back.
    pub fn kill(&mut self, role: Role) {
        self.slot(role).kill();
    }

    pub fn start_again(&mut self, role: Role) {
        let addr = self.slot(role).addr.clone();
        let fresh = self.launch(role, &addr);
        *self.slot(role) = fresh;
    }

    pub fn messages(&self) -> Vec<serde_json::Value> {
        recorded(&self.messages)
    }
}

/// What the sending client saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Events acknowledged, by user.
    pub acked: HashMap<String, u64>,
    /// Calls retried, by status code.
    pub retried: BTreeMap<String, u64>,
    /// Answers that must not happen: non-retryable errors and rejected events.
    pub errors: Vec<String>,
}

impl LoadReport {
    pub fn total(&self) -> u64 {
        self.acked.values().sum()
    }
}

/// A client sending batches of events to ingest until stopped. Each user's first event is
/// `Product Added` (entering the cart journey, whose reminder then comes due), the rest are
/// `Product Viewed`.
pub struct Load {
    stop: watch::Sender<bool>,
    task: JoinHandle<LoadReport>,
    acked: Arc<AtomicU64>,
}

/// A failure of the client's connection (a GOAWAY from a server shutting down, say), not an
/// answer from the server: as safe to repeat as an unavailable server.
fn from_transport(status: &tonic::Status) -> bool {
    std::error::Error::source(status)
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some())
}

/// Codes a client may retry with the same message ids: the call may or may not have been
/// applied, and the log's dedup makes a repeat harmless.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Cancelled
    )
}

impl Load {
    /// Starts sending `per_batch` events per call to `ingest_url`, spread over `users` users.
    pub fn start(ingest_url: String, users: usize, per_batch: usize) -> Load {
        let (stop, stopped) = watch::channel(false);
        let acked = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(send_until_stopped(
            ingest_url,
            users,
            per_batch,
            stopped,
            acked.clone(),
        ));
        Load { stop, task, acked }
    }

    /// Events acknowledged so far.
    pub fn acked_so_far(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Lets the call in flight finish (with its retries), then stops.
    pub async fn stop(self) -> LoadReport {
        let _ = self.stop.send(true);
        self.task.await.expect("load task")
    }
}

async fn send_until_stopped(
    url: String,
    users: usize,
    per_batch: usize,
    stopped: watch::Receiver<bool>,
    acked: Arc<AtomicU64>,
) -> LoadReport {
    let channel = tonic::transport::Endpoint::from_shared(url)
        .expect("ingest url")
        .timeout(StdDuration::from_secs(5))
        .connect_lazy();
    let mut client = IngestClient::new(channel);
    let mut report = LoadReport::default();
    let mut next_seq: Vec<u64> = vec![0; users];
    let mut cursor = 0usize;

    while !*stopped.borrow() {
        let at = wall_clock_ms();
        let mut events = Vec::with_capacity(per_batch);
        let mut who = Vec::with_capacity(per_batch);
        for _ in 0..per_batch {
            let u = cursor % users;
            cursor += 1;
            let user = format!("user-{u}");
            let seq = next_seq[u];
            next_seq[u] += 1;
            let id = format!("{user}-{seq}");
            let name = format!("item-{u}");
            events.push(if seq == 0 {
                track(&user, "Product Added", &id, at, json!({"name": name}))
            } else {
                track(&user, "Product Viewed", &id, at, json!({"category": "c"}))
            });
            who.push(user);
        }

        // The same batch, message ids and all, until it is answered.
        loop {
            let call = client
                .batch(BatchRequest {
                    workspace: WORKSPACE.into(),
                    events: events.clone(),
                })
                .await;
            match call {
                Ok(r) => {
                    for (result, user) in r.into_inner().results.iter().zip(&who) {
                        match &result.outcome {
                            Some(beckon_proto::v1::batch_result::Outcome::Ack(_)) => {
                                *report.acked.entry(user.clone()).or_default() += 1;
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            other => report.errors.push(format!("{user}: {other:?}")),
                        }
                    }
                    break;
                }
                Err(status) if retryable(status.code()) || from_transport(&status) => {
                    *report
                        .retried
                        .entry(format!("{:?}", status.code()))
                        .or_default() += 1;
                    tokio::time::sleep(StdDuration::from_millis(50)).await;
                }
                Err(status) => {
                    report.errors.push(format!("batch: {status}"));
                    break;
                }
            }
        }
    }
    report
}

/// Polls the stored state of every user until each has applied as many events as were
/// acknowledged for it (exactly, so a duplicate shows), or `tries` polls of 100 ms pass.
/// Returns the users whose count is off, with (applied, acknowledged).
pub async fn wait_applied<S: StateStore + ?Sized>(
    store: &S,
    acked: &HashMap<String, u64>,
    tries: u32,
) -> Vec<(String, u64, u64)> {
    let mut off = Vec::new();
    for _ in 0..tries {
        off.clear();
        for (user, want) in acked {
            let applied = store
                .load(WORKSPACE, user)
                .await
                .ok()
                .flatten()
                .map_or(0, |s| s.total_events);
            if applied != *want {
                off.push((user.clone(), applied, *want));
            }
        }
        if off.is_empty() {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    off
}

/// Messages by idempotency key that were recorded more than once.
pub fn duplicate_sends(messages: &[serde_json::Value]) -> Vec<String> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    for m in messages {
        let key = m["idempotency_key"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *seen.entry(key).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k)
        .collect()
}

/// The users who got a cart reminder, with how many each got.
pub fn reminders(messages: &[serde_json::Value]) -> HashMap<String, u32> {
    let mut by_user = HashMap::new();
    for m in messages
        .iter()
        .filter(|m| m["journey"] == "cart-abandonment")
    {
        let user = m["user_id"].as_str().unwrap_or_default().to_string();
        *by_user.entry(user).or_default() += 1;
    }
    by_user
}

/// Waits until every acknowledged event is applied exactly once on the Redis at `url`, and
/// every user's reminder has gone out exactly once; fails the test otherwise.
pub async fn assert_each_applied_and_reminded_once(
    url: &str,
    deployment: &Deployment,
    acked: &HashMap<String, u64>,
) {
    let client = redis::Client::open(url).expect("url");
    let conn = redis::aio::ConnectionManager::new(client)
        .await
        .expect("connect");
    let store = beckon_user_state::redis::RedisStateStore::new(conn, "bk", PARTITIONS);
    let off = wait_applied(&store, acked, 600).await;
    assert!(off.is_empty(), "(user, applied, acked): {off:?}");

    let users = acked.len();
    let all = super::eventually(600, || reminders(&deployment.messages()).len() == users).await;
    let messages = deployment.messages();
    let sent = reminders(&messages);
    assert!(all, "reminders for {} of {users} users", sent.len());
    assert!(sent.values().all(|n| *n == 1), "a reminder went out twice");
    assert!(duplicate_sends(&messages).is_empty());
}
