//! The failover scenario run by the single-server and the cluster tests: separate processes
//! (ingest, journey, scheduler, gateway, three user-state instances evaluating what the
//! journey service published) on one Redis deployment; one user-state instance is killed with
//! SIGKILL mid-stream and started again later.

use std::collections::{HashMap, HashSet};

use beckon::serve::redis_target::RedisTarget;
use beckon_proto::v1::BatchRequest;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_user_state::StateStore;
use serde_json::json;

use super::{Served, eventually, examples, recorded, track, wall_clock_ms};

const USERS: usize = 1_000;
const EVENTS_PER_USER: usize = 10;
const PARTITIONS: u32 = 16;

/// Runs the scenario against `target` (whose URLs the services are given as `redis_url`)
/// and asserts: every acknowledged event applied exactly once, every expected reminder sent,
/// none after an order, none twice.
pub async fn killed_instance_loses_and_duplicates_nothing(target: RedisTarget, redis_url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("messages.jsonl");
    // The cart journey with a two-second wait, so the test runs on the real clock the
    // services use without waiting an hour.
    let spec_dir = dir.path().join("journeys");
    std::fs::create_dir_all(&spec_dir).expect("mkdir");
    let cart = std::fs::read_to_string(examples().join("cart-abandonment.yaml")).expect("spec");
    std::fs::write(
        spec_dir.join("cart.yaml"),
        cart.replace("timeout: 1h", "timeout: 2s"),
    )
    .expect("write spec");
    let journeys = spec_dir.to_str().unwrap_or_default();
    let partitions = PARTITIONS.to_string();
    let common = [
        "--redis-url",
        redis_url,
        "--partitions",
        partitions.as_str(),
    ];

    let scheduler = Served::start("scheduler", &common);
    let mut gateway_args = common.to_vec();
    gateway_args.extend(["--messages-out", out.to_str().unwrap_or_default()]);
    let gateway = Served::start("gateway", &gateway_args);
    let gateway_url = gateway.url();
    let ingest = Served::start("ingest", &common);
    let mut journey_args = common.to_vec();
    journey_args.extend(["--journeys", journeys]);
    let journey = Served::start("journey", &journey_args);
    let journeys_url = journey.url();
    let sched_url = scheduler.url();
    let user_state = |n: usize| {
        let instance = format!("us-{n}");
        let mut args = common.to_vec();
        args.extend([
            "--scheduler-url",
            sched_url.as_str(),
            "--gateway-url",
            gateway_url.as_str(),
            "--journeys-url",
            journeys_url.as_str(),
            "--lease-ttl-ms",
            "1500",
            "--instance",
        ]);
        args.push(instance.as_str());
        Served::start("user-state", &args)
    };
    let mut instances: Vec<Served> = (0..3).map(user_state).collect();

    // Every user adds to the cart; odd users never order, so their reminder is due two
    // seconds later; even users order right after the add. A user's events go in one batch,
    // stamped when the batch is sent, so the order is in before the reminder is due.
    let mut client = IngestClient::connect(ingest.url())
        .await
        .expect("connect ingest");
    let users_per_batch = 10;
    let mut acked = 0;
    for first in (0..USERS).step_by(users_per_batch) {
        if first == USERS / 2 {
            // Half way: one instance dies without draining.
            instances[1].kill();
        }
        let base = wall_clock_ms();
        let mut events = Vec::new();
        for u in first..first + users_per_batch {
            let user = format!("user-{u}");
            for i in 0..EVENTS_PER_USER {
                let at = base + i as i64;
                let id = format!("{user}-{i}");
                let name = format!("item-{u}");
                events.push(match i {
                    3 => track(&user, "Product Added", &id, at, json!({"name": name})),
                    4 if u % 2 == 0 => track(&user, "Order Completed", &id, at, json!({})),
                    _ => track(&user, "Product Viewed", &id, at, json!({"category": "c"})),
                });
            }
        }
        let r = client
            .batch(BatchRequest {
                workspace: "default".into(),
                events,
            })
            .await
            .expect("batch")
            .into_inner();
        acked += r.results.len();
    }
    assert_eq!(acked, USERS * EVENTS_PER_USER);

    // The dead instance comes back later and gets its share again.
    instances[1] = user_state(1);

    let conn = target.connect().await.expect("connect");
    let store = beckon_user_state::redis::RedisStateStore::new(conn, "bk", PARTITIONS);
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
    let wrong: Vec<_> = applied
        .iter()
        .filter(|(_, n)| **n != EVENTS_PER_USER as u64)
        .collect();
    assert!(
        all_applied,
        "events applied exactly once per user; off: {:?}",
        &wrong[..wrong.len().min(5)]
    );

    let reminders = |msgs: &[serde_json::Value]| -> HashSet<String> {
        msgs.iter()
            .filter(|m| m["journey"] == "cart-abandonment")
            .map(|m| m["user_id"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let complete = eventually(400, || reminders(&recorded(&out)).len() == USERS / 2).await;
    let msgs = recorded(&out);
    let got = reminders(&msgs);
    for u in (1..USERS).step_by(2) {
        let user = format!("user-{u}");
        if !got.contains(&user) {
            let state = store.load("default", &user).await.ok().flatten();
            eprintln!(
                "missing reminder for {user}: {:?}",
                state.map(|s| (s.journeys, s.decisions))
            );
        }
    }
    assert!(
        got.iter()
            .all(|u| u.trim_start_matches("user-").parse::<usize>().unwrap_or(0) % 2 == 1),
        "no reminder after an order"
    );

    assert!(complete, "every odd user got a reminder: {}", got.len());

    // Effects redone after the crash reach the gateway again, which delivers each key once.
    let mut keys = HashSet::new();
    let duplicates: Vec<_> = msgs
        .iter()
        .filter(|m| !keys.insert(m["idempotency_key"].as_str().unwrap_or_default().to_owned()))
        .collect();
    assert!(duplicates.is_empty(), "delivered twice: {duplicates:?}");
}
