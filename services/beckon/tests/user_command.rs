//! What `beckon user` prints against a running `serve all`: a user as JSON, a segment's
//! members told apart from a segment that does not exist, and an unknown user said to be
//! unknown, as `beckon explain` says it.

mod support;

use beckon_proto::v1::TrackRequest;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::user_state_client::UserStateClient;
use serde_json::{Value, json};
use support::{Served, eventually_async, track, wall_clock_ms};

const DEFS: &str = "
id: onboarding
version: 1
workspace: default
entry:
  event: Signed Up
steps:
  - id: wait
    delay: 2d
  - id: nudge
    message:
      channel: push
      body: Still there?
---
kind: segment
id: signed-up
version: 1
workspace: default
condition:
  did: {event: Signed Up}
---
kind: segment
id: big-spenders
version: 1
workspace: default
condition:
  did: {event: Order Completed, at_least: 10}
";

/// `serve all` on the embedded store with the definitions above.
fn serve(dir: &tempfile::TempDir) -> Served {
    std::fs::write(dir.path().join("defs.yaml"), DEFS).expect("write definitions");
    let out = dir.path().join("sent.jsonl");
    Served::start(
        "all",
        &[
            "--journeys",
            dir.path().to_str().unwrap_or_default(),
            "--messages-out",
            out.to_str().unwrap_or_default(),
        ],
    )
}

/// `beckon user ARGS --url URL`: exit code, standard output and standard error.
fn user(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_beckon"))
        .arg("user")
        .args(args)
        .args(["--url", url])
        .output()
        .expect("run beckon user");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn signed_up(served: &Served, user: &str) {
    let mut ingest = IngestClient::connect(served.url()).await.expect("ingest");
    let event = track(
        user,
        "Signed Up",
        "m-1",
        wall_clock_ms() - 60_000,
        json!({}),
    );
    ingest
        .track(TrackRequest {
            workspace: "default".into(),
            event: Some(event),
        })
        .await
        .expect("track");

    // Applied once the user-state service knows the user.
    let mut users = UserStateClient::connect(served.url()).await.expect("users");
    let request = || beckon_proto::v1::GetUserRequest {
        workspace: "default".into(),
        user_id: user.into(),
    };
    assert!(
        eventually_async(200, async || users
            .get_user(request())
            .await
            .is_ok_and(|v| v.into_inner().segments.iter().any(|s| s == "signed-up")))
        .await,
        "the event was applied"
    );
}

#[tokio::test]
async fn user_get_prints_the_user_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = serve(&dir);
    signed_up(&served, "ada").await;

    let (code, stdout, stderr) = user(&served.url(), &["get", "ada"]);
    assert_eq!(code, Some(0), "{stderr}");
    let printed: Value = serde_json::from_str(&stdout).expect("standard output is JSON");
    assert_eq!(printed["user_id"], "ada");
    assert!(
        printed["version"].as_u64().is_some_and(|v| v > 0),
        "{printed}"
    );
    assert_eq!(printed["segments"], json!(["signed-up"]));

    let journeys = printed["journeys"].as_array().expect("journeys is a list");
    assert_eq!(journeys.len(), 1, "{printed}");
    assert_eq!(journeys[0]["journey"], "onboarding");
    assert_eq!(journeys[0]["version"], 1);
    assert_eq!(journeys[0]["step"], "wait");
    let entered = journeys[0]["entered_at"].as_str().expect("entered_at");
    assert!(entered.ends_with('Z') && entered.contains('T'), "{entered}");

    // The state is a JSON object in the document, not a string holding JSON.
    assert!(printed["state"].is_object(), "{printed}");
    assert!(!stdout.contains("JourneyPosition"), "{stdout}");
}

#[tokio::test]
async fn members_of_an_unknown_segment_are_refused_and_an_empty_one_is_said_to_be_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = serve(&dir);
    signed_up(&served, "ada").await;
    let url = served.url();

    let (code, stdout, stderr) = user(&url, &["members", "signed-up"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "ada\n"), "{stderr}");

    // Defined, nobody in it: an empty list, and a word that it is empty.
    let (code, stdout, stderr) = user(&url, &["members", "big-spenders"]);
    assert_eq!((code, stdout.as_str()), (Some(0), ""), "{stderr}");
    assert!(
        stderr.contains("\"big-spenders\" has no members"),
        "{stderr}"
    );

    // Not defined: a mistyped name is said to be unknown.
    let (code, stdout, stderr) = user(&url, &["members", "signed-upp"]);
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "{stderr}");
    assert!(
        stderr.contains("segment: \"signed-upp\" is not defined in workspace \"default\""),
        "{stderr}"
    );

    // The service answers NOT_FOUND to any client.
    let mut users = UserStateClient::connect(url).await.expect("users");
    let status = users
        .list_segment_members(beckon_proto::v1::ListSegmentMembersRequest {
            workspace: "default".into(),
            segment: "signed-upp".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect_err("unknown segment");
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn an_unknown_user_is_said_to_be_unknown_with_exit_code_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = serve(&dir);
    signed_up(&served, "ada").await;
    let url = served.url();

    for action in ["get", "export", "explain"] {
        let (code, stdout, stderr) = user(&url, &[action, "nobody"]);
        assert_eq!((code, stdout.as_str()), (Some(1), ""), "{action}: {stderr}");
        let said = format!("beckon user {action}: user_id: no user \"nobody\"");
        assert_eq!(stderr.trim_end(), said, "{action}");
    }

    // `beckon explain` replays a file: a user with no event in it is unknown the same way.
    let events = dir.path().join("events.jsonl");
    let line = serde_json::json!({"type": "track", "userId": "ada", "event": "Signed Up",
        "timestamp": "2026-03-02T09:00:00Z"});
    std::fs::write(&events, format!("{line}\n")).expect("write events");
    let explain = |who: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_beckon"))
            .args(["explain", who, "--journeys"])
            .arg(dir.path().join("defs.yaml"))
            .arg("--events")
            .arg(&events)
            .output()
            .expect("run beckon explain");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = explain("nobody");
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "{stderr}");
    let said = format!(
        "beckon explain: no user \"nobody\": no event in {} is theirs",
        events.display()
    );
    assert_eq!(stderr.trim_end(), said);

    let (code, stdout, stderr) = explain("ada");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("journey onboarding"), "{stdout}");
}
