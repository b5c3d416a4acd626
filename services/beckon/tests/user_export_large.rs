//! A user as large as the settings allow is read and exported whole by `beckon user`: the
//! service sends answers up to its limit and the command accepts as much, well past gRPC's
//! usual 4 MiB.

mod support;

use beckon_proto::convert::{json_to_struct, millis_to_timestamp};
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::user_state_client::UserStateClient;
use beckon_proto::v1::{Event, GetUserRequest, IdentifyRequest, TrackRequest};
use serde_json::{Value, json};
use support::{Served, eventually_async, track, wall_clock_ms};

/// The largest trait size a deployment may set.
const TRAIT_BYTES: usize = 4 * 1024 * 1024;
const VALUE_BYTES: usize = 30_000;
/// Events with long names of their own, which the record counts by name: with the traits
/// full, they take it past 4 MiB.
const NAMED_EVENTS: usize = 300;

fn identify(user: &str, i: usize, at_ms: i64) -> Event {
    let traits = json!({ format!("note_{i:03}"): "v".repeat(VALUE_BYTES) });
    Event {
        r#type: "identify".into(),
        message_id: format!("m-{i}"),
        user_id: user.into(),
        traits: traits.as_object().map(json_to_struct),
        timestamp: Some(millis_to_timestamp(at_ms)),
        ..Event::default()
    }
}

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

#[tokio::test]
async fn a_user_larger_than_four_mebibytes_is_exported_whole() {
    let limit = TRAIT_BYTES.to_string();
    let served = Served::start("all", &["--max-trait-bytes", &limit]);
    let mut ingest = IngestClient::connect(served.url()).await.expect("ingest");

    // Enough 30 KB traits to fill the limit; the last few do not fit and are dropped.
    let count = TRAIT_BYTES / VALUE_BYTES + 3;
    let at = wall_clock_ms() - 60_000;
    for i in 0..count {
        let request = IdentifyRequest {
            workspace: "default".into(),
            event: Some(identify("big", i, at + i as i64)),
        };
        ingest.identify(request).await.expect("identify");
    }
    for i in 0..NAMED_EVENTS {
        let name = format!("{i:03} {}", "n".repeat(400));
        let id = format!("t-{i}");
        let request = TrackRequest {
            workspace: "default".into(),
            event: Some(track("big", &name, &id, at + (count + i) as i64, json!({}))),
        };
        ingest.track(request).await.expect("track");
    }
    let total = count + NAMED_EVENTS;

    // Applied once the last identify is counted.
    let mut users = UserStateClient::connect(served.url())
        .await
        .expect("users")
        .max_decoding_message_size(usize::MAX);
    let request = || GetUserRequest {
        workspace: "default".into(),
        user_id: "big".into(),
    };
    let applied = eventually_async(600, async || {
        users.get_user(request()).await.is_ok_and(|v| {
            let state: Value = serde_json::from_str(&v.into_inner().state_json).unwrap_or_default();
            state["total_events"].as_u64() == Some(total as u64)
        })
    })
    .await;
    assert!(applied, "every identify was applied");

    let (code, stdout, stderr) = user(&served.url(), &["export", "big"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.len() > 4 * 1024 * 1024, "{} bytes", stdout.len());
    let exported: Value = serde_json::from_str(&stdout).expect("the export is JSON");
    let text = exported.to_string();
    assert!(text.contains("note_000") && text.contains("note_100"));

    let (code, stdout, stderr) = user(&served.url(), &["get", "big"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.len() > 4 * 1024 * 1024, "{} bytes", stdout.len());
    let printed: Value = serde_json::from_str(&stdout).expect("get prints JSON");
    assert_eq!(printed["state"]["traits_dropped"], 3, "{}", &stdout[..200]);
}
