//! Separate processes on real Redis: ingest, scheduler and three user-state instances. One
//! user-state instance is killed with SIGKILL mid-stream and started again later. Every
//! acknowledged event is applied exactly once, and every expected message goes out.

mod support;

use std::collections::{HashMap, HashSet};

use beckon_proto::v1::BatchRequest;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_testkit::RedisServer;
use beckon_user_state::StateStore;
use serde_json::json;
use support::{Served, eventually, examples, recorded, track, wall_clock_ms};

const USERS: usize = 1_000;
const EVENTS_PER_USER: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_user_state_instance_loses_and_duplicates_nothing() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("messages.jsonl");
    let journeys = examples();
    let journeys = journeys.to_str().unwrap_or_default();
    let out_arg = out.to_str().unwrap_or_default();
    let common = ["--redis-url", url.as_str(), "--partitions", "16"];

    let scheduler = Served::start("scheduler", &common);
    let ingest = Served::start("ingest", &common);
    let sched_url = scheduler.url();
    let user_state = |n: usize| {
        let instance = format!("us-{n}");
        let mut args = common.to_vec();
        args.extend([
            "--scheduler-url",
            sched_url.as_str(),
            "--journeys",
            journeys,
            "--messages-out",
            out_arg,
            "--lease-ttl-ms",
            "1500",
            "--instance",
        ]);
        args.push(instance.as_str());
        Served::start("user-state", &args)
    };
    let mut instances: Vec<Served> = (0..3).map(user_state).collect();

    // Every user adds to the cart two hours ago; odd users never order, so their reminder is
    // due at once; even users order a minute after the add.
    let base = wall_clock_ms() - 2 * 3_600_000;
    let mut client = IngestClient::connect(ingest.url()).await.expect("connect ingest");
    let mut events = Vec::new();
    for i in 0..EVENTS_PER_USER {
        for u in 0..USERS {
            let user = format!("user-{u}");
            let at = base + (i as i64) * 1_000;
            let id = format!("{user}-{i}");
            let e = match i {
                3 => track(&user, "Product Added", &id, at, json!({"name": format!("item-{u}")})),
                4 if u % 2 == 0 => track(&user, "Order Completed", &id, at, json!({})),
                _ => track(&user, "Product Viewed", &id, at, json!({"category": "c"})),
            };
            events.push(e);
        }
    }

    let mut acked = 0;
    for (n, chunk) in events.chunks(100).enumerate() {
        if n == events.len() / 200 {
            // Half way: one instance dies without draining.
            instances[1].kill();
        }
        let r = client
            .batch(BatchRequest { workspace: "default".into(), events: chunk.to_vec() })
            .await
            .expect("batch")
            .into_inner();
        acked += r.results.len();
    }
    assert_eq!(acked, USERS * EVENTS_PER_USER);

    // The dead instance comes back later and gets its share again.
    instances[1] = user_state(1);

    let conn = redis::aio::ConnectionManager::new(redis::Client::open(url.as_str()).expect("url"))
        .await
        .expect("connect");
    let store = beckon_user_state::redis::RedisStateStore::new(conn, "bk", 16);
    let mut applied = HashMap::new();
    let all_applied = {
        let mut done = false;
        for _ in 0..600 {
            applied.clear();
            for u in 0..USERS {
                let user = format!("user-{u}");
                let n = store
                    .load("default", &user)
                    .await
                    .ok()
                    .flatten()
                    .map_or(0, |s| s.total_events);
                applied.insert(user, n);
            }
            if applied.values().all(|n| *n == EVENTS_PER_USER as u64) {
                done = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        done
    };
    let wrong: Vec<_> = applied.iter().filter(|(_, n)| **n != EVENTS_PER_USER as u64).collect();
    assert!(all_applied, "events applied exactly once per user; off: {:?}", &wrong[..wrong.len().min(5)]);

    let reminders = |msgs: &[serde_json::Value]| -> HashSet<String> {
        msgs.iter()
            .filter(|m| m["journey"] == "cart-abandonment")
            .map(|m| m["user_id"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert!(
        eventually(400, || reminders(&recorded(&out)).len() == USERS / 2).await,
        "every odd user got a reminder: {}",
        reminders(&recorded(&out)).len()
    );
    let msgs = recorded(&out);
    let got = reminders(&msgs);
    assert!(got.iter().all(|u| u.trim_start_matches("user-").parse::<usize>().unwrap_or(0) % 2 == 1),
        "no reminder after an order");

    // Delivery is at least once through recording channels that remember keys per process;
    // count what a crash made go out twice.
    let mut keys = HashSet::new();
    let duplicates = msgs
        .iter()
        .filter(|m| !keys.insert(m["idempotency_key"].as_str().unwrap_or_default().to_string()))
        .count();
    eprintln!("figure: {} messages, {duplicates} repeated after the crash", msgs.len());
}
