//! Ingest alone, and full processing (ingest, log, user-state, journeys, scheduler, gateway)
//! through `serve all` and through separate processes, all on Redis with AOF everysec.
//!
//! Sustained throughput: events sent as fast as ingest takes them, timed until the last one is
//! applied, written and acknowledged by user-state (the partition streams are empty then:
//! applied entries are deleted). Latency: the same setup at half that rate. Event-to-decision
//! latency is observed at the gateway's output: the gateway appends each message to a file,
//! this benchmark reads the file every millisecond, and the latency of a message is the time
//! it was seen minus the time of the event that triggered it (the message's `at`, which is the
//! event's timestamp, stamped by the load generator when it sent the event). Both clocks are
//! this machine's; the resolution is one millisecond.

use std::io::{Read as _, Seek as _};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration as StdDuration, Instant};

use anyhow::Context as _;
use beckon_core::Ts;
use beckon_ingest::log::{LogConfig, RedisLog};
use hdrhistogram::Histogram;

use super::procs::{Service, path_arg};
use super::{BenchArgs, Scale, figure, redis, section, system_clock, xadd_loop};
use crate::loadgen::{self, LoadConfig, LoadReport, Percentiles, TrafficShape};

/// Size of a log entry's body for a typical synthetic event, for the XADD reference.
const ENTRY_BYTES: usize = 300;
const PARTITIONS: u32 = beckon_core::partition::DEFAULT_PARTITIONS;
/// Events per call in the ingest figure's `Batch` run.
const BATCH: usize = 100;

pub async fn ingest(_args: &BenchArgs, scale: &Scale) -> anyhow::Result<()> {
    section("ingest only (gRPC Track/Identify -> Redis stream, AOF everysec)");
    let server = redis(true)?;
    let reference = xadd_loop(&server.url(), scale.xadd_entries, ENTRY_BYTES).await?;

    let ingest = Service::start("ingest", &[], Some(&server.url()))?;
    let report = load(&ingest.url(), "ing-", scale.ingest_events, None).await?;
    figure(
        "ingest acknowledged",
        report.acked_per_sec(),
        "events/s",
        Some((reference, "XADD loop")),
    );
    print_load(&report);

    // Another way of sending, reported apart: a client that buffers and sends `Batch` calls.
    let config = LoadConfig {
        batch: BATCH,
        concurrency: 8,
        ..load_config(&ingest.url(), "ingb-", scale.ingest_events, None)
    };
    let report = loadgen::run(&config, system_clock()).await?;
    figure(
        &format!("ingest acknowledged, Batch calls of {BATCH} events, 8 in flight"),
        report.acked_per_sec(),
        "events/s",
        Some((reference, "XADD loop")),
    );
    print_load(&report);
    Ok(())
}

pub async fn full(args: &BenchArgs, scale: &Scale) -> anyhow::Result<()> {
    for mode in [Mode::All, Mode::Processes] {
        section(&format!(
            "full processing, {} (Redis AOF everysec)",
            mode.describe()
        ));
        let server = redis(true)?;
        let reference = xadd_loop(&server.url(), scale.xadd_entries, ENTRY_BYTES).await?;
        let dir = tempfile::tempdir()?;
        let messages = dir.path().join("sent.jsonl");
        let services = mode.start(&server.url(), &args.journeys, &messages)?;
        let url = services
            .first()
            .map(Service::url)
            .context("no ingest address")?;
        let con = redis::Client::open(server.url())?
            .get_multiplexed_async_connection()
            .await?;

        // Warm-up: user-state takes its partitions and creates the consumer groups.
        load(&url, "warm-", 200, None).await?;
        drained(&con, StdDuration::from_secs(60)).await?;

        let start = Instant::now();
        let report = load(&url, "max-", scale.pipeline_events, None).await?;
        drained(&con, StdDuration::from_secs(600)).await?;
        let sustained = report.acked as f64 / start.elapsed().as_secs_f64();
        figure(
            "sustained, applied end to end",
            sustained,
            "events/s",
            Some((reference, "XADD loop")),
        );
        print_load(&report);

        let rate = (sustained / 2.0).max(10.0);
        let stop = Arc::new(AtomicBool::new(false));
        let tail = {
            let (path, stop) = (messages.clone(), stop.clone());
            // A thread of its own: on the load generator's runtime, its millisecond polls
            // would wait behind hundreds of calls in flight and count that wait as latency.
            let start = std::fs::metadata(&path).map_or(0, |m| m.len());
            tokio::task::spawn_blocking(move || decisions(&path, start, "half-", &stop))
        };
        let events = (rate * scale.latency_secs) as u64;
        let report = load(&url, "half-", events, Some(rate)).await?;
        drained(&con, StdDuration::from_secs(120)).await?;
        tokio::time::sleep(StdDuration::from_millis(200)).await;
        stop.store(true, Ordering::Relaxed);
        let decided = tail.await??;
        println!(
            "at half rate ({rate:.0} events/s for {:.0} s): ack latency {}",
            scale.latency_secs,
            report.latency.as_ms()
        );
        println!("event-to-decision latency: {}", decided.as_ms());
        drop(services);
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Mode {
    All,
    Processes,
}

impl Mode {
    fn describe(self) -> &'static str {
        match self {
            Mode::All => "serve all (one process)",
            Mode::Processes => "ingest, journey, scheduler, gateway, user-state as processes",
        }
    }

    /// Starts the services; the first one takes events.
    fn start(
        self,
        redis_url: &str,
        journeys: &Path,
        messages: &Path,
    ) -> anyhow::Result<Vec<Service>> {
        let journeys = path_arg(journeys);
        let messages = path_arg(messages);
        match self {
            Mode::All => Ok(vec![Service::start(
                "all",
                &["--journeys", &journeys, "--messages-out", &messages],
                Some(redis_url),
            )?]),
            Mode::Processes => {
                let ingest = Service::start("ingest", &[], Some(redis_url))?;
                let journey =
                    Service::start("journey", &["--journeys", &journeys], Some(redis_url))?;
                let scheduler = Service::start("scheduler", &[], Some(redis_url))?;
                let gateway = Service::start(
                    "gateway",
                    &["--messages-out", &messages, "--ingest-url", &ingest.url()],
                    Some(redis_url),
                )?;
                let user_state = Service::start(
                    "user-state",
                    &[
                        "--journeys-url",
                        &journey.url(),
                        "--scheduler-url",
                        &scheduler.url(),
                        "--gateway-url",
                        &gateway.url(),
                    ],
                    Some(redis_url),
                )?;
                Ok(vec![ingest, journey, scheduler, gateway, user_state])
            }
        }
    }
}

async fn load(
    url: &str,
    prefix: &str,
    events: u64,
    rate: Option<f64>,
) -> anyhow::Result<LoadReport> {
    let config = load_config(url, prefix, events, rate);
    Ok(loadgen::run(&config, system_clock()).await?)
}

fn load_config(url: &str, prefix: &str, events: u64, rate: Option<f64>) -> LoadConfig {
    LoadConfig {
        url: url.to_string(),
        prefix: prefix.to_string(),
        events,
        rate,
        duration: StdDuration::from_secs(600),
        concurrency: 256,
        connections: 4,
        progress: false,
        shape: TrafficShape {
            users: 100_000,
            ..TrafficShape::default()
        },
        ..LoadConfig::default()
    }
}

fn print_load(report: &LoadReport) {
    for line in report.render().lines() {
        println!("  {line}");
    }
}

/// Waits until every partition stream is empty: all events applied and acknowledged.
async fn drained(
    con: &redis::aio::MultiplexedConnection,
    limit: StdDuration,
) -> anyhow::Result<()> {
    // Only for the stream names, which the log owns.
    let streams = RedisLog::new(
        con.clone(),
        LogConfig {
            partitions: PARTITIONS,
            ..LogConfig::default()
        },
    );
    let start = Instant::now();
    loop {
        let mut pipe = redis::pipe();
        for p in 0..PARTITIONS {
            pipe.cmd("XLEN").arg(streams.stream("default", p));
        }
        let mut con = con.clone();
        let lens: Vec<u64> = pipe.query_async(&mut con).await?;
        let backlog: u64 = lens.iter().sum();
        if backlog == 0 {
            return Ok(());
        }
        if start.elapsed() > limit {
            anyhow::bail!("{backlog} events still unapplied after {limit:?}");
        }
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
}

/// How often the messages file is looked at: a message is seen on average half of this after
/// it is written, a bias of the event-to-decision figure that must stay well below the 1.5 ms
/// it is held to.
const TAIL_POLL: StdDuration = StdDuration::from_micros(250);

/// Reads the gateway's message file as it grows from byte `start` on (what is before it was
/// sent earlier, to other users); for each message to a user of `prefix`, records when it was
/// seen minus its `at`, in microseconds (millisecond resolution).
///
/// Reading the file from its beginning would first parse every message of the earlier runs,
/// and the messages written meanwhile would be seen late by that long.
fn decisions(
    path: &Path,
    start: u64,
    prefix: &str,
    stop: &AtomicBool,
) -> anyhow::Result<Percentiles> {
    let clock = system_clock();
    let mut latency: Histogram<u64> = loadgen::histogram();
    let mut file: Option<std::fs::File> = None;
    // Bytes, not text: a read can end inside a line being written, and inside a character.
    let mut pending: Vec<u8> = Vec::new();
    let needle = format!("\"user_id\":\"{prefix}");
    loop {
        let done = stop.load(Ordering::Relaxed);
        if file.is_none() {
            // Opened once and read on from where it was: a poll is one read.
            file = std::fs::File::open(path).ok();
            if let Some(f) = &mut file {
                f.seek(std::io::SeekFrom::Start(start))?;
            }
        }
        if let Some(f) = &mut file {
            f.read_to_end(&mut pending)?;
            let seen = clock.now();
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let bytes: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&bytes);
                if !line.contains(&needle) {
                    continue;
                }
                if let Some(at) = decision_at(&line, prefix) {
                    let ms = (seen.as_millis() - at.as_millis()).max(0) as u64;
                    latency.saturating_record((ms * 1000).max(1));
                }
            }
        }
        if done {
            return Ok(Percentiles::of(&latency));
        }
        std::thread::sleep(TAIL_POLL);
    }
}

fn decision_at(line: &str, prefix: &str) -> Option<Ts> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let user = v.get("user_id")?.as_str()?;
    if !user.starts_with(prefix) {
        return None;
    }
    Ts::parse_rfc3339(v.get("at")?.as_str()?).ok()
}
