//! `beckon serve ingest` with its Redis stopped: a call fails with UNAVAILABLE within the
//! configured bound instead of waiting on reconnection attempts, the health service reports
//! NOT_SERVING, and both come back once Redis does.

mod support;

use std::time::Duration;

use beckon_proto::v1::TrackRequest;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_testkit::RedisServer;
use serde_json::json;
use support::{Served, eventually, eventually_async, health, track, wall_clock_ms};
use tonic::Code;

/// The bound the service is started with.
const REDIS_TIMEOUT_MS: &str = "500";

/// A caller's own deadline, several times the bound: a call that took longer than that would
/// end DEADLINE_EXCEEDED or CANCELLED, not with the service's UNAVAILABLE.
const CALLER_DEADLINE: Duration = Duration::from_secs(4);

/// Tracks one event under the caller's deadline.
async fn send(url: &str, id: &str) -> Result<bool, tonic::Status> {
    let mut client = IngestClient::connect(url.to_string())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let at = wall_clock_ms() - 60_000;
    let mut request = tonic::Request::new(TrackRequest {
        workspace: "default".into(),
        event: Some(track("u-1", "App Opened", id, at, json!({}))),
    });
    request.set_timeout(CALLER_DEADLINE);
    Ok(client.track(request).await?.into_inner().appended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_fails_within_the_bound_and_health_follows_redis() {
    let mut redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let url = redis.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("ingest.log");
    let args = [
        "--redis-url",
        url.as_str(),
        "--partitions",
        "2",
        "--redis-timeout-ms",
        REDIS_TIMEOUT_MS,
    ];
    let served = Served::start_with("ingest", &args, &[], Some(&log));
    let grpc = served.url();

    assert_eq!(send(&grpc, "before").await.map_err(|s| s.code()), Ok(true));
    for name in ["beckon.v1.Ingest", "", "liveness"] {
        assert_eq!(health(&grpc, name).await.ok().as_deref(), Some("SERVING"));
    }

    // Redis goes away: readiness follows within a few pings, liveness does not.
    redis.kill();
    let not_serving = eventually_async(400, async || {
        health(&grpc, "beckon.v1.Ingest").await.ok().as_deref() == Some("NOT_SERVING")
    })
    .await;
    assert!(not_serving, "the health service never reported NOT_SERVING");
    assert_eq!(health(&grpc, "").await.ok().as_deref(), Some("NOT_SERVING"));
    assert_eq!(
        health(&grpc, "liveness").await.ok().as_deref(),
        Some("SERVING")
    );

    // Calls fail with UNAVAILABLE, each within the caller's deadline, and say why.
    for n in 0..3 {
        let refused = send(&grpc, &format!("during-{n}")).await;
        let status = refused.expect_err("no event can be appended without Redis");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status
                .message()
                .starts_with("the event log is unavailable: "),
            "{status:?}"
        );
    }

    // Redis comes back on the same port: readiness returns, and so do appends.
    redis.restart().expect("redis-server again");
    let serving = eventually_async(400, async || {
        health(&grpc, "beckon.v1.Ingest").await.ok().as_deref() == Some("SERVING")
    })
    .await;
    assert!(serving, "the health service never reported SERVING again");
    assert_eq!(health(&grpc, "").await.ok().as_deref(), Some("SERVING"));
    let appended =
        eventually_async(400, async || send(&grpc, "after").await.is_ok_and(|a| a)).await;
    assert!(appended, "no event was appended once Redis was back");

    // Each change of state is logged once, not once per failed ping.
    let logged = eventually(400, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("Redis answers again"))
    })
    .await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(logged, "{text}");
    assert_eq!(text.matches("Redis does not answer").count(), 1, "{text}");
    assert_eq!(text.matches("Redis answers again").count(), 1, "{text}");
    assert!(!text.contains("panicked"), "{text}");
}
