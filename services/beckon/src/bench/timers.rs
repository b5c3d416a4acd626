//! Durable timers in Redis (`RedisTimers`, the scheduler's store): scheduling rate with many
//! timers pending, firing rate into the partition log, and lateness of timers fired by the
//! scheduler's firing loop on the system clock.
//!
//! This Redis runs without an append-only file: ten million timers would write gigabytes of
//! it to a disk the machine shares.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use beckon_core::{Clock, Duration, Timer, Ts};
use beckon_scheduler::firing::{self, FiredSink, FiringConfig};
use beckon_scheduler::{AsyncTimerStore, RedisTimers};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{Notify, watch};

use super::{Scale, figure, redis, section, system_clock, xadd_loop};
use crate::loadgen::{self, Percentiles};
use crate::serve::FiredToLog;
use beckon_ingest::log::{EventLog, LogConfig, RedisLog};

const PARTITIONS: u32 = beckon_core::partition::DEFAULT_PARTITIONS;
/// Scheduling calls in flight, each with a batch of timers.
const CONCURRENCY: u64 = 8;
/// Timers per scheduling call: split by partition into one script per partition.
const BATCH: u64 = 2_048;
/// Longest wait for one Redis reply. Loading ten million timers on a loaded machine stalls
/// replies for longer than the client's default half second; this is generous, not endless.
const RESPONSE_TIMEOUT: StdDuration = StdDuration::from_secs(60);
/// Timers per synthetic user among the pending ones.
const PER_USER: u64 = 100;

pub async fn timers(scale: &Scale) -> anyhow::Result<()> {
    section(&format!(
        "timers in Redis ({} pending; no AOF)",
        scale.pending_timers
    ));
    let server = redis(false)?;
    let reference = xadd_loop(&server.url(), scale.xadd_entries, 200).await?;
    let config = ConnectionManagerConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
    let con =
        ConnectionManager::new_with_config(redis::Client::open(server.url())?, config).await?;
    let store: Arc<dyn AsyncTimerStore> = Arc::new(RedisTimers::new(con.clone(), "bk", PARTITIONS));
    let clock = system_clock();
    let now = clock.now();

    let mut c = con.clone();
    let memory: String = redis::cmd("INFO").arg("memory").query_async(&mut c).await?;
    let used_before = memory
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse::<u64>().ok());

    // Pending: due a month from now, so none fires while the rest is measured.
    let far = now.saturating_add(Duration::hours(30 * 24));
    let start = Instant::now();
    schedule_many(&store, "pend", scale.pending_timers, move |i| {
        far.saturating_add(Duration(i as i64 % 86_400_000))
    })
    .await?;
    let rate = scale.pending_timers as f64 / start.elapsed().as_secs_f64();
    figure(
        "scheduled",
        rate,
        "timers/s",
        Some((reference, "XADD loop")),
    );
    let memory: String = redis::cmd("INFO").arg("memory").query_async(&mut c).await?;
    let used = |name: &str| {
        memory
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    if let Some(used) = used("used_memory:") {
        let empty = used_before.unwrap_or(0);
        println!(
            "redis used memory {} MiB, {} bytes per pending timer",
            used / (1 << 20),
            used.saturating_sub(empty) / scale.pending_timers.max(1)
        );
    }

    // Due now: claimed, appended to the partition log, acknowledged.
    let due = now.saturating_sub(Duration(1_000));
    schedule_many(&store, "due", scale.due_timers, move |_| due).await?;
    // As `serve` builds it on a single server.
    let log: Arc<dyn EventLog> = Arc::new(
        RedisLog::new(
            con.clone(),
            LogConfig {
                partitions: PARTITIONS,
                ..LogConfig::default()
            },
        )
        .spanning_partitions(),
    );
    let sink: Arc<dyn FiredSink> = Arc::new(FiredToLog(log));
    let config = FiringConfig {
        workspaces: vec!["default".into()],
        partitions: PARTITIONS,
        ..FiringConfig::default()
    };
    let start = Instant::now();
    let mut fired = 0;
    while fired < scale.due_timers {
        let round =
            firing::fire_round(store.as_ref(), sink.as_ref(), clock.as_ref(), &config).await?;
        if round.fired == 0 {
            anyhow::bail!(
                "{} of {} due timers never fired",
                scale.due_timers - fired,
                scale.due_timers
            );
        }
        fired += round.fired;
    }
    let rate = fired as f64 / start.elapsed().as_secs_f64();
    figure(
        &format!("fired into the log ({fired} due)"),
        rate,
        "timers/s",
        Some((reference, "XADD loop")),
    );

    let late = lateness(store, sink, clock, scale).await?;
    println!(
        "lateness of timers due over {:.0} s, fired by the firing loop: {}",
        scale.lateness_secs,
        late.as_ms()
    );
    Ok(())
}

/// Schedules `count` timers, `BATCH` per call with `CONCURRENCY` calls in flight. Shows
/// progress once a second when standard error is a terminal.
async fn schedule_many(
    store: &Arc<dyn AsyncTimerStore>,
    prefix: &'static str,
    count: u64,
    due: impl Fn(u64) -> Ts + Send + Sync + Clone + 'static,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (store, next, done, due) = (store.clone(), next.clone(), done.clone(), due.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(BATCH, Ordering::Relaxed);
                if first >= count {
                    return Ok::<_, beckon_scheduler::SchedulerError>(());
                }
                let batch: Vec<Timer> = (first..(first + BATCH).min(count))
                    .map(|i| Timer {
                        id: format!("t{}", i % PER_USER),
                        workspace: "default".into(),
                        user: format!("{prefix}-{}", i / PER_USER),
                        due: due(i),
                        journey: "bench".into(),
                        instance: 1,
                        trace: None,
                    })
                    .collect();
                store.schedule_many(&batch).await?;
                done.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    let progress = std::io::stderr().is_terminal().then(|| {
        let done = done.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(StdDuration::from_secs(1)).await;
                let n = done.load(Ordering::Relaxed);
                eprint!(
                    "\r{prefix}: {n} of {count} timers scheduled, {:.0}/s   ",
                    n as f64 / start.elapsed().as_secs_f64()
                );
            }
        })
    });
    let mut result = Ok(());
    for t in tasks {
        if let Err(e) = t.await? {
            result = Err(e);
        }
    }
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    Ok(result?)
}

/// Timers due evenly over the next `lateness_secs`, fired by the scheduler's loop.
async fn lateness(
    store: Arc<dyn AsyncTimerStore>,
    sink: Arc<dyn FiredSink>,
    clock: Arc<dyn Clock>,
    scale: &Scale,
) -> anyhow::Result<Percentiles> {
    let count = (scale.lateness_secs * if scale.quick { 500.0 } else { 5_000.0 }) as u64;
    let span = (scale.lateness_secs * 1000.0) as u64;
    let first = clock.now().saturating_add(Duration(500));
    schedule_many(&store, "late", count, move |i| {
        first.saturating_add(Duration((i * span / count.max(1)) as i64))
    })
    .await?;

    let late = Arc::new(Mutex::new(loadgen::histogram()));
    let (stop_tx, stop) = watch::channel(false);
    let record = late.clone();
    let config = FiringConfig {
        workspaces: vec!["default".into()],
        partitions: PARTITIONS,
        ..FiringConfig::default()
    };
    let run = tokio::spawn(firing::run(
        store,
        sink,
        clock,
        config,
        Arc::new(Notify::new()),
        stop,
        move |round| {
            if let Ok(mut h) = record.lock() {
                for ms in &round.lateness_ms {
                    h.saturating_record((*ms).max(0) as u64 * 1000 + 1);
                }
            }
        },
    ));
    tokio::time::sleep(StdDuration::from_millis(span + 1_500)).await;
    let _ = stop_tx.send(true);
    run.await?;
    let h = late
        .lock()
        .map_err(|_| anyhow::anyhow!("lateness lock poisoned"))?;
    if h.len() < count {
        println!("only {} of {count} timers fired in time", h.len());
    }
    Ok(Percentiles::of(&h))
}
