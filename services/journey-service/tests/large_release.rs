//! Releases past gRPC's default 4 MiB message size, over real gRPC on real Redis: a follower
//! (what every user-state instance runs) reads one and keeps following it, and a publication
//! past the service's release limit is refused with the release's size and the limit.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use beckon_journey::{CurrentEngine, Engine};
use beckon_journey_service::service::MAX_RELEASE_BYTES;
use beckon_journey_service::{JourneysService, follow_service};
use beckon_proto::v1 as pb;
use beckon_proto::v1::journeys_client::JourneysClient;
use beckon_testkit::RedisServer;
use tokio::sync::watch;
use tonic::transport::Channel;

/// A body the size of a large HTML email.
const BODY_BYTES: usize = 40_000;

fn journey(version: u32) -> String {
    let body = "a".repeat(BODY_BYTES);
    format!(
        "id: newsletter\nversion: {version}\nworkspace: w\nentry:\n  event: Signed Up\nsteps:\n  \
         - id: hello\n    message:\n      channel: email\n      subject: Issue {version}\n      \
         body: {body}\n"
    )
}

fn files(versions: std::ops::RangeInclusive<u32>) -> Vec<pb::SpecFile> {
    versions
        .map(|v| pb::SpecFile {
            name: format!("newsletter-{v}.yaml"),
            yaml: journey(v),
        })
        .collect()
}

/// Serves the journey service on a free loopback port, releases announced through Redis.
async fn serve(redis: &RedisServer, limit: usize) -> (SocketAddr, watch::Sender<bool>) {
    let (store, client) = support::redis_store(redis).await;
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut stop = stop_rx.clone();
    let listening = store.clone();
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        listening.listen(client, vec!["w".into()], stopped).await;
    });

    let service = JourneysService::new(store).with_release_limit(limit);
    (support::serve_until(service, stop_rx).await, stop_tx)
}

/// A publishing client that, like `beckon journeys`, sends and reads what the service does.
async fn client(addr: SocketAddr) -> JourneysClient<Channel> {
    JourneysClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .max_encoding_message_size(beckon_journey_service::service::MAX_REQUEST_BYTES)
        .max_decoding_message_size(MAX_RELEASE_BYTES)
}

async fn apply(c: &mut JourneysClient<Channel>, files: Vec<pb::SpecFile>) -> pb::ApplyResponse {
    c.apply(pb::ApplyRequest {
        workspace: "w".into(),
        files,
    })
    .await
    .expect("apply")
    .into_inner()
}

fn newest(engine: &CurrentEngine) -> u32 {
    let e = engine.get();
    e.journeys().iter().map(|j| j.version).max().unwrap_or(0)
}

#[tokio::test]
async fn a_release_past_4_mib_is_read_and_followed() {
    let redis = RedisServer::start().expect("redis");
    let (addr, _stop) = serve(&redis, MAX_RELEASE_BYTES).await;
    let mut c = client(addr).await;

    // 120 versions of a journey with a 40 KB body.
    apply(&mut c, files(1..=120)).await;
    let release = c
        .get_release(pb::GetReleaseRequest {
            workspace: "w".into(),
        })
        .await
        .expect("get release")
        .into_inner();
    let bytes = prost::Message::encoded_len(&release);
    assert!(bytes > 4 * 1024 * 1024, "the release is {bytes} bytes");

    // A follower takes it before it would take any partition.
    let engine = CurrentEngine::new(Arc::new(Engine::new(Vec::new())));
    let (_stop_follower, stop_rx) = watch::channel(false);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy();
    let _follower = tokio::time::timeout(
        Duration::from_secs(30),
        follow_service(channel, "w", engine.clone(), stop_rx),
    )
    .await
    .expect("the follower took the release")
    .expect("follow");
    assert_eq!(newest(&engine), 120);

    // A further version reaches it through the release stream; wait by condition.
    apply(&mut c, files(121..=121)).await;
    let followed = tokio::time::timeout(Duration::from_secs(30), async {
        while newest(&engine) != 121 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(followed.is_ok(), "the follower never took version 121");
}

#[tokio::test]
async fn a_publication_past_the_release_limit_is_refused_with_sizes() {
    let redis = RedisServer::start().expect("redis");
    let limit = 1024 * 1024;
    let (addr, _stop) = serve(&redis, limit).await;
    let mut c = client(addr).await;

    // 20 versions fit in 1 MiB; 30 more would not.
    let published = apply(&mut c, files(1..=20)).await;
    let status = c
        .apply(pb::ApplyRequest {
            workspace: "w".into(),
            files: files(21..=50),
        })
        .await
        .expect_err("past the limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let message = status.message();
    assert!(
        message.starts_with("release 2 of workspace w is "),
        "{message}"
    );
    assert!(
        message.contains(&format!("above the limit of {limit} bytes")),
        "{message}"
    );

    // Nothing of the refused publication was stored.
    let release = c
        .get_release(pb::GetReleaseRequest {
            workspace: "w".into(),
        })
        .await
        .expect("get release")
        .into_inner();
    assert_eq!(release.number, published.release);
    assert_eq!(release.documents.len(), 20);
}

#[tokio::test]
async fn a_stored_release_past_the_limit_is_refused_by_name_not_cut_off() {
    let redis = RedisServer::start().expect("redis");

    // Published under the full limit, then served by a replica with a lower one.
    let (wide, _stop_wide) = serve(&redis, MAX_RELEASE_BYTES).await;
    apply(&mut client(wide).await, files(1..=40)).await;
    let (narrow, _stop_narrow) = serve(&redis, 1024 * 1024).await;

    let status = client(narrow)
        .await
        .get_release(pb::GetReleaseRequest {
            workspace: "w".into(),
        })
        .await
        .expect_err("too large to send");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().starts_with("release 1 of workspace w is "),
        "{}",
        status.message()
    );
}
