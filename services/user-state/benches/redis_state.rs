//! Redis storage figures against a redis-server this benchmark starts on loopback:
//! record size and codec time per encoding, pipelined XADD (a reference for what the server
//! does at best), state save+load throughput, activation (load) latency percentiles, and
//! event log appends with deduplication.
//!
//! Run: `cargo bench -p beckon-user-state --bench redis_state`. Set `BENCH_SCALE` (default 1)
//! to multiply the operation counts. Figures are printed, never asserted.

// A benchmark prints its figures and reads the wall clock to measure.
#![allow(clippy::print_stdout, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Instant;

use beckon_core::state::Tracking;
use beckon_core::{Decision, DecisionKind, Duration, Event, EventKind, Props, Ts, UserState};
use beckon_ingest::log::{EventLog, LogConfig, RedisLog};
use beckon_testkit::RedisServer;
use beckon_user_state::StateStore;
use beckon_user_state::redis::{Encoding, RedisStateStore, decode, encode};
use redis::aio::ConnectionManager;

const PARTITIONS: u32 = 64;
const CONCURRENCY: usize = 32;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scale: usize = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let server = RedisServer::start()?;
    println!(
        "redis-server at {} (appendonly no, save \"\")",
        server.url()
    );

    let sample = realistic_user("user-sample", 400);
    encoding_figures(&sample);
    runtime.block_on(async {
        let client = redis::Client::open(server.url())?;
        let con = client.get_connection_manager().await?;
        xadd_pipelined(&con, 200_000 * scale).await?;
        for encoding in [Encoding::Json, Encoding::MessagePack] {
            let store = RedisStateStore::new(con.clone(), server.namespace(), PARTITIONS)
                .with_encoding(encoding);
            save_load(&store, encoding, 2_000 * scale, 5).await?;
            activation_latency(&store, encoding, 2_000 * scale, 20_000 * scale).await?;
        }
        log_append(&con, server.namespace(), 50_000 * scale).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

/// A user after `events` events: traits, counters for 20 event names, remembered
/// occurrences, a full window of message ids and a full list of decisions.
fn realistic_user(user: &str, events: usize) -> UserState {
    let mut state = UserState::new("shop", user);
    let mut tracking = Tracking::default();
    tracking.track(
        "Product Viewed",
        Duration::hours(24),
        ["category".to_string()],
    );
    tracking.track("Product Added", Duration::hours(72), ["sku".to_string()]);
    let names = [
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Order Completed",
    ];
    for i in 0..events {
        let mut properties = Props::new();
        properties.insert(
            "sku".into(),
            serde_json::json!(format!("SKU-{:06}", i * 7919 % 100_000)),
        );
        properties.insert(
            "category".into(),
            serde_json::json!(format!("cat-{}", i % 12)),
        );
        properties.insert("price".into(), serde_json::json!(19.99 + i as f64));
        let mut traits = Props::new();
        let kind = if i % 50 == 0 {
            traits.insert("plan".into(), serde_json::json!("pro"));
            traits.insert(
                "email".into(),
                serde_json::json!(format!("{user}@example.com")),
            );
            traits.insert("country".into(), serde_json::json!("DE"));
            EventKind::Identify
        } else {
            EventKind::Track
        };
        let name = if i % 5 == 0 {
            format!("Screen {}", i % 16)
        } else {
            names[i % names.len()].to_string()
        };
        let event = Event {
            kind,
            message_id: format!("{:08x}-7d2f-4c1e-9a3b-{:012x}", i, i * 31),
            user: user.to_string(),
            anonymous_id: None,
            name,
            properties,
            traits,
            timestamp: Ts(1_700_000_000_000 + i as i64 * 60_000),
            previous_id: None,
        };
        state.observe(&event, &tracking);
        if i % 4 == 0 {
            state.record(Decision {
                at: event.timestamp,
                journey: "cart-abandonment".into(),
                step: "wait-1h".into(),
                kind: DecisionKind::Step,
                reason: String::new(),
                instance: 1,
                arm: None,
            });
        }
    }
    state
}

fn encoding_figures(state: &UserState) {
    println!("\n## record encoding (a user after 400 events)");
    for encoding in [Encoding::Json, Encoding::MessagePack] {
        let Ok(bytes) = encode(state, encoding) else {
            println!("{encoding:?}: encoding failed");
            continue;
        };
        let rounds = 2_000;
        let start = Instant::now();
        for _ in 0..rounds {
            let _ = encode(state, encoding);
        }
        let enc = start.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        let start = Instant::now();
        for _ in 0..rounds {
            let _ = decode(&bytes, &state.user);
        }
        let dec = start.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        let same = decode(&bytes, &state.user).is_ok_and(|s| s == *state);
        println!(
            "{encoding:?}: {} bytes, encode {enc:.1} us, decode {dec:.1} us, round trip equal: \
             {same}",
            bytes.len()
        );
    }
}

async fn xadd_pipelined(
    con: &ConnectionManager,
    total: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let batch = 1_000;
    let payload = "x".repeat(200);
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let mut pipe = redis::pipe();
        for i in 0..batch {
            pipe.cmd("XADD")
                .arg(format!("bench:{{{}}}:xadd", i % 8))
                .arg("*")
                .arg("ev")
                .arg(&payload)
                .ignore();
        }
        let mut con = con.clone();
        pipe.query_async::<()>(&mut con).await?;
        sent += batch;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("\n## pipelined XADD (reference; 200-byte entries, batches of {batch})");
    println!(
        "{sent} entries in {secs:.2} s: {:.0} entries/s",
        sent as f64 / secs
    );
    Ok(())
}

/// `users` users each loaded and saved (compare-and-set) `rounds` times, `CONCURRENCY`
/// at once.
async fn save_load(
    store: &RedisStateStore<ConnectionManager>,
    encoding: Encoding,
    users: usize,
    rounds: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let template = Arc::new(realistic_user("template", 400));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let store = store.clone();
        let template = template.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut ops = 0u64;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= users {
                    break;
                }
                let user = format!("{encoding:?}-user-{i}");
                let mut state = (*template).clone();
                state.user = user.clone();
                for _ in 0..rounds {
                    let loaded = store.load("shop", &user).await?;
                    let expected = loaded.as_ref().map_or(0, |s| s.version);
                    state.version = expected + 1;
                    store.save(&state, expected).await?;
                    ops += 2;
                }
            }
            Ok::<u64, beckon_user_state::StateError>(ops)
        }));
    }
    let mut ops = 0;
    for task in tasks {
        ops += task.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("\n## state save+load, {encoding:?}, {CONCURRENCY} concurrent, 400-event users");
    println!(
        "{ops} operations ({} load+save pairs) in {secs:.2} s: {:.0} ops/s",
        ops / 2,
        ops as f64 / secs
    );
    Ok(())
}

/// Latency of single loads of stored users (what starting a user's actor waits for), first
/// one at a time, then with `CONCURRENCY` loads in flight.
async fn activation_latency(
    store: &RedisStateStore<ConnectionManager>,
    encoding: Encoding,
    users: usize,
    loads: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut sequential = Vec::with_capacity(loads);
    for i in 0..loads {
        let user = format!("{encoding:?}-user-{}", (i * 7_919) % users);
        let start = Instant::now();
        let loaded = store.load("shop", &user).await?;
        sequential.push(start.elapsed().as_secs_f64() * 1e6);
        if loaded.is_none() {
            return Err(format!("user {user} missing").into());
        }
    }

    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in (t..loads).step_by(CONCURRENCY) {
                let user = format!("{encoding:?}-user-{}", (i * 104_729) % users);
                let start = Instant::now();
                store.load("shop", &user).await?;
                out.push(start.elapsed().as_secs_f64() * 1e6);
            }
            Ok::<_, beckon_user_state::StateError>(out)
        }));
    }
    let mut concurrent = Vec::with_capacity(loads);
    for task in tasks {
        concurrent.extend(task.await??);
    }

    println!("\n## activation (load) latency, {encoding:?}, {loads} loads");
    print_percentiles("one at a time", &mut sequential);
    print_percentiles(&format!("{CONCURRENCY} in flight"), &mut concurrent);
    Ok(())
}

fn print_percentiles(label: &str, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().unwrap_or(0.0)
    };
    println!(
        "{label}: p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        at(0.50),
        at(0.99),
        at(1.0)
    );
}

async fn log_append(
    con: &ConnectionManager,
    namespace: &str,
    total: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let log = Arc::new(RedisLog::new(
        con.clone(),
        LogConfig {
            namespace: namespace.to_string(),
            partitions: PARTITIONS,
            max_len: Some(1_000_000),
            dedup_ttl_secs: 3_600,
        },
    ));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY * 2 {
        let log = log.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let mut properties = Props::new();
                properties.insert("sku".into(), serde_json::json!(format!("SKU-{i}")));
                let event = Event {
                    kind: EventKind::Track,
                    message_id: format!("msg-{i}"),
                    user: format!("user-{}", i % 10_000),
                    anonymous_id: None,
                    name: "Product Added".into(),
                    properties,
                    traits: Props::new(),
                    timestamp: Ts(1_700_000_000_000 + i as i64),
                    previous_id: None,
                };
                log.append("shop", &event, None).await?;
            }
            Ok::<_, beckon_ingest::IngestError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "\n## event log append with dedup (Lua: SET NX EX + XADD), {} in flight",
        CONCURRENCY * 2
    );
    println!(
        "{total} appends in {secs:.2} s: {:.0} appends/s",
        total as f64 / secs
    );
    Ok(())
}
