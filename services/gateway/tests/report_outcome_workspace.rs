//! `ReportOutcome` over a real tonic server refuses a workspace the deployment does not
//! serve: the outcome would otherwise be acknowledged and then dropped when ingest refused
//! the event.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use beckon_core::Duration;
use beckon_gateway::Gateway;
use beckon_gateway::grpc::GatewayService;
use beckon_gateway::inbox::Inbox;
use beckon_proto::v1::OutcomeRequest;
use support::test_deps;

fn opened(workspace: &str) -> OutcomeRequest {
    OutcomeRequest {
        workspace: workspace.into(),
        user_id: "ada".into(),
        message_key: "k-1".into(),
        outcome: "opened".into(),
        channel: "push".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_outcome_for_a_workspace_not_served_is_refused_and_not_reported() {
    let t = test_deps();
    let inbox = Arc::new(Inbox::new(t.deps.clock.clone(), Duration::hours(24), 50));
    let service = GatewayService::new(Gateway::new(), inbox)
        .with_outcomes(Arc::new(t.sink.clone()))
        .with_workspaces(vec!["acme".into()]);
    let addr = support::grpc::serve(service).await;
    let mut client = support::grpc::client(addr).await;

    let status = client
        .report_outcome(opened("elsewhere"))
        .await
        .expect_err("not served");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let message = status.message();
    assert!(message.contains("workspace"), "{message}");
    assert!(message.contains("\"elsewhere\" is not served"), "{message}");
    assert!(message.contains("[\"acme\"]"), "{message}");
    assert!(t.sink.events().is_empty(), "{:?}", t.sink.events());

    // The served workspace is reported as before.
    let answer = client.report_outcome(opened("acme")).await.unwrap();
    assert!(!answer.into_inner().event_id.is_empty());
    let reported = t.sink.scoped();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].0, "acme");
}
