//! The journey service on real Redis, over real gRPC: lint with positions, publish only what
//! is new, refuse a changed version, list versions, and releases reaching followers in another
//! "process" (a second service on the same Redis) through pub/sub.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use beckon_journey::{CurrentEngine, Engine};
use beckon_journey_service::{JourneysService, follow_service};
use beckon_proto::v1 as pb;
use beckon_proto::v1::journeys_client::JourneysClient;
use beckon_testkit::RedisServer;
use futures::StreamExt as _;
use tokio::sync::watch;
use tonic::transport::Channel;

fn journey(version: u32, subject: &str) -> String {
    format!(
        "id: welcome\nversion: {version}\nworkspace: w\nentry:\n  event: Signed Up\nsteps:\n  \
         - id: hello\n    message:\n      channel: email\n      subject: {subject}\n      \
         body: Hello\n"
    )
}

const SEGMENT: &str = "kind: segment\nid: buyers\nversion: 1\nworkspace: w\ncondition:\n  \
    did:\n    event: Order Completed\n    within: 30d\n    at_least: 1\n";

const USES_SEGMENT: &str = "id: vip\nversion: 1\nworkspace: w\nentry:\n  segment: buyers\n\
    steps:\n  - id: thanks\n    message:\n      channel: email\n      subject: Thanks\n      \
    body: Thanks\n";

fn file(name: &str, yaml: &str) -> pb::SpecFile {
    pb::SpecFile {
        name: name.into(),
        yaml: yaml.into(),
    }
}

/// Serves the journey service on a free loopback port, following announcements on Redis.
async fn serve(redis: &RedisServer) -> (SocketAddr, watch::Sender<bool>) {
    let (store, client) = support::redis_store(redis).await;
    let (stop_tx, stop_rx) = watch::channel(false);

    let listening = store.clone();
    let mut stop = stop_rx.clone();
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        listening.listen(client, vec!["w".into()], stopped).await;
    });

    let addr = support::serve_until(JourneysService::new(store), stop_rx).await;
    (addr, stop_tx)
}

async fn client(addr: SocketAddr) -> JourneysClient<Channel> {
    JourneysClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

#[tokio::test]
async fn lint_reports_positions_and_refers_to_published_segments() {
    let redis = RedisServer::start().expect("redis");
    let (addr, _stop) = serve(&redis).await;
    let mut c = client(addr).await;

    // A journey using a segment nobody published: the file, line and field are named.
    let r = c
        .lint(pb::LintRequest {
            workspace: "w".into(),
            files: vec![file("vip.yaml", USES_SEGMENT)],
        })
        .await
        .expect("lint")
        .into_inner();
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_eq!(r.errors[0].file, "vip.yaml");
    assert_eq!(r.errors[0].field, "segment");
    assert_eq!(r.errors[0].line, 5);

    // Once the segment is published, the same journey checks on its own.
    c.apply(pb::ApplyRequest {
        workspace: "w".into(),
        files: vec![file("buyers.yaml", SEGMENT)],
    })
    .await
    .expect("apply segment");
    let r = c
        .lint(pb::LintRequest {
            workspace: "w".into(),
            files: vec![file("vip.yaml", USES_SEGMENT)],
        })
        .await
        .expect("lint")
        .into_inner();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.journeys, 1);

    // Bad YAML: a line and column, not a panic.
    let r = c
        .lint(pb::LintRequest {
            workspace: "w".into(),
            files: vec![file("bad.yaml", "id: x\nversion: [\n")],
        })
        .await
        .expect("lint")
        .into_inner();
    assert_eq!(r.errors[0].file, "bad.yaml");
    assert!(r.errors[0].line >= 2, "{:?}", r.errors[0]);

    // Requests without a workspace or files name the field.
    let status = c
        .lint(pb::LintRequest {
            workspace: String::new(),
            files: vec![file("a.yaml", SEGMENT)],
        })
        .await
        .expect_err("no workspace");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("workspace:"),
        "{}",
        status.message()
    );
    let status = c
        .apply(pb::ApplyRequest {
            workspace: "w".into(),
            files: Vec::new(),
        })
        .await
        .expect_err("no files");
    assert!(
        status.message().starts_with("files:"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn published_versions_are_immutable_and_listed() {
    let redis = RedisServer::start().expect("redis");
    let (addr, _stop) = serve(&redis).await;
    let mut c = client(addr).await;

    let r = c
        .apply(pb::ApplyRequest {
            workspace: "w".into(),
            files: vec![file("welcome.yaml", &journey(1, "Hi"))],
        })
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(r.release, 1);
    assert_eq!(r.published.len(), 1);

    // The same content again (reformatted) adds nothing and keeps the release.
    let reformatted = format!("# comment\n{}", journey(1, "Hi"));
    let r = c
        .apply(pb::ApplyRequest {
            workspace: "w".into(),
            files: vec![file("welcome.yaml", &reformatted)],
        })
        .await
        .expect("apply again")
        .into_inner();
    assert_eq!(r.release, 1);
    assert!(r.published.is_empty());

    // Version 1 with another subject is refused and changes nothing.
    let status = c
        .apply(pb::ApplyRequest {
            workspace: "w".into(),
            files: vec![file("welcome.yaml", &journey(1, "Changed"))],
        })
        .await
        .expect_err("changed version");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("welcome version 1"),
        "{}",
        status.message()
    );

    // Version 2 is published beside version 1, which stays for users inside it.
    let r = c
        .apply(pb::ApplyRequest {
            workspace: "w".into(),
            files: vec![file("welcome.yaml", &journey(2, "Changed"))],
        })
        .await
        .expect("apply v2")
        .into_inner();
    assert_eq!(r.release, 2);
    let list = c
        .list_journeys(pb::ListJourneysRequest {
            workspace: "w".into(),
        })
        .await
        .expect("list")
        .into_inner();
    let listed: Vec<(u32, &str)> = list
        .journeys
        .iter()
        .map(|j| (j.version, j.status.as_str()))
        .collect();
    assert_eq!(listed, vec![(1, "superseded"), (2, "active")]);

    // What Redis holds is exactly the two documents and the counter, and reads back the same.
    let release = c
        .get_release(pb::GetReleaseRequest {
            workspace: "w".into(),
        })
        .await
        .expect("release")
        .into_inner();
    assert_eq!(release.number, 2);
    let names: Vec<&str> = release.documents.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["journey/welcome@1", "journey/welcome@2"]);
    assert!(release.documents[0].yaml.contains("\"subject\":\"Hi\""));
}

/// One event would send this journey's push over and over at the same instant.
const SELF_LOOP: &str = "id: selfloop\nversion: 1\nworkspace: w\nentry: {event: X}\nsteps:\n  \
    - id: a\n    message: {channel: push, body: hi}\n    next: a\n";

#[tokio::test]
async fn a_loop_without_waiting_is_refused_on_apply_and_nothing_is_published() {
    let redis = RedisServer::start().expect("redis");
    let (addr, _stop) = serve(&redis).await;
    let mut c = client(addr).await;

    // Beside a good journey in the same request, so the refusal is seen to take it all back.
    let status = c
        .apply(pb::ApplyRequest {
            workspace: "w".into(),
            files: vec![
                file("welcome.yaml", &journey(1, "Hi")),
                file("loop.yaml", SELF_LOOP),
            ],
        })
        .await
        .expect_err("a loop without waiting");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "loop.yaml:8:11: steps[0].next: step `a` goes back to itself without waiting: a loop \
         must pass through a delay, a wait_for or a wait_until"
    );

    let release = c
        .get_release(pb::GetReleaseRequest {
            workspace: "w".into(),
        })
        .await
        .expect("release")
        .into_inner();
    assert_eq!(release.number, 0);
    assert!(release.documents.is_empty(), "{:?}", release.documents);

    // Lint over gRPC reports the same place.
    let r = c
        .lint(pb::LintRequest {
            workspace: "w".into(),
            files: vec![file("loop.yaml", SELF_LOOP)],
        })
        .await
        .expect("lint")
        .into_inner();
    let places: Vec<(&str, u32, u32, &str)> = r
        .errors
        .iter()
        .map(|e| (e.file.as_str(), e.line, e.column, e.field.as_str()))
        .collect();
    assert_eq!(places, vec![("loop.yaml", 8, 11, "steps[0].next")]);
}

#[tokio::test]
async fn a_release_published_anywhere_reaches_every_follower() {
    let redis = RedisServer::start().expect("redis");
    // Two journey services on one Redis, as two replicas would be.
    let (a, _stop_a) = serve(&redis).await;
    let (b, _stop_b) = serve(&redis).await;
    let mut publisher = client(a).await;
    publisher
        .apply(pb::ApplyRequest {
            workspace: "w".into(),
            files: vec![file("welcome.yaml", &journey(1, "Hi"))],
        })
        .await
        .expect("apply v1");

    // An evaluator following replica B has release 1 in force when following starts.
    let engine = CurrentEngine::new(Arc::new(Engine::new(Vec::new())));
    let (_stop_tx, stop_rx) = watch::channel(false);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{b}"))
        .expect("endpoint")
        .connect_lazy();
    let _follower = follow_service(channel, "w", engine.clone(), stop_rx)
        .await
        .expect("follow");
    assert_eq!(engine.get().journeys()[0].version, 1);

    // A watcher on replica B, too.
    let mut watcher = client(b)
        .await
        .watch_releases(pb::GetReleaseRequest {
            workspace: "w".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watcher.next().await.expect("first").expect("release");
    assert_eq!(first.number, 1);

    // Publishing through replica A reaches B's watcher and the evaluator, through Redis.
    publisher
        .apply(pb::ApplyRequest {
            workspace: "w".into(),
            files: vec![file("welcome.yaml", &journey(2, "Hello again"))],
        })
        .await
        .expect("apply v2");
    let next = tokio::time::timeout(Duration::from_secs(10), watcher.next())
        .await
        .expect("a new release arrives")
        .expect("stream open")
        .expect("release");
    assert_eq!(next.number, 2);

    // The follower swaps its engine; wait for the swap by condition, not by time.
    let swapped = tokio::time::timeout(Duration::from_secs(10), async {
        while engine.get().journeys()[0].version != 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(swapped.is_ok(), "the follower never took release 2");
}
