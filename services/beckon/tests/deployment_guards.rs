//! Mistakes that would lose events silently are refused loudly: a process started with a
//! partition count other than its deployment's does not start, and ingest and the gateway
//! refuse events and outcomes for a workspace this deployment does not evaluate.

mod support;

use std::process::{Command, Stdio};

use beckon_proto::v1::gateway_client::GatewayClient;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::{OutcomeRequest, TrackRequest};
use beckon_testkit::RedisServer;
use serde_json::json;
use support::{Served, track, wall_clock_ms};

#[tokio::test]
async fn a_process_with_another_partition_count_refuses_to_start() {
    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let url = redis.url();
    let ingest = Served::start(
        "ingest",
        &["--redis-url", url.as_str(), "--partitions", "8"],
    );

    // Another count: the process explains and exits without announcing it listens.
    let out = Command::new(env!("CARGO_BIN_EXE_beckon"))
        .args(["serve", "scheduler", "--listen", "127.0.0.1:0"])
        .args(["--redis-url", url.as_str(), "--partitions", "4"])
        .stdin(Stdio::null())
        .output()
        .expect("run beckon");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(stderr.contains("uses 8 partitions, not 4"), "{stderr}");

    // The same count starts.
    let _scheduler = Served::start(
        "scheduler",
        &["--redis-url", url.as_str(), "--partitions", "8"],
    );

    // Ingest answers only for the workspace it serves, naming the field.
    let mut client = IngestClient::connect(ingest.url()).await.expect("connect");
    let event = || track("u1", "Product Viewed", "m1", wall_clock_ms(), json!({}));
    let status = client
        .track(TrackRequest {
            workspace: "elsewhere".into(),
            event: Some(event()),
        })
        .await
        .expect_err("not served");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("workspace"),
        "{}",
        status.message()
    );
    let ack = client
        .track(TrackRequest {
            workspace: "default".into(),
            event: Some(event()),
        })
        .await
        .expect("served")
        .into_inner();
    assert!(ack.appended);
}

#[tokio::test]
async fn the_gateway_refuses_an_outcome_for_a_workspace_not_served() {
    let served = Served::start("all", &["--workspace", "shop"]);
    let mut client = GatewayClient::connect(served.url()).await.expect("connect");
    let outcome = |workspace: &str| OutcomeRequest {
        workspace: workspace.into(),
        user_id: "u1".into(),
        message_key: "k1".into(),
        outcome: "delivered".into(),
        channel: "push".into(),
        ..OutcomeRequest::default()
    };

    // Acknowledged, it would have been dropped on its way into the log.
    let status = client
        .report_outcome(outcome("default"))
        .await
        .expect_err("not served");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("workspace") && status.message().contains("[\"shop\"]"),
        "{}",
        status.message()
    );

    let answer = client
        .report_outcome(outcome("shop"))
        .await
        .expect("served")
        .into_inner();
    assert!(!answer.event_id.is_empty());
}
