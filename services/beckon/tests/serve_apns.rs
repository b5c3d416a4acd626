//! `beckon serve all` as a real process with push and Live Activities routed to a local APNs
//! fake (HTTP/2, ES256 provider tokens). An order's status events start, update and end a
//! Live Activity; a token APNs calls unregistered is removed from the user's state through a
//! `Device Token Invalid` event, and a throttled token is kept.

mod support;

#[path = "../../gateway/tests/support/apns.rs"]
#[allow(dead_code, clippy::unwrap_used)]
mod apns;

use beckon_core::{Ts, VirtualClock};
use beckon_proto::convert::{json_to_struct, millis_to_timestamp};
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::user_state_client::UserStateClient;
use beckon_proto::v1::{Event, GetUserRequest, IdentifyRequest, TrackRequest};
use serde_json::{Value, json};
use support::{Served, eventually, track, wall_clock_ms};

const RECEIPT: &str = r#"
id: receipt
version: 1
workspace: default
entry:
  event: Order Placed
steps:
  - id: thanks
    message:
      channel: push
      title: Order received
      body: "Order {{ entry.order_id }} is in"
      transactional: true
"#;

/// A PEM block around `der`, for the fake's signing key.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;

    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn identify(user: &str, at_ms: i64, traits: Value) -> Event {
    Event {
        r#type: "identify".into(),
        message_id: format!("{user}-identify"),
        user_id: user.into(),
        traits: traits.as_object().map(json_to_struct),
        timestamp: Some(millis_to_timestamp(at_ms)),
        ..Event::default()
    }
}

async fn ios_tokens(users: &mut UserStateClient<tonic::transport::Channel>) -> Vec<String> {
    let request = GetUserRequest {
        workspace: "default".into(),
        user_id: "ada".into(),
    };
    let Ok(view) = users.get_user(request).await else {
        return Vec::new();
    };
    let state: Value = serde_json::from_str(&view.into_inner().state_json).unwrap_or_default();
    state["traits"]["devices"]["ios"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn live_activity_and_invalid_tokens_through_apns() {
    let now = wall_clock_ms();
    let fake = apns::start(VirtualClock::new(Ts(now))).await;
    let (gone, busy, good) = (
        apns::device_token(1),
        apns::device_token(2),
        apns::device_token(3),
    );
    let (to_start, activity) = (apns::device_token(4), apns::device_token(5));
    fake.script(&gone, &[(410, "Unregistered")]);
    fake.script(&busy, &[(429, "TooManyRequests"), (429, "TooManyRequests")]);

    let dir = tempfile::tempdir().expect("tempdir");
    let journeys = dir.path().join("journeys");
    std::fs::create_dir_all(&journeys).expect("journeys dir");
    std::fs::write(journeys.join("receipt.yaml"), RECEIPT).expect("receipt");
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/live-activities/order-tracking.yaml"
    );
    std::fs::copy(example, journeys.join("order-tracking.yaml")).expect("example");
    let key = dir.path().join("apns.p8");
    std::fs::write(&key, &fake.key_pem).expect("key");
    let providers = dir.path().join("providers.yaml");
    let config = format!(
        "channels: {{ push: apns, live_activity: apns }}\n\
         apns:\n  endpoint: {}\n  team_id: {}\n  key_id: {}\n  topic: {}\n  \
         signing_key: {{ file: {} }}\n  \
         policy: {{ retry: {{ max_attempts: 2, base_delay: 10 }} }}\n",
        fake.endpoint(),
        apns::TEAM_ID,
        apns::KEY_ID,
        apns::TOPIC,
        key.display()
    );
    std::fs::write(&providers, config).expect("providers");

    let mut served = Served::start(
        "all",
        &[
            "--journeys",
            journeys.to_str().unwrap_or_default(),
            "--providers",
            providers.to_str().unwrap_or_default(),
            "--partitions",
            "4",
        ],
    );
    let mut ingest = IngestClient::connect(served.url()).await.expect("ingest");
    let devices = json!({"devices": {
        "ios": [gone, busy, good],
        "ios-pushtostart": [to_start],
        "ios-liveactivity": [activity],
    }});
    let events = [
        identify("ada", now - 4_000, devices),
        track(
            "ada",
            "Order Placed",
            "o1",
            now - 3_000,
            json!({"order_id": "A-17", "eta": "12:30"}),
        ),
        track(
            "ada",
            "Order Status Changed",
            "o2",
            now - 2_000,
            json!({"order_id": "A-17", "status": "cooking", "eta": "12:35"}),
        ),
        track(
            "ada",
            "Order Status Changed",
            "o3",
            now - 1_000,
            json!({"order_id": "A-17", "status": "delivered"}),
        ),
    ];
    for event in events {
        if event.r#type == "identify" {
            let request = IdentifyRequest {
                workspace: "default".into(),
                event: Some(event),
            };
            ingest.identify(request).await.expect("identify");
            continue;
        }
        let request = TrackRequest {
            workspace: "default".into(),
            event: Some(event),
        };
        ingest.track(request).await.expect("track");
    }

    // Start, update and end of one activity, in order, as APNs expects them.
    let live = || {
        fake.seen()
            .into_iter()
            .filter(|s| s.headers.get("apns-push-type").map(String::as_str) == Some("liveactivity"))
            .collect::<Vec<_>>()
    };
    assert!(eventually(200, || live().len() >= 3).await, "{:?}", live());
    let live = live();
    let events: Vec<_> = live
        .iter()
        .map(|s| s.payload["aps"]["event"].clone())
        .collect();
    assert_eq!(events, vec![json!("start"), json!("update"), json!("end")]);
    assert_eq!(live[0].token, to_start);
    assert_eq!(
        (live[1].token.as_str(), live[2].token.as_str()),
        (activity.as_str(), activity.as_str())
    );
    for seen in &live {
        assert!(seen.http2);
        let topic = format!("{}.push-type.liveactivity", apns::TOPIC);
        assert_eq!(seen.headers.get("apns-topic"), Some(&topic));
        assert_eq!(
            seen.headers.get("apns-priority").map(String::as_str),
            Some("10")
        );
        assert!(
            seen.payload["aps"]["timestamp"].as_i64().is_some(),
            "{}",
            seen.payload
        );
    }
    let start = &live[0].payload["aps"];
    assert_eq!(start["attributes-type"], "OrderAttributes");
    assert_eq!(start["attributes"]["order_id"], "A-17");
    assert_eq!(
        start["content-state"],
        json!({"status": "placed", "eta": "12:30"})
    );
    assert_eq!(live[1].payload["aps"]["content-state"]["status"], "cooking");
    let end = &live[2].payload["aps"];
    assert_eq!(end["content-state"]["status"], "delivered");
    let dismissal = end["dismissal-date"].as_i64().unwrap_or_default();
    assert_eq!(dismissal, (now - 1_000 + 3_600_000).div_euclid(1_000));

    // The receipt push tried every iOS token: the unregistered one is gone from the user's
    // state, the throttled one stays. The send a partition makes tries each token once, so
    // the throttled one, tried once while another token took the message, is not waited on.
    let alerts = |token: &str| {
        fake.seen()
            .iter()
            .filter(|s| {
                s.token == token
                    && s.headers.get("apns-push-type").map(String::as_str) == Some("alert")
            })
            .count()
    };
    assert!(eventually(200, || alerts(&good) == 1).await);
    assert_eq!(alerts(&gone), 1);
    assert_eq!(alerts(&busy), 1);
    let mut users = UserStateClient::connect(served.url()).await.expect("users");
    let mut tokens = Vec::new();
    for _ in 0..200 {
        tokens = ios_tokens(&mut users).await;
        if tokens.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(tokens, vec![busy.clone(), good.clone()]);

    drop((ingest, users));
    assert!(served.terminate().success());
}
