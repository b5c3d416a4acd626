//! A timestamp outside the calendar is refused by name over gRPC, by a running `beckon serve
//! all`: `Track` answers INVALID_ARGUMENT, a `Batch` refuses only the bad event while the
//! others that came with it are appended, and the scheduler refuses a timer due at such a time.

mod support;

use beckon_proto::v1::batch_result;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::scheduler_client::SchedulerClient;
use beckon_proto::v1::{BatchRequest, PendingRequest, SetTimersRequest, Timer, TrackRequest};
use serde_json::json;
use support::{Served, track, wall_clock_ms};

/// Seconds a client would send if it put nanoseconds where seconds go.
const NANOS_AS_SECONDS: i64 = 1_764_000_000_000_000_000;

fn far_off(user: &str, id: &str, seconds: i64) -> beckon_proto::v1::Event {
    let mut event = track(user, "App Opened", id, 0, json!({}));
    if let Some(ts) = event.timestamp.as_mut() {
        ts.seconds = seconds;
    }
    event
}

#[tokio::test]
async fn out_of_range_timestamps_are_refused_by_field() {
    let served = Served::start("all", &["--partitions", "4"]);
    let mut ingest = IngestClient::connect(served.url()).await.expect("connect");

    for seconds in [NANOS_AS_SECONDS, -NANOS_AS_SECONDS, i64::MAX, i64::MIN] {
        let status = ingest
            .track(TrackRequest {
                workspace: "default".into(),
                event: Some(far_off("u1", "far", seconds)),
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let message = status.message();
        assert!(message.contains("event.timestamp"), "{message}");
        assert!(message.contains("out of range"), "{message}");
        assert!(message.contains(&seconds.to_string()), "{message}");
    }

    let mut bad_nanos = track("u1", "App Opened", "nanos", wall_clock_ms(), json!({}));
    if let Some(ts) = bad_nanos.timestamp.as_mut() {
        ts.nanos = -1;
    }
    let status = ingest
        .track(TrackRequest {
            workspace: "default".into(),
            event: Some(bad_nanos),
        })
        .await
        .expect_err("refused");
    assert!(status.message().contains("event.timestamp"), "{status:?}");
    assert!(status.message().contains("nanos -1"), "{status:?}");

    // In a batch, the bad event is answered on its own and the good ones go in.
    let now = wall_clock_ms();
    let events = vec![
        track("u2", "App Opened", "b0", now, json!({})),
        far_off("u2", "b1", NANOS_AS_SECONDS),
        track("u3", "App Opened", "b2", now, json!({})),
        far_off("u3", "b3", -NANOS_AS_SECONDS),
    ];
    let results = ingest
        .batch(BatchRequest {
            workspace: "default".into(),
            events,
        })
        .await
        .expect("batch answered")
        .into_inner()
        .results;
    assert_eq!(results.len(), 4);

    for (i, result) in results.iter().enumerate() {
        match (i, &result.outcome) {
            (0 | 2, Some(batch_result::Outcome::Ack(ack))) => {
                assert!(ack.appended, "{i}: {ack:?}");
                assert_eq!(ack.message_id, format!("b{i}"));
            }
            (1 | 3, Some(batch_result::Outcome::Rejected(v))) => {
                assert_eq!(v.field, format!("events[{i}].timestamp"));
                assert!(v.reason.starts_with("bad_timestamp"), "{v:?}");
                assert!(v.reason.contains("out of range"), "{v:?}");
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_timer_due_outside_the_calendar_is_refused_by_field() {
    let served = Served::start("all", &["--partitions", "4"]);
    let mut scheduler = SchedulerClient::connect(served.url())
        .await
        .expect("connect");

    let mut due = beckon_proto::convert::millis_to_timestamp(wall_clock_ms());
    due.seconds = NANOS_AS_SECONDS;
    let timer = Timer {
        id: "t1".into(),
        user_id: "u1".into(),
        due: Some(due),
        journey: "j".into(),
        ..Timer::default()
    };
    let status = scheduler
        .set_timers(SetTimersRequest {
            workspace: "default".into(),
            timers: vec![timer],
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("timers.due"), "{status:?}");
    assert!(status.message().contains("out of range"), "{status:?}");

    let pending = scheduler
        .pending(PendingRequest {
            workspace: "default".into(),
            partitions: Vec::new(),
        })
        .await
        .expect("pending")
        .into_inner()
        .pending;
    assert_eq!(pending, 0, "nothing was scheduled");
}
