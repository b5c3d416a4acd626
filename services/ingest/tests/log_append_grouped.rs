//! Appends sent together (a batch, or many calls at once) are grouped per partition, or per
//! workspace on a single server, and each is still answered on its own: in order within a
//! partition, a repeated message id appended once even when both copies travel in the same
//! group, every answer its own offset.

mod support;

use std::collections::HashMap;

use beckon_core::{Duration, Ts, VirtualClock};
use beckon_ingest::log::{Consumer, EventLog, LogConfig, RedisLog};
use beckon_testkit::RedisServer;
use support::{PARTITIONS, event, memory_log, redis_log, spanning_redis_log};

async fn batch_keeps_order_and_dedup(log: &dyn EventLog) {
    // Three users over the partitions; "m-3" comes twice in the same batch.
    let mut events = Vec::new();
    for i in 0..30 {
        let user = format!("u{}", i % 3);
        events.push(event(&user, &format!("m-{i}"), 1_000 + i));
    }
    events.push(event("u0", "m-3", 1_000));

    let answers = log.append_all("w", &events, None).await;
    assert_eq!(answers.len(), events.len());
    let answers: Vec<_> = answers.into_iter().map(|a| a.expect("appended")).collect();
    assert!(answers[..30].iter().all(|a| !a.duplicate));
    assert!(answers[30].duplicate, "the repeat in the same batch");
    assert_eq!(answers[30].offset, answers[3].offset);

    // Each partition holds its users' events in the order sent, nothing twice.
    let mut expected: HashMap<u32, Vec<String>> = HashMap::new();
    for (e, a) in events.iter().zip(&answers).take(30) {
        expected
            .entry(a.partition)
            .or_default()
            .push(e.message_id.clone());
    }
    for p in 0..PARTITIONS {
        let reader = Consumer::new("w", p, "user-state", "a");
        log.ensure_group(&reader).await.expect("group");
        let read = log.read(&reader, 100, Duration(0)).await.expect("read");
        let ids: Vec<String> = read
            .iter()
            .map(|entry| entry.event().expect("event").message_id.clone())
            .collect();
        assert_eq!(
            ids,
            expected.remove(&p).unwrap_or_default(),
            "partition {p}"
        );
    }
}

#[tokio::test]
async fn redis_log_appends_a_batch_in_order_once_each() {
    let server = RedisServer::start().expect("redis");
    batch_keeps_order_and_dedup(&redis_log(&server).await).await;
}

#[tokio::test]
async fn spanning_redis_log_appends_a_batch_in_order_once_each() {
    let server = RedisServer::start().expect("redis");
    batch_keeps_order_and_dedup(&spanning_redis_log(&server).await).await;
}

#[tokio::test]
async fn memory_log_appends_a_batch_in_order_once_each() {
    batch_keeps_order_and_dedup(&memory_log(&VirtualClock::new(Ts(0)))).await;
}

#[tokio::test]
async fn many_concurrent_appends_each_get_their_own_answer() {
    let server = RedisServer::start().expect("redis");
    concurrent_appends_answered_each(&redis_log(&server).await).await;
}

#[tokio::test]
async fn many_concurrent_appends_across_partitions_each_get_their_own_answer() {
    let server = RedisServer::start().expect("redis");
    concurrent_appends_answered_each(&spanning_redis_log(&server).await).await;
}

async fn concurrent_appends_answered_each(log: &dyn EventLog) {
    // Each id twice, by the same user (dedup is per user's partition).
    let events: Vec<_> = (0..500)
        .map(|i| {
            let k = i % 250;
            event(&format!("u{}", k % 7), &format!("c-{k}"), i)
        })
        .collect();

    let answers = futures::future::join_all(events.iter().map(|e| log.append("w", e, None))).await;
    let answers: Vec<_> = answers.into_iter().map(|a| a.expect("appended")).collect();

    // Each of the 250 ids is appended once; its repeat names the same offset.
    let fresh = answers.iter().filter(|a| !a.duplicate).count();
    assert_eq!(fresh, 250);
    for i in 0..250 {
        assert_eq!(answers[i].offset, answers[i + 250].offset, "id c-{i}");
        assert_eq!(answers[i].partition, answers[i + 250].partition);
    }
    // Offsets are per partition's stream: two partitions may hand out the same one.
    let mut offsets: Vec<_> = answers[..250]
        .iter()
        .map(|a| (a.partition, &a.offset))
        .collect();
    offsets.sort();
    offsets.dedup();
    assert_eq!(
        offsets.len(),
        250,
        "every fresh append has an offset of its own"
    );
}

/// Script calls the server has run since its statistics were reset.
async fn script_calls(server: &RedisServer) -> u64 {
    let client = redis::Client::open(server.url()).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut con)
        .await
        .expect("info");
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// A batch over many partitions: one lane per partition makes a call per partition at
/// least, one shared lane a few calls in all.
#[tokio::test]
async fn one_call_carries_many_partitions_on_a_single_server() {
    let events: Vec<_> = (0..300)
        .map(|i| event(&format!("u{}", i % 60), &format!("s-{i}"), i))
        .collect();

    for spanning in [false, true] {
        let server = RedisServer::start().expect("redis");
        let con = redis::Client::open(server.url())
            .expect("client")
            .get_connection_manager()
            .await
            .expect("connect");
        let config = LogConfig {
            partitions: 64,
            ..support::config(server.namespace())
        };
        let log = RedisLog::new(con, config);
        let log = if spanning {
            log.spanning_partitions()
        } else {
            log
        };
        let answers = log.append_all("w", &events, None).await;
        let partitions: std::collections::BTreeSet<u32> = answers
            .iter()
            .map(|a| a.as_ref().expect("appended").partition)
            .collect();
        assert!(partitions.len() > 20, "{} partitions", partitions.len());

        let calls = script_calls(&server).await;
        if spanning {
            // The first append may go alone; the rest fill calls of up to 256.
            assert!(
                calls <= 4,
                "{calls} calls for {} partitions",
                partitions.len()
            );
        } else {
            assert!(calls >= partitions.len() as u64, "{calls} calls");
        }
    }
}
