//! Definitions published to a running `beckon serve all` with `beckon journeys apply` take
//! effect without a restart; bad specs are refused with their position and change nothing.

mod support;

use std::process::Command;

use beckon_proto::v1::TrackRequest;
use beckon_proto::v1::ingest_client::IngestClient;
use serde_json::json;
use support::{Served, eventually, examples, recorded, track, wall_clock_ms};

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_beckon"))
        .args(args)
        .output()
        .expect("run beckon");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn journeys_applied_to_a_running_service_take_effect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("messages.jsonl");
    let served = Served::start(
        "all",
        &[
            "--messages-out",
            out.to_str().unwrap_or_default(),
            "--partitions",
            "4",
        ],
    );
    let url = served.url();
    let mut ingest = IngestClient::connect(url.clone()).await.expect("connect");
    let past = wall_clock_ms() - 2 * 3_600_000;

    // Nothing is published: an abandoned cart sends nothing.
    let add =
        |user: &str, id: &str| track(user, "Product Added", id, past, json!({"name": "Lamp"}));
    ingest
        .track(TrackRequest {
            workspace: "default".into(),
            event: Some(add("early", "e1")),
        })
        .await
        .expect("track");

    // A spec with an error is refused with its file, line and field, and publishes nothing.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "id: broken\nversion: 1\nworkspace: default\nentry:\n  event: X\nsteps:\n  - id: a\n    \
         wait: forever\n",
    )
    .expect("write");
    let (code, text) = cli(&[
        "journeys",
        "apply",
        bad.to_str().unwrap_or_default(),
        "--url",
        &url,
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("bad.yaml:8:"), "{text}");
    let (code, text) = cli(&["journeys", "list", "--url", &url]);
    assert_eq!(code, 0, "{text}");
    assert!(text.trim().is_empty(), "nothing published yet: {text}");

    // Lint through the service, then publish the examples.
    let examples = examples();
    let examples = examples.to_str().unwrap_or_default();
    let (code, text) = cli(&["journeys", "lint", examples, "--url", &url]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = cli(&["journeys", "apply", examples, "--url", &url]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("published journey cart-abandonment version 1"),
        "{text}"
    );
    let (_, text) = cli(&["journeys", "list", "--url", &url]);
    assert!(text.contains("cart-abandonment\tv1"), "{text}");

    // Applying the same folder again publishes nothing new.
    let (code, text) = cli(&["journeys", "apply", examples, "--url", &url]);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("published journey"), "{text}");

    // A cart abandoned now gets its reminder from the published journey.
    ingest
        .track(TrackRequest {
            workspace: "default".into(),
            event: Some(add("later", "l1")),
        })
        .await
        .expect("track");
    let cart_for = |user: &str| {
        recorded(&out)
            .iter()
            .any(|m| m["journey"] == "cart-abandonment" && m["user_id"] == user)
    };
    assert!(
        eventually(200, || cart_for("later")).await,
        "the reminder went out: {:?}",
        recorded(&out)
    );
    assert!(!cart_for("early"), "no journey existed for the first cart");
}
