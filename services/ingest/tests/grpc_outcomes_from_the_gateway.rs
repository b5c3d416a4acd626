//! What became of a message is for the gateway to say. Through a real Ingest server on
//! loopback: the public calls (`Track`, `Batch`) refuse the names of the gateway's reports,
//! with or without a message's key, in any case and with white space around them, naming the
//! field and the reason, and still take an unsubscribe, which is the user's word whoever
//! carries it. The gateway's own call (`AppendOutcome`) takes those reports and nothing else.

mod support;

use std::sync::Arc;

use beckon_core::{Clock, Duration, Ts, VirtualClock};
use beckon_ingest::grpc::IngestService;
use beckon_ingest::log::{Consumer, EventLog, MemoryLog};
use beckon_proto::convert::{json_to_struct, millis_to_timestamp};
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::{AppendOutcomeRequest, BatchRequest, Event, TrackRequest, batch_result};
use serde_json::json;
use tonic::transport::Channel;

/// 2026-05-28T20:26:40.000Z.
const NOW: i64 = 1_780_000_000_000;

/// Every name the gateway reports under, but the unsubscribe.
const GATEWAY_ONLY: [&str; 9] = [
    "Message Sent",
    "Message Failed",
    "Message Deferred",
    "Deferred Message Sent",
    "Message Withdrawn",
    "Device Token Invalid",
    "Message Delivered",
    "Message Opened",
    "Message Clicked",
];

/// A track event named `name`, about a message of the journey `cart` when `keyed`.
fn named(id: &str, name: &str, keyed: bool) -> Event {
    let mut properties = json!({"journey": "cart", "step": "nudge", "channel": "push"});
    if keyed {
        properties["idempotency_key"] = json!("w:u1:cart:0:nudge:1");
    }
    Event {
        r#type: "track".into(),
        message_id: id.into(),
        user_id: "u1".into(),
        event: name.into(),
        timestamp: Some(millis_to_timestamp(NOW - 1_000)),
        properties: properties.as_object().map(json_to_struct),
        ..Event::default()
    }
}

async fn serve() -> (IngestClient<Channel>, Arc<dyn EventLog>) {
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new(Ts(NOW)));
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::new(clock.clone(), 4, 1_000));
    let service = IngestService::new(log.clone(), 64).with_clock(clock);
    (support::serve_ingest(service).await, log)
}

async fn track(client: &mut IngestClient<Channel>, event: Event) -> Result<bool, tonic::Status> {
    let request = TrackRequest {
        workspace: "w".into(),
        event: Some(event),
    };
    client.track(request).await.map(|a| a.into_inner().appended)
}

async fn report(client: &mut IngestClient<Channel>, event: Event) -> Result<bool, tonic::Status> {
    let request = AppendOutcomeRequest {
        workspace: "w".into(),
        event: Some(event),
    };
    client
        .append_outcome(request)
        .await
        .map(|a| a.into_inner().appended)
}

#[tokio::test]
async fn a_client_cannot_report_what_became_of_a_message() {
    let (mut client, log) = serve().await;

    for (n, name) in GATEWAY_ONLY.into_iter().enumerate() {
        for keyed in [true, false] {
            let status = track(&mut client, named(&format!("f{n}{keyed}"), name, keyed))
                .await
                .expect_err("a forged report");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert_eq!(
                status.message(),
                format!(
                    "invalid event: bad_field: event.event: {name:?} is reserved for the \
                     gateway's reports of what became of a message; an app or a provider \
                     reports an outcome through the Gateway's ReportOutcome call"
                )
            );
        }
    }

    // In a batch, the forged report alone is refused, by its index; its neighbours go in.
    let batch = BatchRequest {
        workspace: "w".into(),
        events: vec![
            named("b0", "Product Viewed", false),
            named("b1", "Message Opened", true),
            named("b2", "Message Unsubscribed", true),
        ],
    };
    let results = client
        .batch(batch)
        .await
        .expect("batch")
        .into_inner()
        .results;
    assert!(matches!(
        results[0].outcome,
        Some(batch_result::Outcome::Ack(_))
    ));
    let Some(batch_result::Outcome::Rejected(v)) = &results[1].outcome else {
        panic!("a forged report taken: {results:?}");
    };
    assert_eq!(v.field, "events[1].event");
    assert!(
        v.reason
            .starts_with("bad_field: \"Message Opened\" is reserved"),
        "{v:?}"
    );
    assert!(matches!(
        results[2].outcome,
        Some(batch_result::Outcome::Ack(_))
    ));

    // An unsubscribe is the user's word, whoever carries it.
    assert!(
        track(&mut client, named("u", "Message Unsubscribed", false))
            .await
            .expect("taken")
    );

    // Nothing forged reached the log.
    let mut names = Vec::new();
    for partition in 0..4 {
        let reader = Consumer::new("w", partition, "check", "c1");
        log.ensure_group(&reader).await.expect("group");
        let entries = log.read(&reader, 100, Duration(0)).await.expect("read");
        names.extend(
            entries
                .iter()
                .filter_map(|e| e.event().map(|e| e.name.clone())),
        );
    }
    assert_eq!(
        names,
        [
            "Product Viewed",
            "Message Unsubscribed",
            "Message Unsubscribed"
        ]
    );
}

#[tokio::test]
async fn a_name_that_reads_as_a_report_is_refused_as_that_report() {
    let (mut client, _log) = serve().await;

    for (n, (name, reads_as)) in [
        ("message opened", "Message Opened"),
        ("Message Opened ", "Message Opened"),
        (" MESSAGE FAILED", "Message Failed"),
        ("device token invalid\u{a0}", "Device Token Invalid"),
    ]
    .into_iter()
    .enumerate()
    {
        let status = track(&mut client, named(&format!("r{n}"), name, false))
            .await
            .expect_err("a report's name in other letters");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert_eq!(
            status.message(),
            format!(
                "invalid event: bad_field: event.event: {name:?} reads as {reads_as:?}, which is \
                 reserved for the gateway's reports of what became of a message; an app or a \
                 provider reports an outcome through the Gateway's ReportOutcome call"
            )
        );
    }

    // Other words are an ordinary event's, and an unsubscribe is anyone's in any case.
    for (n, name) in ["Message Opened Twice", "message unsubscribed"]
        .into_iter()
        .enumerate()
    {
        let taken = track(&mut client, named(&format!("o{n}"), name, false)).await;
        assert!(taken.is_ok_and(|appended| appended), "{name}");
    }
}

#[tokio::test]
async fn the_gateways_call_takes_its_reports_and_nothing_else() {
    let (mut client, _log) = serve().await;

    for (n, name) in GATEWAY_ONLY
        .into_iter()
        .chain(["Message Unsubscribed"])
        .enumerate()
    {
        let taken = report(&mut client, named(&format!("gw{n}"), name, true))
            .await
            .unwrap_or_else(|s| panic!("{name} refused: {s:?}"));
        assert!(taken, "{name}");
    }

    let status = report(&mut client, named("other", "Product Viewed", true))
        .await
        .expect_err("not a report");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with(
            "invalid event: bad_field: event.event: \"Product Viewed\" is not a report of what \
             became of a message; AppendOutcome takes only those (Message Sent, "
        ),
        "{}",
        status.message()
    );

    let status = report(&mut client, named("unkeyed", "Message Failed", false))
        .await
        .expect_err("about no message");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "invalid event: bad_field: event.properties.idempotency_key: missing; a report names \
         the message it is about by its idempotency key"
    );

    // A report is a track event: an identify is refused as one of another type.
    let mut identify = named("id", "Message Sent", true);
    identify.r#type = "identify".into();
    let status = report(&mut client, identify)
        .await
        .expect_err("not a track");
    assert!(status.message().contains("event.type"), "{status:?}");
}
