//! Only the gateway says what became of a message, and its word is taken however late, on
//! Redis of the test's own with `--max-event-lateness-ms` set: in `serve all`, where the
//! gateway appends its reports to the log itself, and with the services as separate
//! processes, where it hands them to ingest's `AppendOutcome`. Either way an unsubscribe
//! reported through `ReportOutcome` two days after the fact reaches the user, while a client
//! calling ingest's public `Track` can neither report an outcome under the gateway's names
//! nor have a late unsubscribe of its own taken.

mod support;

use beckon_proto::convert::millis_to_timestamp;
use beckon_proto::v1::gateway_client::GatewayClient;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::user_state_client::UserStateClient;
use beckon_proto::v1::{AppendOutcomeRequest, GetUserRequest, OutcomeRequest, TrackRequest};
use beckon_testkit::RedisServer;
use serde_json::{Value, json};
use support::{Served, eventually_async, identify_with_email, track, wall_clock_ms};
use tonic::transport::Channel;

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
";

const DAY: i64 = 86_400_000;

/// The lateness limit every ingest here runs with: one minute.
const LATENESS: &str = "60000";

fn definitions(dir: &std::path::Path) -> String {
    std::fs::write(dir.join("news.yaml"), DEFS).expect("write definitions");
    dir.display().to_string()
}

/// An unsubscribe from email that happened two days ago, reported now.
fn late_unsubscribe(user: &str) -> OutcomeRequest {
    OutcomeRequest {
        workspace: "default".into(),
        user_id: user.into(),
        message_key: format!("default:{user}:news:1:mail:1"),
        outcome: "unsubscribed".into(),
        channel: "email".into(),
        at: Some(millis_to_timestamp(wall_clock_ms() - 2 * DAY)),
        ..OutcomeRequest::default()
    }
}

/// The arguments every process shares, then its own.
fn with<'a>(common: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    [common, extra].concat()
}

/// Waits until the user's `email_opt_out` trait is `true`.
async fn opted_out(users: &mut UserStateClient<Channel>, user: &str) -> bool {
    let request = || GetUserRequest {
        workspace: "default".into(),
        user_id: user.into(),
    };
    eventually_async(200, async || {
        users.get_user(request()).await.ok().is_some_and(|v| {
            let state: Value = serde_json::from_str(&v.into_inner().state_json).unwrap_or_default();
            state["traits"]["email_opt_out"] == true
        })
    })
    .await
}

/// What a client gets from the public `Track` for a report of the gateway's, and for an
/// unsubscribe of its own as late as the gateway's.
async fn a_client_is_refused(ingest: &mut IngestClient<Channel>, user: &str) {
    let properties = json!({
        "idempotency_key": format!("default:{user}:news:1:mail:1"),
        "journey": "news",
        "step": "mail",
        "channel": "email",
    });
    let forged = track(
        user,
        "Message Opened",
        "forged",
        wall_clock_ms(),
        properties,
    );
    let status = ingest
        .track(TrackRequest {
            workspace: "default".into(),
            event: Some(forged),
        })
        .await
        .expect_err("a forged report");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(
            "invalid event: bad_field: event.event: \"Message Opened\" is reserved for the \
             gateway's reports"
        ),
        "{}",
        status.message()
    );

    let late = track(
        user,
        "Message Unsubscribed",
        "late",
        wall_clock_ms() - 2 * DAY,
        json!({"channel": "push"}),
    );
    let status = ingest
        .track(TrackRequest {
            workspace: "default".into(),
            event: Some(late),
        })
        .await
        .expect_err("too late");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("bad_timestamp: event.timestamp")
            && status.message().contains("behind the server's clock"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn in_one_process_the_gateways_late_report_is_taken_and_a_clients_refused() {
    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let journeys = definitions(dir.path());
    let url = redis.url();
    let served = Served::start(
        "all",
        &[
            "--journeys",
            &journeys,
            "--partitions",
            "4",
            "--redis-url",
            &url,
            "--max-event-lateness-ms",
            LATENESS,
        ],
    );
    let mut ingest = IngestClient::connect(served.url()).await.expect("ingest");
    let mut users = UserStateClient::connect(served.url()).await.expect("users");
    let mut gateway = GatewayClient::connect(served.url()).await.expect("gateway");
    let user = "late-outcome-in-process";

    identify_with_email(&mut ingest, user).await;
    gateway
        .report_outcome(late_unsubscribe(user))
        .await
        .expect("the late unsubscribe is recorded");
    assert!(opted_out(&mut users, user).await, "email_opt_out is set");

    a_client_is_refused(&mut ingest, user).await;
}

#[tokio::test]
async fn across_processes_the_gateway_reports_through_its_own_call() {
    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let journeys = definitions(dir.path());
    let url = redis.url();
    let common = ["--redis-url", url.as_str(), "--partitions", "4"];

    let ingest = Served::start(
        "ingest",
        &with(&common, &["--max-event-lateness-ms", LATENESS]),
    );
    let scheduler = Served::start("scheduler", &common);
    let ingest_url = ingest.url();
    let gateway = Served::start("gateway", &with(&common, &["--ingest-url", &ingest_url]));
    let (scheduler_url, gateway_url) = (scheduler.url(), gateway.url());
    let user_state = Served::start(
        "user-state",
        &with(
            &common,
            &[
                "--scheduler-url",
                &scheduler_url,
                "--gateway-url",
                &gateway_url,
                "--journeys",
                &journeys,
            ],
        ),
    );
    let mut ingest_client = IngestClient::connect(ingest.url()).await.expect("ingest");
    let mut users = UserStateClient::connect(user_state.url())
        .await
        .expect("users");
    let mut gateway_client = GatewayClient::connect(gateway.url())
        .await
        .expect("gateway");
    let user = "late-outcome-processes";

    identify_with_email(&mut ingest_client, user).await;
    // Answered only once ingest took the event: two days late, it went in on the gateway's
    // call, which the lateness limit does not hold.
    gateway_client
        .report_outcome(late_unsubscribe(user))
        .await
        .expect("the late unsubscribe is recorded");
    assert!(opted_out(&mut users, user).await, "email_opt_out is set");

    a_client_is_refused(&mut ingest_client, user).await;

    // The gateway's call takes only reports of what became of a message.
    let other = track(user, "Ping", "ping", wall_clock_ms(), json!({}));
    let status = ingest_client
        .append_outcome(AppendOutcomeRequest {
            workspace: "default".into(),
            event: Some(other),
        })
        .await
        .expect_err("not a report");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("\"Ping\" is not a report of what became of a message"),
        "{}",
        status.message()
    );
}
