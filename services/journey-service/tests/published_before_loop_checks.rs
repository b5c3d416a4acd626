//! A journey published by an earlier version, before loops were checked, whose loop the checks
//! now refuse: on real Redis, over real gRPC, a follower still builds the release with it (and
//! logs why the checks would refuse it), the service still lists it and takes new versions
//! beside it, publishing it again unchanged is not an error, and a new version with the same
//! loop is refused.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use beckon_core::{DecisionKind, Effect, Trigger, Ts, UserState};
use beckon_journey::sim::track;
use beckon_journey::{CurrentEngine, Engine};
use beckon_journey_service::{DefinitionStore, Document, JourneysService, follow_service};
use beckon_proto::v1 as pb;
use beckon_proto::v1::journeys_client::JourneysClient;
use beckon_testkit::RedisServer;
use serde_json::json;
use tokio::sync::watch;
use tonic::transport::Channel;

/// A reminder every millisecond, as an earlier version stored it: canonical JSON, keys sorted.
const STORED: &str = concat!(
    r#"{"entry":{"event":"Product Added"},"id":"nag","steps":["#,
    r#"{"id":"remind","message":{"body":"still there?","channel":"push"}},"#,
    r#"{"delay":"1ms","id":"pause","next":"remind"}],"version":1,"workspace":"w"}"#,
);

/// The same journey as its author wrote it.
fn nag(version: u32) -> String {
    format!(
        "id: nag\nversion: {version}\nworkspace: w\nentry:\n  event: Product Added\nsteps:\n  \
         - id: remind\n    message:\n      channel: push\n      body: still there?\n  \
         - id: pause\n    delay: 1ms\n    next: remind\n"
    )
}

const WELCOME: &str = "id: welcome\nversion: 1\nworkspace: w\nentry:\n  event: Signed Up\n\
    steps:\n  - id: hello\n    message:\n      channel: email\n      subject: Hi\n      \
    body: Hello\n";

fn file(name: &str, yaml: &str) -> pb::SpecFile {
    pb::SpecFile {
        name: name.into(),
        yaml: yaml.into(),
    }
}

/// Log lines written while a test runs, as the services' plain-text logs have them.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_journey_published_before_loops_were_checked_still_loads_and_runs_paced() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test's runtime has one thread: the service and the follower log through this too.
    let _logging = tracing::subscriber::set_default(subscriber);

    let redis = RedisServer::start().expect("redis");
    let (store, _) = support::redis_store(&redis).await;

    // What an earlier version published: stored as it is, with no loop checks.
    let old = Document {
        kind: "journey",
        id: "nag".into(),
        version: 1,
        canonical: STORED.into(),
    };
    let first = store.publish("w", &[old]).await.expect("stored");
    assert_eq!(first.release, 1);

    let (stop_tx, stop_rx) = watch::channel(false);
    let addr = support::serve_until(JourneysService::new(store), stop_rx.clone()).await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");

    // A starting user-state instance builds the release, with the journey in it.
    let engine = CurrentEngine::new(Arc::new(Engine::new(Vec::new())));
    let following = follow_service(channel.clone(), "w", engine.clone(), stop_rx)
        .await
        .expect("follows");
    let ids: Vec<(String, u32)> = engine
        .get()
        .journeys()
        .iter()
        .map(|j| (j.id.clone(), j.version))
        .collect();
    assert_eq!(ids, vec![("nag".to_string(), 1)]);
    let logged = logs.text();
    let warned = logged
        .lines()
        .find(|l| l.contains("WARN") && l.contains("loop the checks now refuse"))
        .unwrap_or_else(|| panic!("no warning: {logged}"));
    assert!(warned.contains("journey=nag"), "{warned}");
    assert!(warned.contains("version=1"), "{warned}");
    assert!(
        warned.contains("loop after waiting only 1ms"),
        "the lint's reason: {warned}"
    );

    // The service lists it, and takes a new journey beside it.
    let mut c = JourneysClient::new(channel);
    let listed = c
        .list_journeys(pb::ListJourneysRequest {
            workspace: "w".into(),
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.journeys.iter().any(|j| j.id == "nag"), "{listed:?}");
    let r = c
        .apply(pb::ApplyRequest {
            workspace: "w".into(),
            files: vec![file("welcome.yaml", WELCOME)],
        })
        .await
        .expect("a new journey is published beside the old one")
        .into_inner();
    assert_eq!(r.release, 2);

    // The folder it came from, published again unchanged (as a start with `--journeys`
    // does), is not refused and adds nothing.
    let r = c
        .apply(pb::ApplyRequest {
            workspace: "w".into(),
            files: vec![file("nag.yaml", &nag(1)), file("welcome.yaml", WELCOME)],
        })
        .await
        .expect("published again unchanged")
        .into_inner();
    assert_eq!(r.release, 2);
    assert!(r.published.is_empty(), "{:?}", r.published);

    // A new version with the same loop is refused, with the lint's words and place.
    let status = c
        .apply(pb::ApplyRequest {
            workspace: "w".into(),
            files: vec![file("nag.yaml", &nag(2))],
        })
        .await
        .expect_err("a new loop is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let message = status.message();
    assert!(message.contains("nag.yaml:7:9: steps[0]: "), "{message}");
    assert!(message.contains("loop after waiting only 1ms"), "{message}");
    let r = c
        .lint(pb::LintRequest {
            workspace: "w".into(),
            files: vec![file("nag.yaml", &nag(2))],
        })
        .await
        .expect("lint")
        .into_inner();
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);

    // The follower took release 2, and evaluates the old journey without spinning: the
    // reminder's next round is held a minute, not a millisecond.
    let mut heard = false;
    for _ in 0..200 {
        if engine.get().journeys().len() == 2 {
            heard = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(heard, "release 2 reached the follower");
    let engine = engine.get();
    let t0 = Ts::parse_rfc3339("2026-06-01T10:00:00Z").expect("time");
    let mut state = UserState::new("w", "u");
    let added = track("u", "Product Added", t0, json!({}));
    let effects = engine.apply(&mut state, &Trigger::Event(added));
    let timer = effects.iter().find_map(|e| match e {
        Effect::SetTimer(t) => Some(t.clone()),
        _ => None,
    });
    let timer = timer.expect("the delay sets a timer");
    assert_eq!(timer.due, Ts(t0.0 + 1));
    let effects = engine.apply(&mut state, &Trigger::Timer(timer));
    let held = effects.iter().find_map(|e| match e {
        Effect::SetTimer(t) => Some(t.due),
        _ => None,
    });
    assert_eq!(held, Some(Ts(t0.0 + 1 + 60_000)));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Send(_))));
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Record(d) if d.kind == DecisionKind::Step && d.reason.starts_with("held until")
    )));

    let _ = stop_tx.send(true);
    let _ = following.await;
}
