//! Partition takeover after a user-state instance dies: from its SIGKILL to the first event
//! applied by the new owner, for several lease times. Prints figures; asserts nothing.
//!
//! Each round starts a scheduler, an ingest and two user-state instances (`beckon serve`
//! processes) on a redis-server of its own, in a workspace of its own. Once both instances
//! hold partitions, an event for a user of a partition held by the first is applied, the
//! first is killed with SIGKILL, and a second event for that user is sent at once. The round
//! records when the partition's lease key names the survivor, and when the survivor has
//! applied the event.
//!
//! Run with `cargo bench -p beckon --bench takeover`.

#![allow(clippy::print_stdout, reason = "a bench prints its figures")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use beckon_core::partition::partition_of;
use beckon_proto::convert::millis_to_timestamp;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::{Event, TrackRequest};
use beckon_testkit::RedisServer;
use beckon_user_state::StateStore;
use beckon_user_state::redis::RedisStateStore;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

const PARTITIONS: u32 = 4;
const LEASE_TIMES_MS: [u64; 3] = [1_000, 2_000, 4_000];
const ROUNDS: usize = 3;
/// How often the bench looks at the lease and the user's state.
const POLL: Duration = Duration::from_millis(2);

/// A `beckon serve` process, killed when dropped.
struct Proc {
    child: Child,
    addr: String,
}

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
        let addr = loop {
            let mut line = String::new();
            if lines.read_line(&mut line)? == 0 {
                anyhow::bail!("beckon serve {service} exited before listening");
            }
            if let Some(a) = line.trim().strip_prefix("listening ") {
                break a.to_string();
            }
        };
        Ok(Proc { child, addr })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one round measured, in milliseconds after the kill.
struct Sample {
    lease_moved: u128,
    applied: u128,
}

fn event(user: &str, id: &str) -> Event {
    Event {
        r#type: "track".into(),
        message_id: id.into(),
        user_id: user.into(),
        event: "App Opened".into(),
        timestamp: Some(millis_to_timestamp(1_700_000_000_000)),
        ..Event::default()
    }
}

async fn applied(store: &RedisStateStore<ConnectionManager>, ws: &str, user: &str) -> u64 {
    store
        .load(ws, user)
        .await
        .ok()
        .flatten()
        .map_or(0, |s| s.total_events)
}

#[allow(
    clippy::disallowed_methods,
    reason = "the bench measures elapsed wall time between a kill and what follows it"
)]
async fn round(redis: &RedisServer, ttl_ms: u64, n: usize) -> anyhow::Result<Sample> {
    let ws = format!("takeover-{ttl_ms}-{n}");
    let url = redis.url();
    let partitions = PARTITIONS.to_string();
    let ttl = ttl_ms.to_string();
    let common = [
        "--redis-url",
        url.as_str(),
        "--partitions",
        partitions.as_str(),
        "--workspace",
        ws.as_str(),
    ];
    let scheduler = Proc::start("scheduler", &common)?;
    let ingest = Proc::start("ingest", &common)?;
    let sched_url = scheduler.url();
    let journeys = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/journeys");
    let user_state = |name: &str| {
        let mut args = common.to_vec();
        args.extend([
            "--scheduler-url",
            sched_url.as_str(),
            "--journeys",
            journeys,
        ]);
        args.push("--lease-ttl-ms");
        args.extend([ttl.as_str(), "--instance", name]);
        Proc::start("user-state", &args)
    };
    let mut first = user_state("first")?;
    let _second = user_state("second")?;

    let client = redis::Client::open(url.as_str())?;
    let mut con = ConnectionManager::new(client).await?;
    let store = RedisStateStore::new(con.clone(), "bk", PARTITIONS);
    let lease_key = |p: u32| format!("bk:{{{ws}:{p}}}:lease");

    // Wait until the partitions are shared out, and pick one the first instance holds.
    let mut victim = None;
    while victim.is_none() {
        let mut owners = Vec::new();
        for p in 0..PARTITIONS {
            let owner: Option<String> = con.get(lease_key(p)).await?;
            owners.push(owner);
        }
        let split = owners.iter().all(Option::is_some)
            && owners.iter().any(|o| o.as_deref() == Some("second"));
        if split {
            victim = owners.iter().position(|o| o.as_deref() == Some("first"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let partition = victim.context("a partition of the first instance")? as u32;
    let user = (0..)
        .map(|i| format!("user-{i}"))
        .find(|u| partition_of(&ws, u, PARTITIONS) == partition)
        .context("a user of the partition")?;

    let mut ingest_client = IngestClient::connect(ingest.url()).await?;
    let track = |id: &str| TrackRequest {
        workspace: ws.clone(),
        event: Some(event(&user, id)),
    };
    ingest_client.track(track("before")).await?;
    while applied(&store, &ws, &user).await < 1 {
        tokio::time::sleep(POLL).await;
    }

    first.kill();
    let killed = Instant::now();
    ingest_client.track(track("after")).await?;

    let mut lease_moved = None;
    loop {
        if lease_moved.is_none() {
            let owner: Option<String> = con.get(lease_key(partition)).await?;
            if owner.as_deref() == Some("second") {
                lease_moved = Some(killed.elapsed().as_millis());
            }
        }
        if applied(&store, &ws, &user).await >= 2 {
            let applied = killed.elapsed().as_millis();
            return Ok(Sample {
                lease_moved: lease_moved.unwrap_or(applied),
                applied,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

fn summary(values: &mut [u128]) -> String {
    values.sort_unstable();
    let min = values.first().copied().unwrap_or(0);
    let max = values.last().copied().unwrap_or(0);
    let median = values.get(values.len() / 2).copied().unwrap_or(0);
    format!("min {min:>5} ms  median {median:>5} ms  max {max:>5} ms")
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let redis = RedisServer::start()?;
        println!(
            "partition takeover after SIGKILL of its user-state instance \
             ({PARTITIONS} partitions, 2 instances, {ROUNDS} rounds per lease time)"
        );
        for ttl in LEASE_TIMES_MS {
            let mut moved = Vec::new();
            let mut applied = Vec::new();
            for n in 0..ROUNDS {
                let sample = round(&redis, ttl, n).await?;
                moved.push(sample.lease_moved);
                applied.push(sample.applied);
            }
            println!("lease {ttl:>5} ms");
            println!("  lease taken by survivor:  {}", summary(&mut moved));
            println!("  first event applied:      {}", summary(&mut applied));
        }
        Ok(())
    })
}
