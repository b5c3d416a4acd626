//! A request naming a workspace the deployment does not run is refused by name. A forget for
//! one would otherwise append to a partition log nobody reads, which Redis keeps for good.

mod support;

use std::sync::Arc;

use beckon_core::{Clock, Ts, VirtualClock};
use beckon_ingest::log::{EventLog, LogConfig, RedisLog};
use beckon_proto::v1::GetUserRequest;
use beckon_testkit::RedisServer;
use beckon_user_state::StateStore;
use beckon_user_state::grpc::UserStateService;
use beckon_user_state::redis::RedisStateStore;
use redis::aio::ConnectionManager;
use tonic::Code;

const PARTITIONS: u32 = 1;

/// Key names under the test's namespace that belong to `workspace`.
fn keys_of(server: &RedisServer, workspace: &str) -> Vec<String> {
    let mut con = server.connection().expect("connection");
    let pattern = format!("{}:{{{workspace}:*", server.namespace());
    redis::cmd("KEYS")
        .arg(pattern)
        .query(&mut con)
        .expect("keys")
}

fn request(workspace: &str) -> GetUserRequest {
    GetUserRequest {
        workspace: workspace.into(),
        user_id: "bob".into(),
    }
}

fn assert_refused(status: &tonic::Status) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("workspace: \"other\" is not served here"),
        "{status:?}"
    );
    assert!(status.message().contains("\"w\""), "{status:?}");
}

#[tokio::test]
async fn requests_for_a_workspace_not_served_are_refused_and_leave_no_stream() {
    let server = RedisServer::start().expect("redis");
    let ns = server.namespace().to_string();
    let client = redis::Client::open(server.url()).expect("client");
    let con: ConnectionManager = client.get_connection_manager().await.expect("connect");
    let store: Arc<dyn StateStore> = Arc::new(RedisStateStore::new(con.clone(), &ns, PARTITIONS));
    let config = LogConfig {
        namespace: ns,
        partitions: PARTITIONS,
        ..LogConfig::default()
    };
    let log = Arc::new(RedisLog::new(con, config));
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new(Ts(0)));
    let shared: Arc<dyn EventLog> = log.clone();
    let service = UserStateService::new(store, shared, clock).with_workspaces(vec!["w".into()]);
    let mut users = support::serve(service).await;

    let forgot = users.forget_user(request("other")).await;
    assert_refused(&forgot.expect_err("forget refused"));
    let got = users.get_user(request("other")).await;
    assert_refused(&got.expect_err("get refused"));
    let exported = users.export_user(request("other")).await;
    assert_refused(&exported.expect_err("export refused"));
    assert!(
        keys_of(&server, "other").is_empty(),
        "{:?}",
        keys_of(&server, "other")
    );

    // The served workspace still takes a forget, whose entry is found where the check looks.
    let removed = users
        .forget_user(request("w"))
        .await
        .expect("forget in the served workspace")
        .into_inner()
        .keys_removed;
    assert_eq!(removed, 0);
    assert_eq!(keys_of(&server, "w"), [log.stream("w", 0)]);
}
