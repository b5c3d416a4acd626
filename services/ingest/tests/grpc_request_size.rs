//! The request size limit, through a real Ingest server on loopback: a batch of 1,000 events
//! just under the 32 KiB event limit is taken whole, and a request past the limit is refused
//! as an invalid argument naming `events` (or `event` for a single event) and the limit.

mod support;

use std::sync::Arc;

use beckon_core::{Clock, Ts, VirtualClock};
use beckon_ingest::endpoint::MAX_REQUEST_BYTES;
use beckon_ingest::grpc::{IngestService, MAX_BATCH};
use beckon_ingest::log::{EventLog, MemoryLog};
use beckon_ingest::segment::MAX_EVENT_BYTES;
use beckon_proto::convert::{json_to_struct, millis_to_timestamp};
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::{BatchRequest, Event, TrackRequest, batch_result};
use serde_json::json;
use tonic::transport::Channel;

const NOW: i64 = 1_780_000_000_000;

/// An event whose encoded size is `blob` bytes of property and about 100 more.
fn event(i: usize, blob: usize) -> Event {
    let mut properties = serde_json::Map::new();
    properties.insert("blob".into(), json!("x".repeat(blob)));
    Event {
        r#type: "track".into(),
        message_id: format!("m{i}"),
        user_id: format!("u{i}"),
        event: "Bulk Import".into(),
        timestamp: Some(millis_to_timestamp(NOW)),
        properties: Some(json_to_struct(&properties)),
        ..Event::default()
    }
}

async fn serve() -> (IngestClient<Channel>, Arc<dyn EventLog>) {
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new(Ts(NOW)));
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::new(clock.clone(), 4, 1_000_000));
    let service = IngestService::new(log.clone(), 4096).with_clock(clock);
    (support::serve_ingest(service).await, log)
}

#[tokio::test]
async fn a_full_batch_of_large_events_is_taken_and_a_larger_request_refused() {
    let (mut client, _log) = serve().await;

    // 1,000 events each a little under the event limit: over 30 MiB in one request.
    let blob = MAX_EVENT_BYTES - 200;
    let events: Vec<Event> = (0..MAX_BATCH).map(|i| event(i, blob)).collect();
    assert!(
        events
            .iter()
            .all(|e| prost::Message::encoded_len(e) <= MAX_EVENT_BYTES)
    );
    let request = BatchRequest {
        workspace: "w".into(),
        events,
    };
    let size = prost::Message::encoded_len(&request);
    assert!(
        size > 30 * 1024 * 1024 && size <= MAX_REQUEST_BYTES,
        "{size}"
    );
    let answer = client.batch(request).await.expect("taken").into_inner();
    assert_eq!(answer.results.len(), MAX_BATCH);
    let accepted = answer
        .results
        .iter()
        .filter(|r| matches!(r.outcome, Some(batch_result::Outcome::Ack(_))))
        .count();
    assert_eq!(accepted, MAX_BATCH);

    // The same number of events, each past the event limit: the request is too large to
    // read, and is refused whole in the words of the other limits.
    let events: Vec<Event> = (0..MAX_BATCH)
        .map(|i| event(i + MAX_BATCH, MAX_EVENT_BYTES + 100))
        .collect();
    let request = BatchRequest {
        workspace: "w".into(),
        events,
    };
    let size = prost::Message::encoded_len(&request);
    let status = client.batch(request).await.expect_err("too large");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "events: the request is {size} bytes; at most {MAX_REQUEST_BYTES} \
             (1000 events of at most 32768 bytes)"
        )
    );

    // A single event past the request limit is named as the event.
    let request = TrackRequest {
        workspace: "w".into(),
        event: Some(event(0, MAX_REQUEST_BYTES)),
    };
    let size = prost::Message::encoded_len(&request);
    let status = client.track(request).await.expect_err("too large");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "event: the request is {size} bytes; at most {MAX_REQUEST_BYTES} \
             (1000 events of at most 32768 bytes)"
        )
    );
}
