//! `beckon_users_hibernated`, per partition, as Prometheus scrapes it from a running `beckon
//! serve all`: users idle past the hibernation period (in event time) are counted, and the
//! user still active is not.

mod support;

use beckon_core::partition::partition_of;
use beckon_proto::v1::TrackRequest;
use beckon_proto::v1::ingest_client::IngestClient;
use prometheus_parse::{Scrape, Value};
use serde_json::json;
use support::{Served, eventually, http_get, track, wall_clock_ms};

/// The gauge's value per `partition` label, with the live actors, from `/metrics`.
fn scrape(served: &Served) -> (Vec<(String, f64)>, Option<f64>) {
    let addr = served
        .admin
        .as_deref()
        .expect("started with --admin-listen");
    let response = http_get(addr, "/metrics");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let samples = Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text format")
        .samples;
    let number = |v: &Value| match v {
        Value::Gauge(v) | Value::Untyped(v) | Value::Counter(v) => Some(*v),
        _ => None,
    };
    let mut hibernated: Vec<(String, f64)> = samples
        .iter()
        .filter(|s| s.metric == "beckon_users_hibernated")
        .filter_map(|s| Some((s.labels.get("partition")?.to_string(), number(&s.value)?)))
        .collect();
    hibernated.sort_by(|a, b| a.0.cmp(&b.0));
    let live = samples
        .iter()
        .find(|s| s.metric == "beckon_actors_live")
        .and_then(|s| number(&s.value));
    (hibernated, live)
}

#[tokio::test]
async fn hibernated_users_are_counted_per_partition() {
    let served = Served::start(
        "all",
        &[
            "--partitions",
            "2",
            "--hibernate-after-ms",
            "60000",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    );
    let mut ingest = IngestClient::connect(served.url()).await.expect("connect");

    // Three users act ten minutes ago; later users act now, which moves the partitions' time
    // past the others' hibernation period. Each partition gets a late user, so each one
    // sweeps its idle users.
    let then = wall_clock_ms() - 600_000;
    let mut events: Vec<_> = ["ann", "bob", "cy"]
        .iter()
        .map(|u| track(u, "App Opened", &format!("{u}-1"), then, json!({})))
        .collect();
    for partition in 0..2 {
        let user = (0..)
            .map(|i| format!("late-{i}"))
            .find(|u| partition_of("default", u, 2) == partition)
            .unwrap_or_default();
        let at = wall_clock_ms();
        events.push(track(&user, "App Opened", &user, at, json!({})));
    }
    for event in events {
        let ack = ingest
            .track(TrackRequest {
                workspace: "default".into(),
                event: Some(event),
            })
            .await
            .expect("accepted")
            .into_inner();
        assert!(ack.appended);
    }

    // The early users hibernate once a later batch has moved time on; the late ones stay
    // live. Which partition an early user lands in is the hash's choice; the sum is fixed.
    let counted = eventually(400, || {
        let (hibernated, _) = scrape(&served);
        hibernated.iter().map(|(_, n)| n).sum::<f64>() == 3.0
    })
    .await;
    let (hibernated, live) = scrape(&served);
    assert!(counted, "hibernated per partition: {hibernated:?}");
    let partitions: Vec<&str> = hibernated.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(partitions, ["0", "1"], "one series per partition");
    assert!(live.is_some_and(|n| n >= 1.0), "live actors: {live:?}");
}
