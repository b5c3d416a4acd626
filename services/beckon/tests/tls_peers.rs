//! gRPC between services over TLS: a scheduler serving with a certificate from a private
//! authority made for this test, and a user-state instance reaching it through an `https://`
//! URL that trusts that authority. A timer set by the journey arrives over the TLS
//! connection; a plaintext client gets nothing from the TLS port.

mod support;

use std::path::{Path, PathBuf};

use beckon_proto::v1::PendingRequest;
use beckon_proto::v1::TrackRequest;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::scheduler_client::SchedulerClient;
use beckon_testkit::RedisServer;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::json;
use support::{Served, eventually_async, track, wall_clock_ms};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

const JOURNEY: &str = "\
id: nudge
version: 1
workspace: default
entry:
  event: Signed Up
steps:
  - id: wait
    delay: 1h
  - id: nudge-push
    message:
      channel: push
      title: Still there?
      body: Come back
";

/// Files of an authority and of a server certificate it signed for `localhost`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("ca key");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca certificate");

    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = params.signed_by(&key, &ca).expect("server certificate");

    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&pki.ca, ca.pem()).expect("write ca");
    std::fs::write(&pki.cert, cert.pem()).expect("write cert");
    std::fs::write(&pki.key, key.serialize_pem()).expect("write key");
    pki
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_state_sets_timers_through_a_tls_scheduler() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    let journeys = dir.path().join("journeys");
    std::fs::create_dir_all(&journeys).expect("mkdir");
    std::fs::write(journeys.join("nudge.yaml"), JOURNEY).expect("write journey");

    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let common = ["--redis-url", url.as_str(), "--partitions", "2"];
    let mut tls_args = common.to_vec();
    tls_args.extend(["--tls-cert", path(&pki.cert), "--tls-key", path(&pki.key)]);
    let scheduler = Served::start("scheduler", &tls_args);
    let port = scheduler.addr.rsplit(':').next().unwrap_or_default();
    let scheduler_url = format!("https://localhost:{port}");

    let ingest = Served::start("ingest", &common);
    let mut user_state_args = common.to_vec();
    user_state_args.extend([
        "--scheduler-url",
        scheduler_url.as_str(),
        "--tls-ca",
        path(&pki.ca),
        "--journeys",
        path(&journeys),
    ]);
    let _user_state = Served::start("user-state", &user_state_args);

    let mut client = IngestClient::connect(ingest.url()).await.expect("ingest");
    let event = track("ann", "Signed Up", "s-1", wall_clock_ms(), json!({}));
    client
        .track(TrackRequest {
            workspace: "default".into(),
            event: Some(event),
        })
        .await
        .expect("accepted");

    // The test reaches the scheduler the way user-state does: TLS, trusting the authority.
    let ca = std::fs::read(&pki.ca).expect("read ca");
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    let channel = Endpoint::from_shared(scheduler_url.clone())
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("TLS connection to the scheduler");
    let mut scheduler_client = SchedulerClient::new(channel);
    let pending = PendingRequest {
        workspace: "default".into(),
        partitions: Vec::new(),
    };
    let timer_set = eventually_async(400, async || {
        scheduler_client
            .pending(pending.clone())
            .await
            .is_ok_and(|r| r.into_inner().pending == 1)
    })
    .await;
    assert!(
        timer_set,
        "the journey's delay reached the scheduler over TLS"
    );

    // Plaintext to the TLS port is not answered.
    let plain = SchedulerClient::connect(format!("http://{}", scheduler.addr)).await;
    let answered = match plain {
        Ok(mut c) => c.pending(pending.clone()).await.is_ok(),
        Err(_) => false,
    };
    assert!(!answered, "a plaintext call to the TLS port got an answer");
}

#[test]
fn tls_settings_are_refused_by_name_when_incomplete_or_unreadable() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_beckon"))
            .args(["serve", "gateway", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .expect("beckon runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stderr) = run(&["--tls-cert", "/nonexistent/server.pem"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("tls_key"), "{stderr}");

    let missing = [
        "--tls-cert",
        "/nonexistent/server.pem",
        "--tls-key",
        "/nonexistent/k",
    ];
    let (code, stderr) = run(&missing);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--tls-cert: reading /nonexistent/server.pem"),
        "{stderr}"
    );

    let (code, stderr) = run(&["--ingest-url", "ftp://127.0.0.1:1"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--ingest-url"), "{stderr}");
    assert!(stderr.contains("http or https"), "{stderr}");
}
