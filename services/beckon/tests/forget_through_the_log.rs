//! ForgetUser on `beckon serve all` over a Redis of the test's own, all over gRPC: the user's
//! partition lets go of the live actor in log order, so an event after the forget starts from
//! an empty user and nothing follows from the old state; once the forget is applied, Redis
//! holds nothing naming the user, in any key or value.

mod support;

use beckon_proto::convert::{json_to_struct, millis_to_timestamp};
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::user_state_client::UserStateClient;
use beckon_proto::v1::{BatchRequest, Event, GetUserRequest, UserView, batch_result};
use beckon_testkit::RedisServer;
use serde_json::{Value, json};
use support::{Served, eventually, eventually_async, recorded, wall_clock_ms};
use tonic::transport::Channel;

/// Opening the app within two days of signing up earns a welcome back; a sign-up is greeted
/// at once.
const DEFS: &str = "
id: onboarding
version: 1
workspace: default
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
      body: 'Welcome back, {{ user.first_name | default: \"friend\" }}'
---
id: greeting
version: 1
workspace: default
entry:
  event: Signed Up
steps:
  - id: hello
    message:
      channel: push
      body: 'Hello {{ user.first_name | default: \"there\" }}'
";

const USER: &str = "forget-e2e-7f3a";

/// Fields drop in order: the service stops before its Redis does.
struct Setup {
    _served: Served,
    ingest: IngestClient<Channel>,
    users: UserStateClient<Channel>,
    sent: std::path::PathBuf,
    _dir: tempfile::TempDir,
    redis: RedisServer,
}

async fn setup() -> Setup {
    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("onboarding.yaml"), DEFS).expect("write definitions");
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
    let ingest = IngestClient::connect(served.url()).await.expect("ingest");
    let users = UserStateClient::connect(served.url()).await.expect("users");
    Setup {
        _served: served,
        ingest,
        users,
        sent,
        _dir: dir,
        redis,
    }
}

impl Setup {
    async fn track(&mut self, name: &str, id: &str, at_ms: i64, traits: Value) {
        let event = Event {
            r#type: "track".into(),
            message_id: id.into(),
            user_id: USER.into(),
            event: name.into(),
            timestamp: Some(millis_to_timestamp(at_ms)),
            traits: traits.as_object().map(json_to_struct),
            ..Event::default()
        };
        let answer = self
            .ingest
            .batch(BatchRequest {
                workspace: "default".into(),
                events: vec![event],
            })
            .await
            .expect("batch")
            .into_inner();
        assert!(
            matches!(
                answer.results[0].outcome,
                Some(batch_result::Outcome::Ack(_))
            ),
            "{answer:?}"
        );
    }

    async fn forget(&mut self) {
        self.users
            .forget_user(GetUserRequest {
                workspace: "default".into(),
                user_id: USER.into(),
            })
            .await
            .expect("forget");
    }

    /// Steps of the messages recorded for the user so far.
    fn steps(&self) -> Vec<String> {
        recorded(&self.sent)
            .into_iter()
            .filter(|m| m["user_id"] == USER)
            .filter_map(|m| m["step"].as_str().map(str::to_string))
            .collect()
    }
}

async fn view(users: &mut UserStateClient<Channel>) -> Option<UserView> {
    users
        .get_user(GetUserRequest {
            workspace: "default".into(),
            user_id: USER.into(),
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}

fn total_events(v: &UserView) -> u64 {
    let state: Value = serde_json::from_str(&v.state_json).unwrap_or_default();
    state["total_events"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn an_event_after_forget_user_starts_from_an_empty_user() {
    let mut s = setup().await;
    let t = wall_clock_ms() - 60 * 60_000;
    s.track("Signed Up", "e1", t, json!({"first_name": "Ada"}))
        .await;
    let users = &mut s.users;
    assert!(
        eventually_async(200, async || view(users)
            .await
            .is_some_and(|v| v.journeys.iter().any(|j| j.journey == "onboarding")))
        .await,
        "the user waits in the journey"
    );
    assert!(
        eventually(200, || s.steps() == ["hello"]).await,
        "greeted: {:?}",
        recorded(&s.sent)
    );

    // With the old state, this would earn a welcome back.
    s.forget().await;
    s.track("App Opened", "e2", t + 60_000, json!({})).await;
    let users = &mut s.users;
    assert!(
        eventually_async(200, async || view(users)
            .await
            .is_some_and(|v| total_events(&v) == 1))
        .await,
        "a fresh user with the one event after the forget: {:?}",
        view(users).await
    );
    let fresh = view(&mut s.users).await.expect("fresh");
    assert!(fresh.journeys.is_empty(), "{fresh:?}");
    assert_eq!(s.steps(), ["hello"], "no welcome back from forgotten state");

    // Forgotten again: once the partition applied the entry, Redis names the user nowhere.
    s.forget().await;
    let redis = &s.redis;
    assert!(
        eventually(200, || redis.mentions(USER).expect("scan").is_empty()).await,
        "{:?}",
        redis.mentions(USER)
    );
}
