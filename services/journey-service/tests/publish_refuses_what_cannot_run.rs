//! Publishing over real gRPC on real Redis refuses, with the lint's exact words and places, a
//! loop whose waits add up to less than a minute and ids too long for the keys of the
//! messages a journey sends, and publishes nothing of the request.

mod support;

use beckon_journey_service::JourneysService;
use beckon_proto::v1 as pb;
use beckon_proto::v1::journeys_client::JourneysClient;
use beckon_testkit::RedisServer;
use tokio::sync::watch;
use tonic::transport::Channel;

const SPIN: &str = "id: spin\nversion: 1\nworkspace: w\nentry: {event: X}\nsteps:\n  \
    - id: a\n    delay: 1ms\n  - id: b\n    message: {channel: push, body: hi}\n    next: a\n";

/// Serves the journey service on a free loopback port until the sender says stop.
async fn serve(redis: &RedisServer) -> (JourneysClient<Channel>, watch::Sender<bool>) {
    let (store, _) = support::redis_store(redis).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let addr = support::serve_until(JourneysService::new(store), stop_rx).await;
    let client = JourneysClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    (client, stop_tx)
}

async fn refused(c: &mut JourneysClient<Channel>, name: &str, yaml: &str) -> tonic::Status {
    c.apply(pb::ApplyRequest {
        workspace: "w".into(),
        files: vec![pb::SpecFile {
            name: name.into(),
            yaml: yaml.into(),
        }],
    })
    .await
    .expect_err("refused")
}

#[tokio::test]
async fn a_fast_loop_and_overlong_ids_are_refused_and_nothing_is_published() {
    let redis = RedisServer::start().expect("redis");
    let (mut c, stop) = serve(&redis).await;

    let status = refused(&mut c, "spin.yaml", SPIN).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "spin.yaml:10:11: steps[1].next: steps `a` -> `b` -> `a` loop after waiting only 1ms: \
         the waits on a loop must add up to at least 1m"
    );

    let long = SPIN
        .replace("id: spin", &format!("id: {}", "j".repeat(3001)))
        .replace("id: b\n", &format!("id: {}\n", "s".repeat(1001)))
        .replace("delay: 1ms", "delay: 1h")
        .replace("next: a", "next: exit");
    let status = refused(&mut c, "long.yaml", &long).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "long.yaml:8:9: steps[1].id: 1001 bytes, with the journey id's 3001 bytes 4002; at most \
         3485 together so that a message's idempotency key (workspace, user id, journey id, \
         instance, step id, visit) fits the gateway's 4096 bytes"
    );

    let release = c
        .get_release(pb::GetReleaseRequest {
            workspace: "w".into(),
        })
        .await
        .expect("release")
        .into_inner();
    assert_eq!(release.number, 0);
    let _ = stop.send(true);
}
