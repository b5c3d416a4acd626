//! Separate processes on a Redis of the test's own: user-state decides an in-app message and
//! sends it through one gateway; an app subscribed through gRPC to another gateway receives
//! it on its stream, pushed through Redis pub/sub, and both gateways list the same inbox.
//! Reading it there goes back through the Ingest service as `Message Opened`, and forgetting
//! the user through UserState erases the inbox.

mod support;

use std::time::Duration;

use beckon_proto::v1::gateway_client::GatewayClient;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::user_state_client::UserStateClient;
use beckon_proto::v1::{GetUserRequest, InboxItemRequest, ListInboxRequest, TrackRequest};
use beckon_testkit::RedisServer;
use serde_json::json;
use support::{Served, track, wall_clock_ms};

pub const JOURNEY: &str = r#"
id: shipped
version: 1
workspace: default
entry:
  event: Order Shipped
steps:
  - id: notice
    message:
      channel: in_app
      title: On its way
      body: "Order {{ entry.order_id }} has shipped"
      transactional: true
"#;

fn with<'a>(common: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    [common, extra].concat()
}

#[tokio::test]
async fn a_decided_message_is_pushed_to_an_app_on_another_gateway() {
    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let url = redis.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let journeys = dir.path().join("journeys");
    std::fs::create_dir_all(&journeys).expect("journeys dir");
    std::fs::write(journeys.join("shipped.yaml"), JOURNEY).expect("journey");
    let providers = dir.path().join("providers.yaml");
    std::fs::write(&providers, "channels: { in_app: inbox }\n").expect("providers");

    let common = ["--redis-url", url.as_str(), "--partitions", "4"];
    let providers = providers.to_str().unwrap_or_default();
    let scheduler = Served::start("scheduler", &common);
    let ingest = Served::start("ingest", &common);
    let ingest_url = ingest.url();
    let gateway_args = with(
        &common,
        &[
            "--providers",
            providers,
            "--ingest-url",
            ingest_url.as_str(),
        ],
    );
    let sending = Served::start("gateway", &gateway_args);
    let serving_app = Served::start("gateway", &gateway_args);
    let (scheduler_url, gateway_url) = (scheduler.url(), sending.url());
    let user_state = Served::start(
        "user-state",
        &with(
            &common,
            &[
                "--scheduler-url",
                scheduler_url.as_str(),
                "--gateway-url",
                gateway_url.as_str(),
                "--journeys",
                journeys.to_str().unwrap_or_default(),
            ],
        ),
    );

    // The app holds its stream open on the gateway that will not do the send.
    let mut app = GatewayClient::connect(serving_app.url())
        .await
        .expect("app");
    let ada = || ListInboxRequest {
        workspace: "default".into(),
        user_id: "ada".into(),
    };
    let mut stream = app
        .subscribe_inbox(ada())
        .await
        .expect("subscribe")
        .into_inner();

    let mut events = IngestClient::connect(ingest.url()).await.expect("ingest");
    let shipped = track(
        "ada",
        "Order Shipped",
        "s1",
        wall_clock_ms(),
        json!({"order_id": "A-9"}),
    );
    let request = TrackRequest {
        workspace: "default".into(),
        event: Some(shipped),
    };
    events.track(request).await.expect("track");

    // A guard against hanging forever, not a measurement.
    let pushed = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .expect("a message within a minute")
        .expect("stream open")
        .expect("a message");
    assert_eq!(pushed.body, "Order A-9 has shipped");
    assert_eq!(
        (pushed.journey.as_str(), pushed.step.as_str()),
        ("shipped", "notice")
    );
    assert_eq!(pushed.title, "On its way");

    // One inbox, whichever gateway is asked.
    let mut other = GatewayClient::connect(sending.url())
        .await
        .expect("gateway");
    let listed = other.list_inbox(ada()).await.expect("list").into_inner();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].id, pushed.id);
    let here = app.list_inbox(ada()).await.expect("list").into_inner();
    assert_eq!(here.items.len(), 1);

    // Reading it is an event of the user, forwarded by the gateway to ingest.
    let read = InboxItemRequest {
        workspace: "default".into(),
        user_id: "ada".into(),
        id: pushed.id.clone(),
    };
    assert!(
        app.mark_inbox_read(read)
            .await
            .expect("read")
            .into_inner()
            .found
    );
    let mut users = UserStateClient::connect(user_state.url())
        .await
        .expect("users");
    let mut opened = false;
    for _ in 0..200 {
        let request = GetUserRequest {
            workspace: "default".into(),
            user_id: "ada".into(),
        };
        // The partition writes the user after its batch's sends, so the message can reach
        // the app before the user is stored.
        let view = match users.get_user(request).await {
            Ok(view) => view.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(status) => panic!("user: {status:?}"),
        };
        if view.state_json.contains("Message Opened") {
            opened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(opened, "the read came back as Message Opened");

    // Forgetting the user through UserState erases the inbox too.
    let forget = GetUserRequest {
        workspace: "default".into(),
        user_id: "ada".into(),
    };
    users.forget_user(forget).await.expect("forget");
    let listed = app.list_inbox(ada()).await.expect("list").into_inner();
    assert!(listed.items.is_empty(), "{:?}", listed.items);

    // A draining gateway ends the open streams instead of waiting on them.
    let mut serving_app = serving_app;
    assert!(serving_app.terminate().success());
    let ended = stream.message().await;
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
}
