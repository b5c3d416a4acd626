//! `beckon serve all` on its own Redis, one partition, its webhook provider down: the sends
//! that fail are deferred to the gateway's retry queue, so the partition goes on applying
//! what comes after them (here another user's in-app message). A user who reaches the
//! journey's goal meanwhile has their deferred message withdrawn; once the provider is back
//! every other deferred message reaches it exactly once. The journey waits for `Message
//! Failed` to send a fallback: a message that was only deferred, and went out in the end, is
//! no failure, and no fallback goes out.

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
use support::{Served, eventually, track, wall_clock_ms};

const SHIPPED: &str = r#"
id: shipped
version: 1
workspace: default
entry:
  event: Order Shipped
goal: Order Received
steps:
  - id: notify
    message:
      channel: webhook
      body: "Order {{ entry.order_id }} is on its way"
  - id: wait-for-failure
    wait_for:
      event: Message Failed
      where: { step: notify }
      timeout: 2d
      on_event: fallback
      on_timeout: exit
  - id: fallback
    message:
      channel: in_app
      title: Your order shipped
      body: "Order {{ entry.order_id }} is on its way"
"#;

const REVIEWED: &str = r#"
id: reviewed
version: 1
workspace: default
entry:
  event: Review Posted
steps:
  - id: thanks
    message:
      channel: in_app
      title: Thank you
      body: "Thanks for reviewing {{ entry.product }}"
"#;

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

/// The first decision of `kind` about the `shipped` journey in `user`'s record, waiting for
/// the gateway's report of it to be applied.
async fn explained(
    users: &mut UserStateClient<tonic::transport::Channel>,
    user: &str,
    kind: &str,
) -> Decision {
    let mut decisions = Vec::new();
    for _ in 0..200 {
        decisions = users
            .explain(GetUserRequest {
                workspace: "default".into(),
                user_id: user.into(),
            })
            .await
            .expect("explain")
            .into_inner()
            .decisions;
        if let Some(d) = decisions
            .iter()
            .find(|d| d.journey == "shipped" && d.kind == kind)
        {
            return d.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{user} has no {kind} decision: {decisions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_outage_holds_up_no_one_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journeys = dir.path().join("journeys");
    std::fs::create_dir_all(&journeys).expect("journeys dir");
    std::fs::write(journeys.join("shipped.yaml"), SHIPPED).expect("journey");
    std::fs::write(journeys.join("reviewed.yaml"), REVIEWED).expect("journey");
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, "whsec-outage-51c0\n").expect("secret");

    let (url, receiver) = start_receiver().await;
    receiver.down.store(true, Ordering::SeqCst);
    let providers = dir.path().join("providers.yaml");
    let config = format!(
        "channels: {{ webhook: webhook, in_app: inbox }}\n\
         webhook:\n  url: {url}\n  secret: {{ file: {} }}\n  \
         policy: {{ retry: {{ max_attempts: 2, base_delay: 10 }}, \
         breaker: {{ failure_threshold: 3, cool_down: 500 }} }}\n",
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
            // One partition: every user's entries wait behind the first failing send, as they
            // did before sends could be deferred.
            "--partitions",
            "1",
        ],
    );
    let mut ingest = IngestClient::connect(served.url()).await.expect("ingest");
    let now = wall_clock_ms();
    let send = |event| TrackRequest {
        workspace: "default".into(),
        event: Some(event),
    };

    let shipped = ["u-1", "u-2", "u-3"];
    for (n, user) in shipped.iter().enumerate() {
        let event = track(
            user,
            "Order Shipped",
            &format!("{user}-shipped"),
            now + n as i64,
            json!({"order_id": format!("A-{n}")}),
        );
        ingest.track(send(event)).await.expect("track");
    }
    // The third user's order arrives before the provider is back: their notice is pointless.
    let received = track("u-3", "Order Received", "u-3-received", now + 5, json!({}));
    ingest.track(send(received)).await.expect("track");
    // Appended after the failing sends, in the same partition.
    let review = track(
        "u-4",
        "Review Posted",
        "u-4-review",
        now + 10,
        json!({"product": "the kettle"}),
    );
    ingest.track(send(review)).await.expect("track");

    // The in-app message of the user behind them arrives while the provider is still down.
    let mut gateway = GatewayClient::connect(served.url()).await.expect("gateway");
    let mut thanked = false;
    for _ in 0..200 {
        let inbox = gateway
            .list_inbox(ListInboxRequest {
                workspace: "default".into(),
                user_id: "u-4".into(),
            })
            .await
            .expect("list inbox")
            .into_inner();
        if inbox
            .items
            .iter()
            .any(|i| i.body == "Thanks for reviewing the kettle")
        {
            thanked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(thanked, "the partition stalled behind the failing provider");
    assert!(receiver.refused() >= 1, "the provider was tried");
    assert!(receiver.taken().is_empty(), "{:?}", receiver.taken());

    // The user's record says the message was deferred, and why, not merely that it was sent.
    let mut users = UserStateClient::connect(served.url()).await.expect("users");
    let deferred = explained(&mut users, "u-1", "delivery_deferred").await;
    assert_eq!(deferred.step, "notify");
    assert!(deferred.reason.contains("http 503"), "{deferred:?}");

    // The provider comes back: each deferred message still wanted arrives, once.
    receiver.down.store(false, Ordering::SeqCst);
    let wanted = 2;
    let all_arrived = eventually(600, || receiver.taken().len() == wanted).await;
    assert!(all_arrived, "taken: {:?}", receiver.taken());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let taken = receiver.taken();
    assert_eq!(taken.len(), wanted, "{taken:?}");
    assert!(
        taken.values().all(|n| *n == 1),
        "a message went twice: {taken:?}"
    );
    assert!(
        taken.keys().all(|k| !k.contains("u-3")),
        "the withdrawn message went out: {taken:?}"
    );

    // Once settled, the record says how: sent by the gateway's retries, or withdrawn.
    for user in ["u-1", "u-2"] {
        let later = explained(&mut users, user, "delivered_later").await;
        assert_eq!(later.step, "notify", "{later:?}");
    }
    let withdrawn = explained(&mut users, "u-3", "delivery_withdrawn").await;
    assert!(
        withdrawn.reason.contains("goal Order Received happened"),
        "{withdrawn:?}"
    );

    // The outage was no failure of these messages: no journey took its fallback.
    for user in shipped {
        let inbox = gateway
            .list_inbox(ListInboxRequest {
                workspace: "default".into(),
                user_id: user.into(),
            })
            .await
            .expect("list inbox")
            .into_inner();
        assert!(inbox.items.is_empty(), "{user}: {:?}", inbox.items);
    }
    drop(served);
}
