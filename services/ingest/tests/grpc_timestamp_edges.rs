//! Event times at the edges, through a real Ingest server on loopback with a virtual clock:
//! before 1970, past the calendar, and further ahead of the server's clock than the allowed
//! skew are refused by field with their reason, and the rest of a batch still goes in.

use std::sync::Arc;

use beckon_core::{Clock, Duration, Ts, VirtualClock};
use beckon_ingest::grpc::{IngestService, MAX_FUTURE_SKEW};
use beckon_ingest::log::{EventLog, MemoryLog};
use beckon_proto::convert::millis_to_timestamp;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::ingest_server::IngestServer;
use beckon_proto::v1::{BatchRequest, Event, TrackRequest, batch_result};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};

const NOW: i64 = 1_780_000_000_000;
const RANGE: &str = "the supported range is 1970-01-01T00:00:00.000Z to 9999-12-30T22:00:00.999Z";

fn track(id: &str, at_ms: i64) -> Event {
    Event {
        r#type: "track".into(),
        message_id: id.into(),
        user_id: "u1".into(),
        event: "App Opened".into(),
        timestamp: Some(millis_to_timestamp(at_ms)),
        ..Event::default()
    }
}

async fn serve(clock: &VirtualClock) -> IngestClient<Channel> {
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::new(clock.clone(), 4, 1_000));
    let service = IngestService::new(log, 64).with_clock(clock);
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

async fn refused(client: &mut IngestClient<Channel>, event: Event) -> tonic::Status {
    client
        .track(TrackRequest {
            workspace: "w".into(),
            event: Some(event),
        })
        .await
        .expect_err("refused")
}

#[tokio::test]
async fn edge_times_are_refused_by_field_and_lose_nothing_else() {
    let clock = VirtualClock::new(Ts(NOW));
    let mut client = serve(&clock).await;
    let skew = MAX_FUTURE_SKEW.as_millis();

    // Year 0, the instant before 1970, and a time past the calendar.
    let year_zero = -62_167_219_200_000;
    for (at, why) in [
        (
            year_zero,
            "\"0000-01-01T00:00:00.000Z\" is before 1970-01-01T00:00:00.000Z",
        ),
        (
            -1,
            "\"1969-12-31T23:59:59.999Z\" is before 1970-01-01T00:00:00.000Z",
        ),
    ] {
        let status = refused(&mut client, track("old", at)).await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let expected = format!("invalid event: bad_timestamp: event.timestamp: {why}; {RANGE}");
        assert_eq!(status.message(), expected);
    }
    let mut past_calendar = track("late", 0);
    past_calendar.timestamp = Some(prost_types::Timestamp {
        seconds: 253_402_300_799, // 9999-12-31T23:59:59Z
        nanos: 999_000_000,
    });
    let status = refused(&mut client, past_calendar).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("event.timestamp"), "{status:?}");
    assert!(status.message().contains("out of range"), "{status:?}");

    // Exactly the allowed skew ahead is taken; a millisecond more is not.
    let ack = client
        .track(TrackRequest {
            workspace: "w".into(),
            event: Some(track("edge", NOW + skew)),
        })
        .await
        .expect("at the limit")
        .into_inner();
    assert!(ack.appended);
    let status = refused(&mut client, track("ahead", NOW + skew + 1)).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let message = status.message();
    assert!(message.contains("event.timestamp"), "{message}");
    assert!(
        message.contains("more than 1d ahead of the server's clock"),
        "{message}"
    );

    // The limit follows the server's clock: once it moves on, the same event is taken.
    clock.advance_to(Ts(NOW + 1));
    let ack = client
        .track(TrackRequest {
            workspace: "w".into(),
            event: Some(track("ahead", NOW + skew + 1)),
        })
        .await
        .expect("within the skew now")
        .into_inner();
    assert!(ack.appended);

    // In a batch, each bad time is answered on its own and the good events go in.
    let now = NOW + 1;
    let events = vec![
        track("b0", now),
        track("b1", year_zero),
        track("b2", now - 1_000),
        track("b3", now + skew + Duration(1).as_millis()),
        track("b4", now + skew),
    ];
    let results = client
        .batch(BatchRequest {
            workspace: "w".into(),
            events,
        })
        .await
        .expect("batch answered")
        .into_inner()
        .results;
    assert_eq!(results.len(), 5);
    for (i, result) in results.iter().enumerate() {
        match (i, &result.outcome) {
            (0 | 2 | 4, Some(batch_result::Outcome::Ack(ack))) => {
                assert!(ack.appended, "{i}: {ack:?}");
                assert_eq!(ack.message_id, format!("b{i}"));
            }
            (1, Some(batch_result::Outcome::Rejected(v))) => {
                assert_eq!(v.field, "events[1].timestamp");
                assert!(v.reason.starts_with("bad_timestamp: "), "{v:?}");
                assert!(v.reason.contains("before 1970-01-01"), "{v:?}");
            }
            (3, Some(batch_result::Outcome::Rejected(v))) => {
                assert_eq!(v.field, "events[3].timestamp");
                assert!(v.reason.contains("ahead of the server's clock"), "{v:?}");
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
}
