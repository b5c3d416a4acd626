//! A Redis restart leaves the journey service's pooled connection dead, and nothing notices
//! until a command is sent on it. The first list, apply or publish after the restart must
//! still succeed: a command that found its connection lost goes once more, on a fresh one.
//!
//! Nothing else uses the connection between the calls here (no follower, no health check),
//! as in a quiet journey service: the call under test is always the first command after the
//! restart.

mod support;

use beckon_journey_service::{DefinitionStore, Document, JourneysService};
use beckon_proto::v1 as pb;
use beckon_proto::v1::journeys_client::JourneysClient;
use beckon_testkit::RedisServer;
use tokio::sync::watch;

fn welcome(version: u32) -> pb::SpecFile {
    let yaml = format!(
        "id: welcome\nversion: {version}\nworkspace: w\nentry:\n  event: Signed Up\nsteps:\n  \
         - id: hello\n    message:\n      channel: email\n      subject: Hi\n      \
         body: Hello\n"
    );
    pb::SpecFile {
        name: format!("welcome-{version}.yaml"),
        yaml,
    }
}

fn apply_request(version: u32) -> pb::ApplyRequest {
    pb::ApplyRequest {
        workspace: "w".into(),
        files: vec![welcome(version)],
    }
}

#[tokio::test]
async fn list_and_apply_after_a_redis_restart_succeed_the_first_time() {
    let mut redis = RedisServer::start().expect("redis");
    if redis.is_external() {
        return; // a shared server cannot be restarted by a test
    }
    let (store, _) = support::redis_store(&redis).await;
    let (stop, stop_rx) = watch::channel(false);
    let addr = support::serve_until(JourneysService::new(store), stop_rx).await;
    let mut c = JourneysClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let applied = c.apply(apply_request(1)).await.expect("apply").into_inner();
    assert_eq!(applied.release, 1);

    // Restarted without its data: the list is empty, and says so at the first call.
    redis.restart().expect("restart redis");
    let listed = c
        .list_journeys(pb::ListJourneysRequest {
            workspace: "w".into(),
        })
        .await
        .expect("the first list after the restart")
        .into_inner();
    assert!(listed.journeys.is_empty(), "{listed:?}");

    // Restarted again: publishing works at once, and is there to read.
    redis.restart().expect("restart redis");
    let applied = c
        .apply(apply_request(2))
        .await
        .expect("the first apply after the restart")
        .into_inner();
    assert_eq!(applied.release, 1);
    let published: Vec<_> = applied
        .published
        .iter()
        .map(|j| (j.id.as_str(), j.version))
        .collect();
    assert_eq!(published, [("welcome", 2)]);

    let listed = c
        .list_journeys(pb::ListJourneysRequest {
            workspace: "w".into(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.journeys.len(), 1, "{listed:?}");
    let _ = stop.send(true);
}

#[tokio::test]
async fn a_publish_after_a_redis_restart_succeeds_the_first_time() {
    let mut redis = RedisServer::start().expect("redis");
    if redis.is_external() {
        return;
    }
    let (store, _) = support::redis_store(&redis).await;
    let doc = |id: &str| Document {
        kind: "segment",
        id: id.into(),
        version: 1,
        canonical: format!("{{\"id\":\"{id}\"}}"),
    };
    let first = store.publish("w", &[doc("buyers")]).await.expect("publish");
    assert_eq!(first.release, 1);

    // Publishing is the first command the store sends after the restart.
    redis.restart().expect("restart redis");
    let again = store
        .publish("w", &[doc("browsers")])
        .await
        .expect("the first publish after the restart");
    assert_eq!(again.added, ["segment/browsers@1"]);

    let release = store.release("w").await.expect("release");
    let keys: Vec<&str> = release.documents.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["segment/browsers@1"],
        "the restart lost the first document"
    );
}
