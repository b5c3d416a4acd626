//! `beckon serve all` as a real process with its webhook channel routed to a local webhook
//! receiver, email to a local SMTP server (aiosmtpd) and in-app to the inbox: a journey's
//! message arrives signed at the receiver, an email reaches the address in the user's traits,
//! a refusal comes back as a `Message Failed` event the journey branches on, and opening the
//! fallback inbox message (`Message Opened`) moves the journey on again.

mod support;

#[path = "../../gateway/tests/support/smtp.rs"]
mod smtp;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use beckon_core::Ts;
use beckon_proto::v1::gateway_client::GatewayClient;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::user_state_client::UserStateClient;
use beckon_proto::v1::{GetUserRequest, InboxItemRequest, ListInboxRequest, TrackRequest};
use serde_json::{Value, json};
use support::{Served, eventually, track, wall_clock_ms};

const SECRET: &str = "whsec-test-0123456789";

const JOURNEY: &str = r#"
id: shipping
version: 1
workspace: default
entry:
  event: Order Shipped
steps:
  - id: notify
    message:
      channel: webhook
      body: "Order {{ entry.order_id }} is on its way"
  - id: wait-failure
    wait_for:
      event: Message Failed
      where: { step: notify }
      timeout: 1h
      on_event: fallback
      on_timeout: exit
  - id: fallback
    message:
      channel: in_app
      title: Your order shipped
      body: "Order {{ entry.order_id }} is on its way"
  - id: wait-open
    wait_for:
      event: Message Opened
      where: { step: fallback }
      timeout: 1h
      on_event: thanks
      on_timeout: exit
  - id: thanks
    message:
      channel: webhook
      body: "Inbox read for order {{ entry.order_id }}"
"#;

const MAIL: &str = r#"
id: shipping-mail
version: 1
workspace: default
entry:
  event: Order Shipped
steps:
  - id: mail
    message:
      channel: email
      subject: "Order {{ entry.order_id }} shipped"
      body: "<p>Your order {{ entry.order_id }} is on its way.</p>"
      transactional: true
"#;

/// What the receiver saw: signature header and body of each request.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook receiver: refuses (400) bodies naming a `REFUSE` order, takes the rest.
async fn receive(State(seen): State<Seen>, headers: HeaderMap, body: String) -> StatusCode {
    let signature = headers
        .get("beckon-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let refuse = body.contains("Order REFUSE");
    if let Ok(mut seen) = seen.lock() {
        seen.push((signature, body));
    }
    if refuse {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    }
}

async fn start_receiver() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let router = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}/hooks"), seen)
}

fn bodies(seen: &Seen) -> Vec<String> {
    seen.lock()
        .map(|s| s.iter().map(|(_, b)| b.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn providers_route_messages_and_outcomes_steer_the_journey() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journeys = dir.path().join("journeys");
    std::fs::create_dir_all(&journeys).expect("journeys dir");
    std::fs::write(journeys.join("shipping.yaml"), JOURNEY).expect("journey");
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("secret");

    std::fs::write(journeys.join("mail.yaml"), MAIL).expect("mail journey");
    let unsubscribe = dir.path().join("unsubscribe.secret");
    std::fs::write(&unsubscribe, "unsub-key-0123456789\n").expect("secret");

    let (url, seen) = start_receiver().await;
    let smtp = smtp::start().await;
    let providers = dir.path().join("providers.yaml");
    let config = format!(
        "channels: {{ webhook: webhook, in_app: inbox, email: smtp }}\n\
         webhook:\n  url: {url}\n  secret: {{ file: {} }}\n  \
         policy: {{ retry: {{ max_attempts: 2, base_delay: 10 }} }}\n\
         smtp:\n  host: 127.0.0.1\n  port: {}\n  security: none\n  \
         from: Shop <shop@example.com>\n  \
         unsubscribe_url: https://shop.example.com/unsubscribe\n  \
         unsubscribe_secret: {{ file: {} }}\n",
        secret.display(),
        smtp.port,
        unsubscribe.display()
    );
    std::fs::write(&providers, config).expect("providers");
    let providers = providers.to_str().unwrap_or_default();

    // The effective settings name where the secret is, never the secret itself.
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_beckon"))
        .args(["serve", "all", "--print-config", "--providers", providers])
        .output()
        .expect("print config");
    let printed = String::from_utf8_lossy(&printed.stdout).to_string();
    assert!(printed.contains("webhook.secret"), "{printed}");
    assert!(!printed.contains(SECRET), "{printed}");

    let mut served = Served::start(
        "all",
        &[
            "--journeys",
            journeys.to_str().unwrap_or_default(),
            "--providers",
            providers,
            "--partitions",
            "4",
        ],
    );
    let mut ingest = IngestClient::connect(served.url()).await.expect("ingest");
    let now = wall_clock_ms();
    let ada = beckon_proto::v1::Event {
        r#type: "identify".into(),
        message_id: "u-ok-identify".into(),
        user_id: "u-ok".into(),
        traits: json!({"email": "ada@example.com"})
            .as_object()
            .map(beckon_proto::convert::json_to_struct),
        timestamp: Some(beckon_proto::convert::millis_to_timestamp(now - 1_000)),
        ..Default::default()
    };
    let request = beckon_proto::v1::IdentifyRequest {
        workspace: "default".into(),
        event: Some(ada),
    };
    ingest.identify(request).await.expect("identify");
    for (user, order) in [("u-ok", "A-1"), ("u-refused", "REFUSE-2")] {
        let event = track(
            user,
            "Order Shipped",
            &format!("{user}-1"),
            now,
            json!({"order_id": order}),
        );
        let request = TrackRequest {
            workspace: "default".into(),
            event: Some(event),
        };
        ingest.track(request).await.expect("track");
    }

    // The message arrives at the receiver, signed with the secret from the file.
    let delivered = eventually(200, || bodies(&seen).iter().any(|b| b.contains("A-1"))).await;
    assert!(delivered, "{:?}", bodies(&seen));
    let (signature, body) = seen
        .lock()
        .ok()
        .and_then(|s| s.iter().find(|(_, b)| b.contains("A-1")).cloned())
        .expect("seen");
    let payload: Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(payload["user_id"], "u-ok");
    assert_eq!(payload["step"], "notify");
    beckon_gateway::webhook::verify(
        SECRET.as_bytes(),
        &signature,
        body.as_bytes(),
        Ts(wall_clock_ms()),
        Duration::from_secs(300),
    )
    .expect("a valid signature");

    // The email went to the address in the user's traits, over SMTP.
    assert!(
        eventually(200, || !smtp.messages().is_empty()).await,
        "no email arrived"
    );
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "only the user with an address gets one");
    let mail = String::from_utf8_lossy(&mails[0]).to_string();
    assert!(mail.contains("To: ada@example.com"), "{mail}");
    assert!(mail.contains("Order A-1 shipped"), "{mail}");

    // The refusal came back as `Message Failed`, and the journey took its fallback: an inbox
    // message for that user only.
    let mut gateway = GatewayClient::connect(served.url()).await.expect("gateway");
    let inbox_of = |user: &str| ListInboxRequest {
        workspace: "default".into(),
        user_id: user.into(),
    };
    let mut fallback = None;
    for _ in 0..200 {
        let list = gateway
            .list_inbox(inbox_of("u-refused"))
            .await
            .expect("list inbox")
            .into_inner();
        if let Some(item) = list.items.into_iter().next() {
            fallback = Some(item);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fallback = fallback.expect("the fallback reached the inbox");
    assert_eq!(fallback.step, "fallback");
    assert_eq!(fallback.body, "Order REFUSE-2 is on its way");
    let ok_inbox = gateway
        .list_inbox(inbox_of("u-ok"))
        .await
        .expect("list inbox")
        .into_inner();
    assert!(ok_inbox.items.is_empty(), "{:?}", ok_inbox.items);

    let mut users = UserStateClient::connect(served.url()).await.expect("users");
    let state = users
        .get_user(GetUserRequest {
            workspace: "default".into(),
            user_id: "u-refused".into(),
        })
        .await
        .expect("get user")
        .into_inner();
    assert!(
        state.state_json.contains("Message Failed"),
        "{}",
        state.state_json
    );

    // Reading the inbox message is opening it: the journey goes on to its thank-you hook.
    let read = gateway
        .mark_inbox_read(InboxItemRequest {
            workspace: "default".into(),
            user_id: "u-refused".into(),
            id: fallback.id.clone(),
        })
        .await
        .expect("mark read")
        .into_inner();
    assert!(read.found);
    let thanked = eventually(200, || {
        bodies(&seen)
            .iter()
            .any(|b| b.contains("Inbox read for order REFUSE-2"))
    })
    .await;
    assert!(thanked, "{:?}", bodies(&seen));

    drop((ingest, gateway, users));
    assert!(served.terminate().success());
}
