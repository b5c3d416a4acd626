//! Decision to stream: how long after an event arrives does the in-app message its journey
//! decided reach an app subscribed (`SubscribeInbox`) on another gateway process. Prints
//! figures; asserts nothing.
//!
//! A redis-server of its own; scheduler, ingest, user-state and two gateways as `beckon
//! serve` processes. The user-state sends through one gateway; the app holds its stream on the
//! other, so every message crosses Redis pub/sub. Each round stamps an event with the wall
//! clock, sends it, and waits for the message on the stream. Two figures per round:
//!
//! - event to stream: from the event's time (taken just before `Track`) to the message on the
//!   stream: ingest, the log, the actor's decision, the send, the inbox insert, pub/sub;
//! - insert to stream: from the inbox insert (the message's `created`) to the stream.
//!
//! Run with `cargo bench -p beckon --bench inbox_stream`.

#![allow(clippy::print_stdout, reason = "a bench prints its figures")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;
use beckon_proto::convert::{json_to_struct, millis_to_timestamp, timestamp_to_millis};
use beckon_proto::v1::gateway_client::GatewayClient;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::{Event, ListInboxRequest, TrackRequest};
use beckon_testkit::RedisServer;

const ROUNDS: usize = 300;
const WARM_UP: usize = 20;

const JOURNEY: &str = r#"
id: shipped
version: 1
workspace: default
entry:
  event: Order Shipped
  reentry: after_exit
steps:
  - id: notice
    message:
      channel: in_app
      title: On its way
      body: "Order {{ entry.order_id }} has shipped"
      transactional: true
"#;

/// A `beckon serve` process, killed when dropped.
struct Proc(Child, String);

impl Proc {
    fn start(service: &str, args: &[&str]) -> anyhow::Result<Proc> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_beckon"))
            .args(["serve", service, "--listen", "127.0.0.1:0"])
            .args(args)
            .env("BECKON_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start beckon serve")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            if lines.read_line(&mut line)? == 0 {
                anyhow::bail!("beckon serve {service} exited before listening");
            }
            if let Some(addr) = line.trim().strip_prefix("listening ") {
                return Ok(Proc(child, format!("http://{addr}")));
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "a bench stamps events with the wall clock"
)]
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn shipped(n: usize, at_ms: i64) -> Event {
    let props = serde_json::json!({ "order_id": format!("A-{n}") });
    Event {
        r#type: "track".into(),
        message_id: format!("bench-{n}"),
        user_id: "ada".into(),
        event: "Order Shipped".into(),
        properties: props.as_object().map(json_to_struct),
        timestamp: Some(millis_to_timestamp(at_ms)),
        ..Event::default()
    }
}

fn percentiles(name: &str, mut ms: Vec<i64>) {
    ms.sort_unstable();
    let at = |p: usize| ms.get((ms.len() * p / 100).min(ms.len().saturating_sub(1)));
    let show = |v: Option<&i64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
    println!(
        "{name:<18} p50 {:>6}  p90 {:>6}  p99 {:>6}  max {:>6}  ({} rounds)",
        show(at(50)),
        show(at(90)),
        show(at(99)),
        show(ms.last()),
        ms.len()
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = RedisServer::start_own(Default::default())?;
    let url = redis.url();
    let dir = tempfile::tempdir()?;
    let journeys = dir.path().join("journeys");
    std::fs::create_dir_all(&journeys)?;
    std::fs::write(journeys.join("shipped.yaml"), JOURNEY)?;
    let providers = dir.path().join("providers.yaml");
    std::fs::write(&providers, "channels: { in_app: inbox }\n")?;
    let providers = providers.to_str().unwrap_or_default();
    let journeys = journeys.to_str().unwrap_or_default();

    let common = ["--redis-url", url.as_str(), "--partitions", "4"];
    let scheduler = Proc::start("scheduler", &common)?;
    let ingest = Proc::start("ingest", &common)?;
    let gateway_args = [common.as_slice(), &["--providers", providers]].concat();
    let sending = Proc::start("gateway", &gateway_args)?;
    let serving_app = Proc::start("gateway", &gateway_args)?;
    let user_state_args = [
        common.as_slice(),
        &["--scheduler-url", &scheduler.1, "--gateway-url", &sending.1],
        &["--journeys", journeys],
    ]
    .concat();
    let _user_state = Proc::start("user-state", &user_state_args)?;

    let mut app = GatewayClient::connect(serving_app.1.clone()).await?;
    let request = ListInboxRequest {
        workspace: "default".into(),
        user_id: "ada".into(),
    };
    let mut stream = app.subscribe_inbox(request).await?.into_inner();
    let mut events = IngestClient::connect(ingest.1.clone()).await?;

    let (mut end_to_end, mut fan_out) = (Vec::new(), Vec::new());
    for n in 0..WARM_UP + ROUNDS {
        let at = wall_ms();
        let request = TrackRequest {
            workspace: "default".into(),
            event: Some(shipped(n, at)),
        };
        events.track(request).await?;
        let message = stream.message().await?.context("stream ended")?;
        let received = wall_ms();
        let created = message
            .created
            .as_ref()
            .map_or(received, timestamp_to_millis);
        if n >= WARM_UP {
            end_to_end.push(received - at);
            fan_out.push(received - created);
        }
    }

    println!("inbox stream, separate processes on one redis-server, one user, in sequence:");
    percentiles("event to stream", end_to_end);
    percentiles("insert to stream", fan_out);
    Ok(())
}
