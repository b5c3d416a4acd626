//! The dedup window is a setting: each event's marker in Redis lives as long as it says,
//! on every process that appends to the log.

mod support;

use beckon_proto::v1::TrackRequest;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_testkit::RedisServer;
use serde_json::json;
use support::{Served, track, wall_clock_ms};

/// Seconds left on the marker of message id `id`, whichever partition holds it.
fn marker_ttl(redis: &RedisServer, id: &str) -> i64 {
    let mut con = redis.connection().expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("bk:*:seen:{id}"))
        .query(&mut con)
        .expect("keys");
    assert_eq!(keys.len(), 1, "one marker for {id}: {keys:?}");
    redis::cmd("TTL")
        .arg(&keys[0])
        .query(&mut con)
        .expect("ttl")
}

async fn send(ingest: &Served, id: &str) {
    let mut client = IngestClient::connect(ingest.url()).await.expect("ingest");
    client
        .track(TrackRequest {
            workspace: "default".into(),
            event: Some(track("u1", "Ping", id, wall_clock_ms(), json!({}))),
        })
        .await
        .expect("track");
}

#[tokio::test]
async fn markers_live_as_long_as_the_window_says() {
    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let url = redis.url();

    let default = Served::start("ingest", &["--redis-url", &url]);
    send(&default, "default-window").await;
    let ttl = marker_ttl(&redis, "default-window");
    assert!((86_300..=86_400).contains(&ttl), "a day by default: {ttl}");
    drop(default);

    let short = Served::start_with(
        "ingest",
        &["--redis-url", &url],
        &[("BECKON_DEDUP_WINDOW_MS", "120500")],
        None,
    );
    send(&short, "short-window").await;
    let ttl = marker_ttl(&redis, "short-window");
    assert!((100..=121).contains(&ttl), "120.5 s, rounded up: {ttl}");
}
