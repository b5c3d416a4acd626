//! `beckon bench`: the engine's speed and memory figures, each printed beside a reference
//! measured in the same run on the same machine (a plain pipelined Redis `XADD` loop, parsing
//! alone, or the target figure), so a reader sees how far from the machine's limit each one is.
//!
//! Every Redis the benchmark needs is a `redis-server` of its own on a free loopback port,
//! stopped at the end; services run as child processes of this binary (`beckon serve ...`)
//! and are killed when their figure is done. Figures are printed, never asserted.
//!
//! `--quick` shrinks every count so the whole run takes seconds (the test suite uses it to
//! check the output's shape); its figures are too small to mean much.

// A benchmark reads the wall clock to measure and prints its figures.
#![allow(clippy::disallowed_methods, clippy::print_stdout)]

mod actors;
mod pipeline;
mod procs;
mod replay;
mod timers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use beckon_testkit::{Fsync, Options, RedisServer};

/// What a figure is compared with.
pub const TARGET_REPLAY_EVENTS_PER_SEC: f64 = 250_000.0;
pub const TARGET_BYTES_PER_IDLE_USER: f64 = 1024.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Figure {
    Memory,
    Replay,
    Ingest,
    Pipeline,
    Actors,
    Timers,
}

/// Flags of `beckon bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Tiny counts: a few seconds in all, for checking that everything runs.
    #[arg(long)]
    pub quick: bool,
    /// Run only these figures (repeat or separate with commas); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Figure>,
    /// Event file for the replay figure.
    #[arg(
        long,
        default_value = "../shared/data/taobao-userbehavior/events.segment.jsonl"
    )]
    pub events: PathBuf,
    /// Journey specs used by every figure.
    #[arg(long, default_value = "examples/journeys")]
    pub journeys: PathBuf,
    /// Users loaded into actors for the memory figure (default 1,000,000; quick 2,000).
    #[arg(long)]
    pub memory_users: Option<u64>,
    /// Pending timers for the timer figure (default 10,000,000; quick 10,000).
    #[arg(long)]
    pub pending_timers: Option<u64>,
}

/// Counts every figure runs with.
#[derive(Clone, Debug)]
pub struct Scale {
    pub quick: bool,
    pub memory_users: u64,
    pub xadd_entries: u64,
    pub ingest_events: u64,
    pub pipeline_events: u64,
    /// How long the half-rate latency run lasts.
    pub latency_secs: f64,
    pub actor_events: u64,
    pub activations: u64,
    pub pending_timers: u64,
    pub due_timers: u64,
    pub lateness_secs: f64,
}

impl Scale {
    pub fn of(args: &BenchArgs) -> Scale {
        let quick = args.quick;
        let pick = |full: u64, small: u64| if quick { small } else { full };
        Scale {
            quick,
            memory_users: args.memory_users.unwrap_or(pick(1_000_000, 2_000)),
            xadd_entries: pick(500_000, 5_000),
            ingest_events: pick(200_000, 1_000),
            pipeline_events: pick(100_000, 1_000),
            latency_secs: if quick { 1.0 } else { 20.0 },
            actor_events: pick(200_000, 2_000),
            activations: pick(20_000, 200),
            pending_timers: args.pending_timers.unwrap_or(pick(10_000_000, 10_000)),
            due_timers: pick(200_000, 1_000),
            lateness_secs: if quick { 1.0 } else { 10.0 },
        }
    }
}

/// Runs the chosen figures and prints each as it completes.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let scale = Scale::of(args);
    let wanted = |f: Figure| args.only.is_empty() || args.only.contains(&f);
    println!(
        "# beckon bench{} ({} cores)",
        if scale.quick { " --quick" } else { "" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Memory first: the process is still small, so its growth is the users' doing.
    if wanted(Figure::Memory) {
        actors::memory(args, &scale)?;
    }
    if wanted(Figure::Replay) {
        replay::replay(args, &scale)?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if wanted(Figure::Ingest) {
        runtime.block_on(pipeline::ingest(args, &scale))?;
    }
    if wanted(Figure::Pipeline) {
        runtime.block_on(pipeline::full(args, &scale))?;
    }
    if wanted(Figure::Actors) {
        actors::throughput(args, &scale)?;
    }
    if wanted(Figure::Timers) {
        runtime.block_on(timers::timers(&scale))?;
    }
    println!("\ndone");
    Ok(())
}

/// A Redis of the benchmark's own, with the append-only file flushed once a second (the
/// durability a deployment runs with), or none.
pub(crate) fn redis(aof: bool) -> anyhow::Result<RedisServer> {
    let options = if aof {
        Options::aof(Fsync::EverySec)
    } else {
        Options::default()
    };
    RedisServer::start_own(options).context("starting redis-server (is it installed?)")
}

pub(crate) fn section(title: &str) {
    println!("\n## {title}");
}

/// `name: value unit (ratio x reference)`
pub(crate) fn figure(name: &str, value: f64, unit: &str, reference: Option<(f64, &str)>) {
    match reference {
        Some((r, what)) if r > 0.0 => {
            println!("{name}: {value:.0} {unit} ({:.2}x {what})", value / r)
        }
        _ => println!("{name}: {value:.0} {unit}"),
    }
}

/// Pipelined `XADD` of `entries` entries of `payload` bytes over 8 streams, in batches of
/// 1,000: about as fast as this Redis appends to streams, the reference for ingest.
pub(crate) async fn xadd_loop(url: &str, entries: u64, payload: usize) -> anyhow::Result<f64> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let body = "x".repeat(payload);
    let batch = 1_000;
    let start = Instant::now();
    let mut sent = 0;
    while sent < entries {
        let mut pipe = redis::pipe();
        for i in 0..batch.min(entries - sent) {
            pipe.cmd("XADD")
                .arg(format!("ref:{{{}}}:xadd", i % 8))
                .arg("*")
                .arg("b")
                .arg(&body)
                .ignore();
        }
        pipe.query_async::<()>(&mut con).await?;
        sent += batch.min(entries - sent);
    }
    let per_sec = sent as f64 / start.elapsed().as_secs_f64();
    figure(
        "reference: pipelined XADD loop",
        per_sec,
        &format!("entries/s ({payload}-byte entries, batches of {batch})"),
        None,
    );
    Ok(per_sec)
}

/// Resident set size of this process, in bytes.
pub(crate) fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

pub(crate) fn system_clock() -> Arc<dyn beckon_core::Clock> {
    Arc::new(beckon_core::SystemClock)
}
