//! An unsubscribe reported through the Gateway's `ReportOutcome`, on `beckon serve all` over a
//! Redis of the test's own: the outcome's event sets the user's `email_opt_out`, and a later
//! email is skipped while a push for the same event still goes out.

mod support;

use beckon_proto::convert::{json_to_struct, millis_to_timestamp};
use beckon_proto::v1::gateway_client::GatewayClient;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::user_state_client::UserStateClient;
use beckon_proto::v1::{Event, GetUserRequest, IdentifyRequest, OutcomeRequest, TrackRequest};
use beckon_testkit::RedisServer;
use serde_json::{Value, json};
use support::{Served, eventually, eventually_async, recorded, track, wall_clock_ms};

const DEFS: &str = "
id: news
version: 1
workspace: default
entry:
  event: Ping
steps:
  - id: mail
    message:
      channel: email
      subject: News
      body: '<p>News</p>'
---
id: buzz
version: 1
workspace: default
entry:
  event: Ping
steps:
  - id: push
    message:
      channel: push
      body: Ping
";

const USER: &str = "unsub-e2e-41c2";

fn trait_of(state_json: &str, name: &str) -> Value {
    let state: Value = serde_json::from_str(state_json).unwrap_or_default();
    state["traits"][name].clone()
}

#[tokio::test]
async fn a_reported_unsubscribe_stops_later_email() {
    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("news.yaml"), DEFS).expect("write definitions");
    let sent = dir.path().join("sent.jsonl");
    let url = redis.url();
    let served = Served::start(
        "all",
        &[
            "--journeys",
            dir.path().to_str().unwrap_or_default(),
            "--messages-out",
            sent.to_str().unwrap_or_default(),
            "--partitions",
            "4",
            "--redis-url",
            &url,
        ],
    );
    let mut ingest = IngestClient::connect(served.url()).await.expect("ingest");
    let mut users = UserStateClient::connect(served.url()).await.expect("users");
    let mut gateway = GatewayClient::connect(served.url()).await.expect("gateway");
    let t = wall_clock_ms() - 60 * 60_000;

    let identify = Event {
        r#type: "identify".into(),
        message_id: "i1".into(),
        user_id: USER.into(),
        traits: json!({"email": "q@example.com"})
            .as_object()
            .map(json_to_struct),
        timestamp: Some(millis_to_timestamp(t)),
        ..Event::default()
    };
    ingest
        .identify(IdentifyRequest {
            workspace: "default".into(),
            event: Some(identify),
        })
        .await
        .expect("identify");
    gateway
        .report_outcome(OutcomeRequest {
            workspace: "default".into(),
            user_id: USER.into(),
            message_key: "default:unsub-e2e-41c2:welcome:1:mail:1".into(),
            outcome: "unsubscribed".into(),
            channel: "email".into(),
            at: Some(millis_to_timestamp(t + 60_000)),
            ..OutcomeRequest::default()
        })
        .await
        .expect("the unsubscribe is recorded");

    let opted_out = async || {
        users
            .get_user(GetUserRequest {
                workspace: "default".into(),
                user_id: USER.into(),
            })
            .await
            .ok()
            .is_some_and(|v| trait_of(&v.into_inner().state_json, "email_opt_out") == true)
    };
    let set = eventually_async(200, opted_out).await;
    let view = users
        .get_user(GetUserRequest {
            workspace: "default".into(),
            user_id: USER.into(),
        })
        .await
        .map(|v| v.into_inner().state_json);
    assert!(set, "email_opt_out is set: {view:?}");

    ingest
        .track(TrackRequest {
            workspace: "default".into(),
            event: Some(track(USER, "Ping", "p1", t + 120_000, json!({}))),
        })
        .await
        .expect("ping");
    let journeys_of = || {
        recorded(&sent)
            .into_iter()
            .filter(|m| m["user_id"] == USER)
            .filter_map(|m| m["journey"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
    };
    // The push follows from the same event as the email would: once it is out, the email's
    // decision was made too.
    assert!(
        eventually(200, || journeys_of() == ["buzz"]).await,
        "{:?}",
        recorded(&sent)
    );
    assert_eq!(journeys_of(), ["buzz"], "no email after the unsubscribe");
}
