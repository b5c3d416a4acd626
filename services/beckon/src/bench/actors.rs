//! User actors on Redis: resident memory per idle user, events per second through actors
//! that persist their state, and activation (load from Redis and start) latency.
//!
//! The workers here are the partition workers `serve user-state` runs, with the same stores:
//! state in Redis, timers in Redis (the scheduler's store), idempotency keys in Redis, and a
//! recording gateway whose messages are dropped as they come. They run on one actix thread;
//! the machine's other core is left to Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use anyhow::Context as _;
use beckon_core::partition::partition_of;
use beckon_core::{Duration, Event, EventKind, Props, Ts};
use beckon_gateway::{Gateway, RecordingChannel};
use beckon_journey::Engine;
use beckon_user_state::redis::{Encoding, RedisStateStore, encode};
use beckon_user_state::{Outlet, PartitionWorker, StateStore, TimerSink, Timers};
use hdrhistogram::Histogram;
use redis::aio::ConnectionManager;

use super::{
    BenchArgs, Scale, TARGET_BYTES_PER_IDLE_USER, figure, redis, rss_bytes, section, xadd_loop,
};
use crate::loadgen::{self, Percentiles, Traffic, TrafficShape};

const PARTITIONS: u32 = beckon_core::partition::DEFAULT_PARTITIONS;
const WORKSPACE: &str = "default";
/// Events applied between two writes of changed users, as the live loop's batch.
const BATCH: usize = 256;
const START: Ts = Ts(1_764_000_000_000);
/// Event time between two new users of the memory figure: 20 new users a second, so about
/// 12,000 users are active within serve's default hibernation period at any time.
const ARRIVAL: Duration = Duration(50);

/// Serve's defaults: how long users stay live before they hibernate, and before they leave
/// memory.
fn idle_periods() -> (Duration, Duration) {
    let s = crate::serve::config::Settings::default();
    let ms = |v: u64| Duration(i64::try_from(v).unwrap_or(i64::MAX));
    (ms(s.hibernate_after_ms), ms(s.evict_after_ms))
}

/// Fewest users whose memory figure is printed. Growth of the process's RSS is all the
/// figure can see, and part of it does not scale with users: the actors live at once within
/// the hibernation window (about 12,000 at the arrival rate here) and the pages the allocator
/// keeps after them. A few thousand users would read as several KiB each.
pub const MIN_MEMORY_USERS: u64 = 100_000;

/// Resident bytes per user from the RSS growth over `users`, when there are enough users for
/// it to mean something.
pub fn per_user_figure(users: u64, grown: u64) -> Option<f64> {
    (users >= MIN_MEMORY_USERS).then(|| grown as f64 / users as f64)
}

/// Workers and the recorder whose messages are dropped.
struct Rig {
    workers: HashMap<u32, PartitionWorker>,
    recorder: RecordingChannel,
}

async fn rig(url: &str, args: &BenchArgs) -> anyhow::Result<Rig> {
    let defs = beckon_journey::load_definitions(&args.journeys)
        .with_context(|| format!("loading journeys from {}", args.journeys.display()))?
        .for_workspace(WORKSPACE);
    let engine = Arc::new(Engine::from_definitions(defs));
    let con = ConnectionManager::new(redis::Client::open(url)?).await?;
    let store: Arc<dyn StateStore> = Arc::new(RedisStateStore::new(con.clone(), "bk", PARTITIONS));
    let timers: Arc<dyn beckon_scheduler::AsyncTimerStore> = Arc::new(
        beckon_scheduler::RedisTimers::new(con.clone(), "bk", PARTITIONS),
    );
    let sink: Arc<dyn TimerSink> = Arc::new(timers);
    let keys = beckon_gateway::RedisKeyStore::new(
        con,
        beckon_gateway::RedisKeysConfig {
            partitions: PARTITIONS,
            ..beckon_gateway::RedisKeysConfig::default()
        },
    );
    let recorder = RecordingChannel::new();
    let gateway = crate::serve::gateway::CHANNELS
        .iter()
        .fold(Gateway::new(), |g, c| g.with(c, Arc::new(recorder.clone())))
        .with_key_store(Arc::new(keys));
    let outlet: Arc<dyn Outlet> = Arc::new(gateway);
    let workers = (0..PARTITIONS)
        .map(|p| {
            let w = PartitionWorker::new(
                p,
                engine.clone(),
                store.clone(),
                Timers::Remote(sink.clone()),
                outlet.clone(),
            );
            (p, w)
        })
        .collect();
    Ok(Rig { workers, recorder })
}

/// Applies each partition's events in order, all partitions at once; writes changed users
/// every `BATCH` events and at the end. After each write, idle users hibernate and leave
/// memory as serve's partition loop has them do.
async fn apply(rig: &mut Rig, events: Vec<Event>) -> anyhow::Result<()> {
    let (hibernate, evict) = idle_periods();
    let mut by_partition: HashMap<u32, Vec<Event>> = HashMap::new();
    for e in events {
        by_partition
            .entry(partition_of(WORKSPACE, &e.user, PARTITIONS))
            .or_default()
            .push(e);
    }
    let mut tasks = Vec::new();
    for (p, events) in by_partition {
        let Some(mut worker) = rig.workers.remove(&p) else {
            continue;
        };
        tasks.push(actix::spawn(async move {
            for chunk in events.chunks(BATCH) {
                for e in chunk {
                    worker.on_event(WORKSPACE, e.clone()).await?;
                }
                worker.flush().await?;
                worker.evict_idle(evict);
                worker.hibernate_idle(hibernate).await?;
            }
            Ok::<_, beckon_user_state::StateError>(worker)
        }));
    }
    for task in tasks {
        let worker = task.await.context("a worker task failed")??;
        rig.workers.insert(worker.partition(), worker);
    }
    rig.recorder.take();
    Ok(())
}

/// Moves every worker past the eviction period and takes every user out of memory; returns
/// how many live actors stopped.
async fn evict_all(rig: &mut Rig) -> anyhow::Result<usize> {
    let (_, evict) = idle_periods();
    let mut stopped = 0;
    for w in rig.workers.values_mut() {
        let later = w.now().max(START).saturating_add(Duration(evict.0 * 2));
        w.advance(later).await?;
        stopped += w.evict_idle(evict);
    }
    // Stopped actors are freed on their arbiter's next turns.
    actix_rt::time::sleep(StdDuration::from_millis(200)).await;
    Ok(stopped)
}

/// Moves every worker past the hibernation period and hibernates every written user, as the
/// next batch of each partition would; returns how many hibernated.
async fn hibernate_all(rig: &mut Rig) -> anyhow::Result<usize> {
    let (hibernate, _) = idle_periods();
    let mut slept = 0;
    for w in rig.workers.values_mut() {
        let later = w.now().max(START).saturating_add(hibernate);
        w.advance(later).await?;
        slept += w.hibernate_idle(hibernate).await?;
    }
    // Stopped actors are freed on their arbiter's next turns.
    actix_rt::time::sleep(StdDuration::from_millis(200)).await;
    Ok(slept)
}

fn live_users(rig: &Rig) -> usize {
    rig.workers.values().map(PartitionWorker::users).sum()
}

fn hibernated_users(rig: &Rig) -> (usize, usize) {
    rig.workers.values().fold((0, 0), |(n, b), w| {
        (n + w.hibernated(), b + w.hibernated_bytes())
    })
}

/// A user's first session: sign-up traits, then two product views.
fn first_session(i: u64) -> [Event; 3] {
    let user = format!("mem-{i}");
    let at = START.saturating_add(Duration(i as i64 * ARRIVAL.0));
    let mut traits = Props::new();
    traits.insert("email".into(), format!("{user}@example.com").into());
    traits.insert("first_name".into(), "Ada".into());
    let mut identify = event(&user, EventKind::Identify, "", at, i * 3);
    identify.traits = traits;
    let view = |n: u64| {
        let mut e = event(&user, EventKind::Track, "Product Viewed", at, i * 3 + n);
        e.properties
            .insert("category".into(), format!("c{}", i % 40).into());
        e.properties
            .insert("product_id".into(), format!("{}", i % 5000).into());
        e
    };
    [identify, view(1), view(2)]
}

fn event(user: &str, kind: EventKind, name: &str, at: Ts, id: u64) -> Event {
    Event {
        kind,
        message_id: format!("m{id}"),
        user: user.to_string(),
        anonymous_id: None,
        name: name.to_string(),
        properties: Props::new(),
        traits: Props::new(),
        timestamp: at,
        previous_id: None,
    }
}

pub fn memory(args: &BenchArgs, scale: &Scale) -> anyhow::Result<()> {
    let users = scale.memory_users;
    let (hibernate, evict) = idle_periods();
    section(&format!(
        "resident memory per idle user, {users} users (serve's defaults: hibernate after {}, \
         leave memory after {})",
        hibernate, evict
    ));
    let server = redis(false)?;
    let system = actix::System::new();
    system.block_on(async {
        let mut rig = rig(&server.url(), args).await?;
        let before = rss_bytes();

        // Users arrive one every `ARRIVAL` of event time, in chunks so the event list never
        // dominates the process's memory; the workers hibernate idle users as they go.
        let chunk = 2_000u64;
        let start = Instant::now();
        let mut next = 0;
        let mut peak_live = 0;
        while next < users {
            let end = (next + chunk).min(users);
            let events: Vec<Event> = (next..end).flat_map(first_session).collect();
            apply(&mut rig, events).await?;
            peak_live = peak_live.max(live_users(&rig));
            next = end;
        }
        println!(
            "{users} users applied (3 events each, one new user every {ARRIVAL} of event time, \
             state written) in {:.1} s; at most {peak_live} live actors at once",
            start.elapsed().as_secs_f64()
        );

        // The users' last events are behind them: idle for the hibernation period.
        hibernate_all(&mut rig).await?;
        let idle = rss_bytes();
        let live = live_users(&rig);
        let (slept, record_bytes) = hibernated_users(&rig);
        println!(
            "state of the users: {slept} hibernated, {live} live actors; compact records {} \
             bytes per user on average; process RSS {} MiB before, {} MiB after",
            record_bytes / slept.max(1),
            before >> 20,
            idle >> 20
        );
        match per_user_figure(users, idle.saturating_sub(before)) {
            Some(per_user) => figure(
                "resident per idle user, hibernated",
                per_user,
                "bytes",
                Some((TARGET_BYTES_PER_IDLE_USER, "target 1 KiB")),
            ),
            None => println!(
                "resident per idle user, hibernated: not shown below {MIN_MEMORY_USERS} users \
                 (RSS grew {} KiB for {users}; at this size the actors live within the \
                 hibernation window and the allocator's reserve outweigh the users; run with \
                 --memory-users {MIN_MEMORY_USERS} or more for the figure)",
                idle.saturating_sub(before) >> 10
            ),
        }

        // What one user's state weighs once encoded, as Redis keeps it.
        if let Some(worker) = rig
            .workers
            .get_mut(&partition_of(WORKSPACE, "mem-0", PARTITIONS))
        {
            let state = worker.user(WORKSPACE, "mem-0").await?;
            let encoded = encode(&state, Encoding::MessagePack)?;
            println!(
                "one user's state encoded (MessagePack): {} bytes",
                encoded.len()
            );
        }

        // Past the eviction period users leave memory; the allocator keeps the pages.
        evict_all(&mut rig).await?;
        let after = rss_bytes();
        println!(
            "after the eviction period: {} hibernated, {} live; process RSS {} MiB",
            hibernated_users(&rig).0,
            live_users(&rig),
            after >> 20
        );
        anyhow::Ok(())
    })?;
    Ok(())
}

pub fn throughput(args: &BenchArgs, scale: &Scale) -> anyhow::Result<()> {
    section("actors with Redis persistence (state, timers and send keys in Redis, AOF everysec)");
    let server = redis(true)?;
    let system = actix::System::new();
    system.block_on(async {
        let reference = xadd_loop(&server.url(), scale.xadd_entries, 300).await?;
        let mut rig = rig(&server.url(), args).await?;

        let events = traffic(scale.actor_events)?;
        let users: Vec<String> = {
            let mut seen = std::collections::HashSet::new();
            events
                .iter()
                .filter(|e| seen.insert(e.user.clone()))
                .map(|e| e.user.clone())
                .collect()
        };
        let n = events.len();
        let start = Instant::now();
        apply(&mut rig, events).await?;
        let rate = n as f64 / start.elapsed().as_secs_f64();
        figure(
            &format!(
                "events through actors ({} users, written every {BATCH})",
                users.len()
            ),
            rate,
            "events/s",
            Some((reference, "XADD loop")),
        );

        evict_all(&mut rig).await?;
        let (cold, warm) = activations(&mut rig, &users, scale.activations).await?;
        println!(
            "activation (load from Redis, start actor): {}",
            cold.as_ms()
        );
        println!(
            "same users again, actor live:              {}",
            warm.as_ms()
        );
        anyhow::Ok(())
    })?;
    Ok(())
}

/// Synthetic shoppers' events on a virtual clock 20 ms apart.
fn traffic(count: u64) -> anyhow::Result<Vec<Event>> {
    let shape = TrafficShape {
        users: 50_000,
        ..TrafficShape::default()
    };
    let mut t = Traffic::new(shape, 7, "act-");
    (0..count)
        .map(|i| {
            let at = START.as_millis() + i as i64 * 20;
            beckon_ingest::grpc::from_proto(t.next_event(at), None)
                .map_err(|e| anyhow::anyhow!("synthetic event rejected: {e}"))
        })
        .collect()
}

/// Loads `count` evicted users one at a time, then reads them again with their actor live.
async fn activations(
    rig: &mut Rig,
    users: &[String],
    count: u64,
) -> anyhow::Result<(Percentiles, Percentiles)> {
    let mut cold: Histogram<u64> = loadgen::histogram();
    let mut warm: Histogram<u64> = loadgen::histogram();
    for user in users.iter().take(count as usize) {
        let p = partition_of(WORKSPACE, user, PARTITIONS);
        let Some(worker) = rig.workers.get_mut(&p) else {
            continue;
        };
        let start = Instant::now();
        worker.user(WORKSPACE, user).await?;
        cold.saturating_record(start.elapsed().as_micros() as u64);
        let start = Instant::now();
        worker.user(WORKSPACE, user).await?;
        warm.saturating_record(start.elapsed().as_micros() as u64);
    }
    Ok((Percentiles::of(&cold), Percentiles::of(&warm)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_figure_needs_enough_users_to_outweigh_fixed_costs() {
        // 2,000 users over 26 MiB of growth would read as 13 KiB each: not shown.
        assert_eq!(per_user_figure(2_000, 26 << 20), None);
        assert_eq!(per_user_figure(MIN_MEMORY_USERS - 1, 170 << 20), None);
        assert_eq!(
            per_user_figure(1_000_000, 689_000_000),
            Some(689.0),
            "a full run shows its figure"
        );
    }
}
