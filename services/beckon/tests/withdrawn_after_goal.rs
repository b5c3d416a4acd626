//! `beckon serve all` on its own Redis, its webhook provider down. The journey's only step is
//! the webhook, so each instance completes as soon as the send is handed to the gateway and
//! deferred. A user who then reaches the goal, or sends an exit event, has the deferred
//! message withdrawn once the provider is back, even after so many later decisions that the
//! goal has scrolled out of the user's recent decision log; a user who did neither gets it,
//! once.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use beckon_proto::v1::gateway_client::GatewayClient;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::user_state_client::UserStateClient;
use beckon_proto::v1::{Decision, GetUserRequest, ListInboxRequest, TrackRequest};
use beckon_testkit::RedisServer;
use serde_json::json;
use support::{Served, eventually, eventually_async, track, wall_clock_ms};

const HOOK: &str = r#"
id: hook
version: 1
workspace: default
entry:
  event: Hook Me
goal: Stop Hook
exit_on: [Mute Hook]
steps:
  - id: notify
    message:
      channel: webhook
      body: "hello {{ entry.n }}"
"#;

/// Three decisions per ping (entered, sent, completed): enough pings push older decisions
/// out of the user's recent log.
const PING: &str = r#"
id: ping
version: 1
workspace: default
entry:
  event: Ping
  reentry: after_exit
steps:
  - id: pong
    message:
      channel: in_app
      title: Pong
      body: "pong {{ entry.n }}"
"#;

const PINGS: usize = 40;

/// A webhook receiver that answers 503 while `down`; otherwise it takes the request and
/// counts it by idempotency key.
#[derive(Clone, Default)]
struct Receiver {
    down: Arc<AtomicBool>,
    refused: Arc<Mutex<usize>>,
    taken: Arc<Mutex<HashMap<String, usize>>>,
}

impl Receiver {
    fn taken(&self) -> HashMap<String, usize> {
        self.taken.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn refused(&self) -> usize {
        self.refused.lock().map(|r| *r).unwrap_or_default()
    }
}

async fn receive(State(rx): State<Receiver>, headers: HeaderMap) -> StatusCode {
    if rx.down.load(Ordering::SeqCst) {
        if let Ok(mut refused) = rx.refused.lock() {
            *refused += 1;
        }
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if let Ok(mut taken) = rx.taken.lock() {
        *taken.entry(key).or_default() += 1;
    }
    StatusCode::OK
}

async fn start_receiver() -> (String, Receiver) {
    let rx = Receiver::default();
    let router = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}/hooks"), rx)
}

/// The user's recent decisions; none for a user whose first event is not applied yet.
async fn decisions(
    users: &mut UserStateClient<tonic::transport::Channel>,
    user: &str,
) -> Vec<Decision> {
    let answer = users
        .explain(GetUserRequest {
            workspace: "default".into(),
            user_id: user.into(),
        })
        .await;
    match answer {
        Ok(explanation) => explanation.into_inner().decisions,
        Err(status) if status.code() == tonic::Code::NotFound => Vec::new(),
        Err(status) => panic!("explain {user}: {status}"),
    }
}

/// The first decision of `kind` about the `hook` journey in `user`'s record, waiting for the
/// gateway's report of it to be applied (the retry queue backs off for seconds).
async fn explained(
    users: &mut UserStateClient<tonic::transport::Channel>,
    user: &str,
    kind: &str,
) -> Decision {
    let mut seen = Vec::new();
    for _ in 0..1200 {
        seen = decisions(users, user).await;
        if let Some(d) = seen.iter().find(|d| d.journey == "hook" && d.kind == kind) {
            return d.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{user} has no {kind} decision: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goal_after_the_message_step_completed_withdraws_the_deferred_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journeys = dir.path().join("journeys");
    std::fs::create_dir_all(&journeys).expect("journeys dir");
    std::fs::write(journeys.join("hook.yaml"), HOOK).expect("journey");
    std::fs::write(journeys.join("ping.yaml"), PING).expect("journey");
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, "whsec-goal-after-send\n").expect("secret");

    let (url, receiver) = start_receiver().await;
    receiver.down.store(true, Ordering::SeqCst);
    let providers = dir.path().join("providers.yaml");
    let config = format!(
        "channels: {{ webhook: webhook, in_app: inbox }}\n\
         webhook:\n  url: {url}\n  secret: {{ file: {} }}\n  \
         policy: {{ retry: {{ max_attempts: 2, base_delay: 10 }}, \
         breaker: {{ failure_threshold: 100, cool_down: 500 }} }}\n",
        secret.display()
    );
    std::fs::write(&providers, config).expect("providers");

    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let redis_url = redis.url();
    let served = Served::start(
        "all",
        &[
            "--journeys",
            journeys.to_str().unwrap_or_default(),
            "--providers",
            providers.to_str().unwrap_or_default(),
            "--redis-url",
            redis_url.as_str(),
            // One partition: once the last ping is applied, every earlier event is too.
            "--partitions",
            "1",
        ],
    );
    let mut ingest = IngestClient::connect(served.url()).await.expect("ingest");
    let mut users = UserStateClient::connect(served.url()).await.expect("users");
    let now = wall_clock_ms();
    let mut next = 0;
    let mut send = async |user: &str, name: &str| {
        next += 1;
        let id = format!("{user}-{next}");
        let event = track(user, name, &id, now + next, json!({"n": next}));
        let request = TrackRequest {
            workspace: "default".into(),
            event: Some(event),
        };
        ingest.track(request).await.expect("track");
    };

    let hooked = ["u-goal", "u-mute", "u-busy", "u-plain"];
    for user in hooked {
        send(user, "Hook Me").await;
    }
    // Every message is deferred, and the instances completed with it.
    for user in hooked {
        let deferred = explained(&mut users, user, "delivery_deferred").await;
        assert!(deferred.reason.contains("http 503"), "{deferred:?}");
        let all = decisions(&mut users, user).await;
        assert!(
            all.iter()
                .any(|d| d.journey == "hook" && d.kind == "completed"),
            "{all:?}"
        );
    }

    send("u-goal", "Stop Hook").await;
    send("u-mute", "Mute Hook").await;
    send("u-busy", "Stop Hook").await;
    for _ in 0..PINGS {
        send("u-busy", "Ping").await;
    }

    // The pings are applied (so is everything before them), and the busy user's goal is out
    // of sight in the recent decisions.
    let mut gateway = GatewayClient::connect(served.url()).await.expect("gateway");
    let pinged = eventually_async(600, async || {
        let inbox = gateway
            .list_inbox(ListInboxRequest {
                workspace: "default".into(),
                user_id: "u-busy".into(),
            })
            .await
            .expect("list inbox")
            .into_inner();
        inbox.items.len() == PINGS
    })
    .await;
    assert!(pinged, "the pings were not all applied");
    let busy = decisions(&mut users, "u-busy").await;
    assert!(
        !busy.iter().any(|d| d.journey == "hook"),
        "the goal is still in the recent decisions: {busy:?}"
    );
    assert!(receiver.taken().is_empty(), "{:?}", receiver.taken());
    assert!(receiver.refused() >= hooked.len(), "the provider was tried");

    // The provider comes back: only the user who did neither gets the message, once.
    receiver.down.store(false, Ordering::SeqCst);
    let later = explained(&mut users, "u-plain", "delivered_later").await;
    assert_eq!(later.step, "notify", "{later:?}");
    for (user, why) in [
        ("u-goal", "goal Stop Hook happened"),
        ("u-mute", "exit event Mute Hook happened"),
        ("u-busy", "goal Stop Hook happened"),
    ] {
        let withdrawn = explained(&mut users, user, "delivery_withdrawn").await;
        assert_eq!(withdrawn.step, "notify", "{withdrawn:?}");
        assert!(withdrawn.reason.contains(why), "{user}: {withdrawn:?}");
    }
    let arrived = eventually(100, || receiver.taken().len() == 1).await;
    let taken = receiver.taken();
    assert!(arrived, "{taken:?}");
    assert!(
        taken.iter().all(|(k, n)| k.contains("u-plain") && *n == 1),
        "{taken:?}"
    );
    drop(served);
}
