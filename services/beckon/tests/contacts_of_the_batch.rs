//! An identify that gives a user's address and the event whose message goes to it can reach
//! a partition in one batch. The batch's messages are sent before its users are written, so
//! the stored state does not hold the address yet: the message carries the address its user's
//! state held when it was made, and the email goes out.

mod support;

#[path = "../../gateway/tests/support/smtp.rs"]
mod smtp;

use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::{BatchRequest, Event};
use beckon_testkit::RedisServer;
use serde_json::json;
use support::{Served, eventually, track, wall_clock_ms};

const WELCOME: &str = r#"
id: welcome-mail
version: 1
workspace: default
entry:
  event: Signed Up
steps:
  - id: hello
    message:
      channel: email
      subject: "Welcome"
      body: "<p>Good to have you.</p>"
      transactional: true
"#;

#[tokio::test]
async fn a_welcome_email_goes_to_the_address_given_in_the_same_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journeys = dir.path().join("journeys");
    std::fs::create_dir(&journeys).expect("journeys");
    std::fs::write(journeys.join("welcome.yaml"), WELCOME).expect("journey");
    let unsubscribe = dir.path().join("unsubscribe.secret");
    std::fs::write(&unsubscribe, "unsub-key-0123456789\n").expect("secret");

    let smtp = smtp::start().await;
    let providers = dir.path().join("providers.yaml");
    let config = format!(
        "channels: {{ email: smtp }}\n\
         smtp:\n  host: 127.0.0.1\n  port: {}\n  security: none\n  \
         from: Shop <shop@example.com>\n  \
         unsubscribe_url: https://shop.example.com/unsubscribe\n  \
         unsubscribe_secret: {{ file: {} }}\n",
        smtp.port,
        unsubscribe.display()
    );
    std::fs::write(&providers, config).expect("providers");

    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let url = redis.url();
    let served = Served::start(
        "all",
        &[
            "--redis-url",
            url.as_str(),
            "--journeys",
            journeys.to_str().unwrap_or_default(),
            "--providers",
            providers.to_str().unwrap_or_default(),
            "--partitions",
            "4",
        ],
    );
    let mut ingest = IngestClient::connect(served.url()).await.expect("ingest");

    // One Batch call is one append: the partition reads the identify and the sign-up together.
    let now = wall_clock_ms();
    let mut events = Vec::new();
    for n in 0..5 {
        let user = format!("new-{n}");
        events.push(Event {
            r#type: "identify".into(),
            message_id: format!("{user}-identify"),
            user_id: user.clone(),
            traits: json!({"email": format!("{user}@example.com")})
                .as_object()
                .map(beckon_proto::convert::json_to_struct),
            timestamp: Some(beckon_proto::convert::millis_to_timestamp(now - 10)),
            ..Default::default()
        });
        events.push(track(
            &user,
            "Signed Up",
            &format!("{user}-signup"),
            now,
            json!({}),
        ));
    }
    let answer = ingest
        .batch(BatchRequest {
            workspace: "default".into(),
            events,
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(answer.results.len(), 10);

    assert!(
        eventually(200, || smtp.messages().len() >= 5).await,
        "{} of 5 emails arrived",
        smtp.messages().len()
    );
    let mut to: Vec<String> = smtp
        .messages()
        .iter()
        .filter_map(|m| {
            String::from_utf8_lossy(m)
                .lines()
                .find_map(|l| l.strip_prefix("To: ").map(str::to_string))
        })
        .collect();
    to.sort();
    let expected: Vec<String> = (0..5).map(|n| format!("new-{n}@example.com")).collect();
    assert_eq!(to, expected);
}
