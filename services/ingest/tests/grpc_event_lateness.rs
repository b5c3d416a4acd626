//! The lateness limit, through a real Ingest server on loopback with a virtual clock: off by
//! default, an event of any age is taken; set, an event further behind the server's clock is
//! refused by field with its reason, and the rest of a batch still goes in. The gateway's
//! reports, on the gateway's own call, are taken at any age.

use std::sync::Arc;

use beckon_core::{Clock, Duration, Ts, VirtualClock};
use beckon_ingest::grpc::IngestService;
use beckon_ingest::log::{EventLog, MemoryLog};
use beckon_proto::convert::millis_to_timestamp;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::ingest_server::IngestServer;
use beckon_proto::v1::{AppendOutcomeRequest, BatchRequest, Event, TrackRequest, batch_result};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};

/// 2026-05-28T20:26:40.000Z.
const NOW: i64 = 1_780_000_000_000;
/// 2020-01-01T00:00:00.000Z.
const OLD: i64 = 1_577_836_800_000;
const HOUR: i64 = 3_600_000;

fn track(id: &str, at_ms: i64) -> Event {
    Event {
        r#type: "track".into(),
        message_id: id.into(),
        user_id: "u1".into(),
        event: "Product Added".into(),
        timestamp: Some(millis_to_timestamp(at_ms)),
        ..Event::default()
    }
}

async fn serve(lateness: Option<Duration>) -> IngestClient<Channel> {
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new(Ts(NOW)));
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::new(clock.clone(), 4, 1_000));
    let service = IngestService::new(log, 64)
        .with_clock(clock)
        .with_max_lateness(lateness);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let server = Server::builder()
        .add_service(IngestServer::new(service))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    IngestClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

async fn send(client: &mut IngestClient<Channel>, event: Event) -> Result<(), tonic::Status> {
    let request = TrackRequest {
        workspace: "w".into(),
        event: Some(event),
    };
    client.track(request).await.map(|_| ())
}

#[tokio::test]
async fn by_default_an_event_of_any_age_is_taken() {
    let mut client = serve(None).await;
    send(&mut client, track("old", OLD)).await.expect("taken");
    send(&mut client, track("epoch", 0)).await.expect("taken");
}

#[tokio::test]
async fn with_a_limit_an_older_event_is_refused_by_field_and_loses_nothing_else() {
    let mut client = serve(Some(Duration(24 * HOUR))).await;

    // Exactly the allowed lateness behind is taken; a millisecond more is not.
    send(&mut client, track("edge", NOW - 24 * HOUR))
        .await
        .expect("at the limit");
    let status = send(&mut client, track("old", OLD))
        .await
        .expect_err("too old");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "invalid event: bad_timestamp: event.timestamp: \"2020-01-01T00:00:00.000Z\" is more \
         than 1d behind the server's clock (2026-05-28T20:26:40.000Z); events may be at most 1d \
         late"
    );

    let batch = BatchRequest {
        workspace: "w".into(),
        events: vec![track("b0", NOW - HOUR), track("b1", NOW - 24 * HOUR - 1)],
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
        panic!("refused: {:?}", results[1]);
    };
    assert_eq!(v.field, "events[1].timestamp");
    assert!(v.reason.contains("is more than 1d behind"), "{v:?}");
}

/// A delivery outcome as a gateway reports it: one of its event names, about the message
/// with this idempotency key, at the time it happened.
fn outcome(id: &str, name: &str, at_ms: i64) -> Event {
    let properties = serde_json::json!({
        "idempotency_key": "w:u1:cart:0:nudge:1",
        "journey": "cart",
        "step": "nudge",
        "channel": "push",
        "reason": "gave up after 8 attempts: http 503",
    });
    Event {
        event: name.into(),
        properties: Some(beckon_proto::convert::json_to_struct(
            properties.as_object().expect("object"),
        )),
        ..track(id, at_ms)
    }
}

async fn report(client: &mut IngestClient<Channel>, event: Event) -> Result<(), tonic::Status> {
    let request = AppendOutcomeRequest {
        workspace: "w".into(),
        event: Some(event),
    };
    client.append_outcome(request).await.map(|_| ())
}

#[tokio::test]
async fn the_gateways_late_outcomes_are_taken_on_its_own_call_whatever_the_limit() {
    let mut client = serve(Some(Duration(60_000))).await;

    // Given up on after a day of retries, delivered as a provider's callback said, opened
    // from an app's offline queue: each reported at the time it happened.
    for (id, name) in [
        ("gw-failed", "Message Failed"),
        ("gw-delivered", "Message Delivered"),
        ("gw-opened", "Message Opened"),
        ("gw-withdrawn", "Message Withdrawn"),
        ("gw-unsubscribed", "Message Unsubscribed"),
    ] {
        report(&mut client, outcome(id, name, NOW - 26 * HOUR))
            .await
            .unwrap_or_else(|s| panic!("{name} refused: {s:?}"));
    }

    // The exemption belongs to the call, not to the name: an unsubscribe a client sends
    // itself, which the public calls take, is held to the limit like any other event.
    let status = send(
        &mut client,
        outcome("client-unsub", "Message Unsubscribed", NOW - 26 * HOUR),
    )
    .await
    .expect_err("too old");
    assert!(
        status.message().contains("behind the server's clock"),
        "{status:?}"
    );
    send(&mut client, track("late", NOW - 2 * HOUR))
        .await
        .expect_err("too old");

    // The future is no more open to the gateway's reports than to other events.
    let ahead = outcome("gw-ahead", "Message Opened", NOW + 48 * HOUR);
    let status = report(&mut client, ahead).await.expect_err("too far ahead");
    assert!(
        status.message().contains("ahead of the server's clock"),
        "{status:?}"
    );
}
