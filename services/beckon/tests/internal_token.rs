//! The calls only Beckon's services may make (`Ingest.AppendOutcome`, `Gateway.Send`, the
//! Scheduler service) ask for the deployment's internal token once one is set, on Redis of the
//! test's own: five processes sharing a token set a timer, send the message when it fires,
//! and hand the gateway's outcome report to ingest, while a client calling those same ports
//! without the token, or with another one, is refused and the public calls go on as before.
//! In `serve all` the services reach each other within the process and need no token, but
//! its port asks for it like the others.

mod support;

use std::path::Path;
use std::process::Command;

use beckon_proto::convert::millis_to_timestamp;
use beckon_proto::internal::HEADER;
use beckon_proto::v1::gateway_client::GatewayClient;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::scheduler_client::SchedulerClient;
use beckon_proto::v1::user_state_client::UserStateClient;
use beckon_proto::v1::{
    AppendOutcomeRequest, GetUserRequest, OutboundMessage, OutcomeRequest, SendRequest,
    SetTimersRequest, Timer, TrackRequest,
};
use beckon_testkit::RedisServer;
use serde_json::{Value, json};
use support::{
    Served, eventually, eventually_async, identify_with_email, recorded, track, wall_clock_ms,
};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

const TOKEN: &str = "s3cret-internal-token-0123456789";

/// A timer first, so user-state calls the scheduler, then the message, so it calls the
/// gateway.
const JOURNEY: &str = "
id: news
version: 1
workspace: default
entry:
  event: Ping
steps:
  - id: pause
    delay: 1s
  - id: mail
    message:
      channel: email
      subject: News
      body: '<p>News</p>'
";

/// How a test call presents itself: no token, a wrong one, or the right one.
#[derive(Clone, Copy, Debug)]
enum Presents {
    Nothing,
    Wrong,
    Right,
}

fn request<T>(message: T, presents: Presents) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let token = match presents {
        Presents::Nothing => return request,
        Presents::Wrong => "not-the-token-but-long-enough",
        Presents::Right => TOKEN,
    };
    request
        .metadata_mut()
        .insert(HEADER, MetadataValue::try_from(token).expect("ascii"));
    request
}

/// The refusal a call got, or `Ok` when it got past the token check. A call that passes may
/// still be refused for what it asks; only the token's two codes count as refusals here.
fn past_the_check<T>(answer: Result<T, tonic::Status>) -> Result<(), tonic::Status> {
    match answer {
        Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) => Err(s),
        _ => Ok(()),
    }
}

/// Each internal call on `ingest`, `gateway` and `scheduler` as `presents` makes it.
async fn internal_calls(
    ingest: &str,
    gateway: &str,
    scheduler: &str,
    presents: Presents,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let mut ingest = IngestClient::connect(ingest.to_string())
        .await
        .expect("ingest");
    let mut gateway = GatewayClient::connect(gateway.to_string())
        .await
        .expect("gateway");
    let mut scheduler = SchedulerClient::connect(scheduler.to_string())
        .await
        .expect("scheduler");
    let outcome = track(
        "forger",
        "Message Opened",
        "forged",
        wall_clock_ms(),
        json!({"idempotency_key": "default:forger:news:1:mail:1", "channel": "email"}),
    );
    let append = ingest
        .append_outcome(request(
            AppendOutcomeRequest {
                workspace: "default".into(),
                event: Some(outcome),
            },
            presents,
        ))
        .await;
    let send = gateway
        .send(request(
            SendRequest {
                workspace: "default".into(),
                message: Some(OutboundMessage {
                    idempotency_key: "default:forger:news:1:mail:9".into(),
                    user_id: "forger".into(),
                    channel: "email".into(),
                    journey: "news".into(),
                    step: "mail".into(),
                    body: "hello".into(),
                    ..OutboundMessage::default()
                }),
            },
            presents,
        ))
        .await;
    let set_timers = scheduler
        .set_timers(request(
            SetTimersRequest {
                workspace: "default".into(),
                timers: vec![Timer {
                    id: "forged-timer".into(),
                    user_id: "forger".into(),
                    due: Some(millis_to_timestamp(wall_clock_ms() + 3_600_000)),
                    ..Timer::default()
                }],
            },
            presents,
        ))
        .await;
    vec![
        ("AppendOutcome", past_the_check(append)),
        ("Send", past_the_check(send)),
        ("SetTimers", past_the_check(set_timers)),
    ]
}

/// The internal calls are refused without the token and with a wrong one, each with its
/// code, and taken with the right one.
async fn only_the_token_passes(ingest: &str, gateway: &str, scheduler: &str) {
    for (call, answer) in internal_calls(ingest, gateway, scheduler, Presents::Nothing).await {
        let status = answer.expect_err(call);
        assert_eq!(status.code(), Code::Unauthenticated, "{call}: {status:?}");
        assert!(status.message().contains(HEADER), "{call}: {status:?}");
    }
    for (call, answer) in internal_calls(ingest, gateway, scheduler, Presents::Wrong).await {
        let status = answer.expect_err(call);
        assert_eq!(status.code(), Code::PermissionDenied, "{call}: {status:?}");
        assert!(!status.message().contains(TOKEN), "{call}: {status:?}");
    }
    for (call, answer) in internal_calls(ingest, gateway, scheduler, Presents::Right).await {
        assert!(answer.is_ok(), "{call}: {answer:?}");
    }
}

/// The public `Track` needs no token.
async fn track_is_public(ingest: &mut IngestClient<Channel>) {
    let event = track("anyone", "Browsed", "b-1", wall_clock_ms(), json!({}));
    ingest
        .track(TrackRequest {
            workspace: "default".into(),
            event: Some(event),
        })
        .await
        .expect("Track takes a call without the token");
}

/// How many `name` events the user's state counts, once it counts at least one.
async fn counted(users: &mut UserStateClient<Channel>, user: &str, name: &str) -> u64 {
    let mut count = 0;
    eventually_async(300, async || {
        let request = GetUserRequest {
            workspace: "default".into(),
            user_id: user.into(),
        };
        if let Ok(view) = users.get_user(request).await {
            let state: Value =
                serde_json::from_str(&view.into_inner().state_json).unwrap_or_default();
            count = state["events"][name]["count"].as_u64().unwrap_or(0);
        }
        count > 0
    })
    .await;
    count
}

fn token_file(dir: &Path, text: &[u8]) -> String {
    let path = dir.join("internal-token");
    std::fs::write(&path, text).expect("write token");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_processes_with_a_token_work_together_and_refuse_everyone_else() {
    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let journeys = dir.path().join("journeys");
    std::fs::create_dir_all(&journeys).expect("mkdir");
    std::fs::write(journeys.join("news.yaml"), JOURNEY).expect("write journey");
    let journeys = journeys.display().to_string();
    let out = dir.path().join("messages.jsonl");
    let out_arg = out.display().to_string();
    // A final line break, as most ways of writing a secret file leave one.
    let token = token_file(dir.path(), format!("{TOKEN}\n").as_bytes());
    let url = redis.url();
    let common = [
        "--redis-url",
        url.as_str(),
        "--partitions",
        "4",
        "--internal-token-file",
        token.as_str(),
    ];
    let start = |name: &str, extra: &[&str]| {
        let args = [&common[..], extra].concat();
        let log = dir.path().join(format!("{name}.log"));
        Served::start_with(name, &args, &[], Some(&log))
    };

    let journey = start("journey", &["--journeys", &journeys]);
    let ingest = start("ingest", &[]);
    let scheduler = start("scheduler", &[]);
    let ingest_url = ingest.url();
    let gateway = start(
        "gateway",
        &["--ingest-url", &ingest_url, "--messages-out", &out_arg],
    );
    let (scheduler_url, gateway_url, journey_url) = (scheduler.url(), gateway.url(), journey.url());
    let user_state = start(
        "user-state",
        &[
            "--scheduler-url",
            &scheduler_url,
            "--gateway-url",
            &gateway_url,
            "--journeys-url",
            &journey_url,
        ],
    );

    let mut ingest_client = IngestClient::connect(ingest.url()).await.expect("ingest");
    let mut users = UserStateClient::connect(user_state.url())
        .await
        .expect("users");
    let user = "with-token";
    identify_with_email(&mut ingest_client, user).await;
    let ping = track(user, "Ping", "p-1", wall_clock_ms(), json!({}));
    ingest_client
        .track(TrackRequest {
            workspace: "default".into(),
            event: Some(ping),
        })
        .await
        .expect("track");

    // The message waited on a timer set with the scheduler, then went through the gateway:
    // both calls of user-state carried the token.
    let sent = eventually(600, || !recorded(&out).is_empty()).await;
    assert!(
        sent,
        "no message went out; see the logs in {}",
        dir.path().display()
    );
    let message = recorded(&out).remove(0);
    assert_eq!(message["user_id"], user, "{message}");
    let key = message["idempotency_key"]
        .as_str()
        .expect("a key")
        .to_string();

    // The gateway answers a report only once ingest took it on `AppendOutcome`, with the token.
    let mut gateway_client = GatewayClient::connect(gateway.url())
        .await
        .expect("gateway");
    gateway_client
        .report_outcome(OutcomeRequest {
            workspace: "default".into(),
            user_id: user.into(),
            message_key: key,
            outcome: "opened".into(),
            channel: "email".into(),
            at: Some(millis_to_timestamp(wall_clock_ms())),
            ..OutcomeRequest::default()
        })
        .await
        .expect("the report reached ingest");
    assert_eq!(counted(&mut users, user, "Message Opened").await, 1);

    only_the_token_passes(&ingest.url(), &gateway.url(), &scheduler.url()).await;
    track_is_public(&mut ingest_client).await;

    // A process with the token says nothing about open calls.
    for name in ["ingest", "gateway", "scheduler"] {
        let log =
            std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default();
        assert!(!log.contains("is open to any client"), "{name}: {log}");
    }
}

#[tokio::test]
async fn in_one_process_the_services_need_no_token_but_its_port_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journeys = dir.path().join("journeys");
    std::fs::create_dir_all(&journeys).expect("mkdir");
    std::fs::write(journeys.join("news.yaml"), JOURNEY).expect("write journey");
    let out = dir.path().join("messages.jsonl");
    let token = token_file(dir.path(), TOKEN.as_bytes());
    let served = Served::start(
        "all",
        &[
            "--journeys",
            &journeys.display().to_string(),
            "--messages-out",
            &out.display().to_string(),
            "--internal-token-file",
            &token,
        ],
    );
    let mut ingest = IngestClient::connect(served.url()).await.expect("ingest");
    identify_with_email(&mut ingest, "in-process").await;
    let ping = track("in-process", "Ping", "p-1", wall_clock_ms(), json!({}));
    ingest
        .track(TrackRequest {
            workspace: "default".into(),
            event: Some(ping),
        })
        .await
        .expect("track");
    let sent = eventually(600, || !recorded(&out).is_empty()).await;
    assert!(
        sent,
        "the timer and the send within the process need no token"
    );

    only_the_token_passes(&served.url(), &served.url(), &served.url()).await;
    track_is_public(&mut ingest).await;
}

#[tokio::test]
async fn without_a_token_the_calls_stay_open_and_each_process_serving_one_says_so() {
    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = redis.url();
    let common = ["--redis-url", url.as_str(), "--partitions", "4"];
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let ingest = Served::start_with("ingest", &common, &[], Some(&log("ingest")));
    let gateway = Served::start_with("gateway", &common, &[], Some(&log("gateway")));
    let scheduler = Served::start_with("scheduler", &common, &[], Some(&log("scheduler")));

    let answers = internal_calls(
        &ingest.url(),
        &gateway.url(),
        &scheduler.url(),
        Presents::Nothing,
    )
    .await;
    for (call, answer) in answers {
        assert!(answer.is_ok(), "{call}: {answer:?}");
    }
    for name in ["ingest", "gateway", "scheduler"] {
        let text = std::fs::read_to_string(log(name)).unwrap_or_default();
        let warnings = text
            .lines()
            .filter(|l| l.contains("is open to any client that reaches this port"))
            .count();
        assert_eq!(warnings, 1, "{name}: {text}");
        assert!(text.contains("--internal-token-file"), "{name}: {text}");
    }
}

/// `beckon serve ingest --print-config` with these arguments and environment: exit code,
/// stdout and stderr.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_beckon"))
        .args(["serve", "ingest", "--print-config", "--redis-url"])
        .arg("redis://127.0.0.1:1")
        .args(args)
        .env_remove("BECKON_INTERNAL_TOKEN_FILE")
        .envs(env.iter().copied())
        .output()
        .expect("beckon runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unusable_token_file_is_refused_naming_the_setting_and_a_good_one_is_not_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let empty = write("empty", b"");
    let only_a_line_break = write("line-break", b"\n");
    let short = write("short", b"fifteen-chars-x\n");
    let control = write("control", b"0123456789abcdef\x07rest");
    let spaced = write("spaced", b"0123456789 abcdef");
    let missing = dir.path().join("missing").display().to_string();
    let cases: [(&str, &str); 6] = [
        (&empty, "the token is empty"),
        (&only_a_line_break, "the token is empty"),
        (&short, "the token has 15 bytes; it needs at least 16"),
        (
            &control,
            "byte 16 of the token is not a visible ASCII character",
        ),
        (
            &spaced,
            "byte 10 of the token is not a visible ASCII character",
        ),
        (&missing, "reading"),
    ];
    for (path, reason) in cases {
        let (code, _, stderr) = print_config(&["--internal-token-file", path], &[]);
        let case = format!("{path}: {stderr}");
        assert_ne!(code, Some(0), "{case}");
        assert!(stderr.contains("--internal-token-file"), "{case}");
        assert!(stderr.contains(path), "{case}");
        assert!(stderr.contains(reason), "{case}");
    }

    // From the environment, the variable is named; from the config file, its key and place.
    let (code, _, stderr) = print_config(&[], &[("BECKON_INTERNAL_TOKEN_FILE", &short)]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("BECKON_INTERNAL_TOKEN_FILE"), "{stderr}");
    let config = write(
        "beckon.yaml",
        format!("internal_token_file: {short}\n").as_bytes(),
    );
    let (code, _, stderr) = print_config(&["--config", &config], &[]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("internal_token_file: ") && stderr.contains("at line 1 column"),
        "{stderr}"
    );

    // A good token starts, and the printed configuration names its file, never the token.
    let good = write("good", format!("{TOKEN}\n").as_bytes());
    let (code, stdout, stderr) = print_config(&["--internal-token-file", &good], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!("internal_token_file: {good}")),
        "{stdout}"
    );
    assert!(
        !stdout.contains(TOKEN) && !stderr.contains(TOKEN),
        "{stdout}{stderr}"
    );
}
