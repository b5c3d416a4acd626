//! Over real gRPC on real Redis, the Scheduler service refuses a workspace this deployment
//! does not serve, a name no workspace can have, and a partition it does not have, with
//! INVALID_ARGUMENT naming the field; a refused SetTimers stores nothing.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use beckon_proto::v1 as pb;
use beckon_proto::v1::scheduler_client::SchedulerClient;
use beckon_proto::v1::scheduler_server::SchedulerServer;
use beckon_scheduler::grpc::SchedulerService;
use beckon_testkit::RedisServer;
use tokio::sync::{Notify, watch};
use tonic::transport::Channel;

const PARTITIONS: u32 = 4;

/// Serves the scheduler for workspace `w` on a free loopback port until `stop` turns true.
async fn serve(redis: &RedisServer, mut stop: watch::Receiver<bool>) -> SocketAddr {
    let store = Arc::new(support::timers(redis, PARTITIONS).await);
    let service = SchedulerService::new(store, PARTITIONS, Arc::new(Notify::new()))
        .with_workspaces(vec!["w".into()]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(SchedulerServer::new(service))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )
            .await
            .expect("serve");
    });
    addr
}

fn set(workspace: &str) -> pb::SetTimersRequest {
    pb::SetTimersRequest {
        workspace: workspace.into(),
        timers: vec![pb::Timer {
            id: "t1".into(),
            user_id: "u1".into(),
            due: Some(prost_types::Timestamp {
                seconds: 4_000_000_000,
                nanos: 0,
            }),
            journey: "cart".into(),
            step: String::new(),
            traceparent: String::new(),
            instance: 1,
        }],
    }
}

fn cancel(workspace: &str) -> pb::CancelTimersRequest {
    pb::CancelTimersRequest {
        workspace: workspace.into(),
        timers: vec![pb::TimerRef {
            user_id: "u1".into(),
            id: "t1".into(),
        }],
    }
}

fn pending(workspace: &str, partitions: &[u32]) -> pb::PendingRequest {
    pb::PendingRequest {
        workspace: workspace.into(),
        partitions: partitions.to_vec(),
    }
}

/// The refusal of each of the three calls for `workspace`, as (code, message).
async fn refusals(c: &mut SchedulerClient<Channel>, workspace: &str) -> Vec<(tonic::Code, String)> {
    let statuses = [
        c.set_timers(set(workspace))
            .await
            .map(drop)
            .expect_err("set refused"),
        c.cancel_timers(cancel(workspace))
            .await
            .map(drop)
            .expect_err("cancel refused"),
        c.pending(pending(workspace, &[]))
            .await
            .map(drop)
            .expect_err("pending refused"),
    ];
    statuses
        .iter()
        .map(|s| (s.code(), s.message().to_string()))
        .collect()
}

async fn keys(redis: &RedisServer) -> Vec<String> {
    let client = redis::Client::open(redis.url()).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .expect("keys")
}

#[tokio::test]
async fn unserved_and_invalid_workspaces_and_partitions_are_refused() {
    let redis = RedisServer::start().expect("redis");
    let (stop, stop_rx) = watch::channel(false);
    let addr = serve(&redis, stop_rx).await;
    let mut c = SchedulerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let not_served = "workspace: \"other\" is not served here (this deployment serves [\"w\"])";
    let invalid = "workspace: expected 1 to 64 letters, digits, '-' or '_', found \"{x}\"";
    let empty = "workspace: expected 1 to 64 letters, digits, '-' or '_', found \"\"";
    for (workspace, said) in [("other", not_served), ("{x}", invalid), ("", empty)] {
        for (code, message) in refusals(&mut c, workspace).await {
            assert_eq!(
                code,
                tonic::Code::InvalidArgument,
                "{workspace:?}: {message}"
            );
            assert_eq!(message, said, "{workspace:?}");
        }
    }
    assert_eq!(
        keys(&redis).await,
        Vec::<String>::new(),
        "a refused call stores nothing"
    );

    let status = c
        .pending(pending("w", &[0, 99_999]))
        .await
        .expect_err("out of range");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "partitions: 99999 is out of range (this deployment has partitions 0 to 3)"
    );
    let status = c
        .pending(pending("w", &[PARTITIONS]))
        .await
        .expect_err("one past the last");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // The served workspace is taken as before.
    let created = c
        .set_timers(set("w"))
        .await
        .expect("set")
        .into_inner()
        .created;
    assert_eq!(created, 1);
    let all = c
        .pending(pending("w", &[]))
        .await
        .expect("pending")
        .into_inner();
    assert_eq!(all.pending, 1);
    let named: Vec<u32> = (0..PARTITIONS).collect();
    let each = c
        .pending(pending("w", &named))
        .await
        .expect("pending")
        .into_inner();
    assert_eq!(each.pending, 1);
    let cancelled = c
        .cancel_timers(cancel("w"))
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.cancelled, 1);
    let _ = stop.send(true);
}
