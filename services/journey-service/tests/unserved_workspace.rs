//! A journey service that serves one workspace refuses calls for any other, naming it and the
//! workspaces it serves, as the other services do: a mistyped workspace is not answered with
//! an empty list, nor published where no partition runs it.

mod support;

use beckon_journey_service::JourneysService;
use beckon_proto::v1 as pb;
use beckon_proto::v1::journeys_client::JourneysClient;
use beckon_testkit::RedisServer;
use tokio::sync::watch;

const JOURNEY: &str = "id: welcome\nversion: 1\nworkspace: w\nentry:\n  event: Signed Up\n\
    steps:\n  - id: hello\n    message:\n      channel: push\n      body: Hello\n";

#[tokio::test]
async fn calls_for_another_workspace_are_refused_by_name() {
    let redis = RedisServer::start().expect("redis");
    let (store, _client) = support::redis_store(&redis).await;
    let (_stop, stop_rx) = watch::channel(false);
    let service = JourneysService::new(store).with_workspaces(vec!["w".into()]);
    let addr = support::serve_until(service, stop_rx).await;
    let mut c = JourneysClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let refused = c
        .list_journeys(pb::ListJourneysRequest {
            workspace: "a:b".into(),
        })
        .await
        .expect_err("an unserved workspace is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "workspace: \"a:b\" is not served here (this deployment serves [\"w\"])"
    );

    let files = vec![pb::SpecFile {
        name: "welcome.yaml".into(),
        yaml: JOURNEY.replace("workspace: w", "workspace: other"),
    }];
    let refused = c
        .apply(pb::ApplyRequest {
            workspace: "other".into(),
            files: files.clone(),
        })
        .await
        .expect_err("nothing is published for an unserved workspace");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("\"other\" is not served here"),
        "{refused:?}"
    );
    let refused = c
        .lint(pb::LintRequest {
            workspace: "other".into(),
            files,
        })
        .await
        .expect_err("nor linted against it");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // The served workspace answers as before.
    let applied = c
        .apply(pb::ApplyRequest {
            workspace: "w".into(),
            files: vec![pb::SpecFile {
                name: "welcome.yaml".into(),
                yaml: JOURNEY.into(),
            }],
        })
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(applied.published.len(), 1);
    let listed = c
        .list_journeys(pb::ListJourneysRequest {
            workspace: "w".into(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.journeys.len(), 1);
}
