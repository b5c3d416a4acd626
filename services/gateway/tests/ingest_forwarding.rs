//! Delivery events reach the Ingest service as `AppendOutcome` calls, retried while ingest
//! answers UNAVAILABLE; a stalled ingest fills the bounded queue and never holds up the sender.
//! A reported outcome is not queued: `ReportOutcome` answers OK only once ingest took its
//! event.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beckon_core::Props;
use beckon_gateway::Gateway;
use beckon_gateway::events::{self, EventSink};
use beckon_gateway::grpc::GatewayService;
use beckon_gateway::inbox::Inbox;
use beckon_gateway::ingest_sink::{self, IngestSink, IngestSinkConfig};
use beckon_proto::convert::{struct_to_json, timestamp_to_millis};
use beckon_proto::v1::ingest_server::{Ingest, IngestServer};
use beckon_proto::v1::{
    Ack, AliasRequest, AppendOutcomeRequest, BatchRequest, BatchResponse, IdentifyRequest,
    OutcomeRequest, TrackRequest,
};
use futures::FutureExt;
use serde_json::Value;
use support::{START, message, test_deps};
use tokio::sync::{mpsc, watch};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// An ingest that records what it receives; it can refuse the first calls or stall.
#[derive(Clone)]
struct FakeIngest {
    calls: Arc<AtomicUsize>,
    refuse_first: usize,
    received: Arc<Mutex<Vec<AppendOutcomeRequest>>>,
    arrived: mpsc::UnboundedSender<()>,
    stalled: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl Ingest for FakeIngest {
    async fn track(&self, _: Request<TrackRequest>) -> Result<Response<Ack>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn append_outcome(
        &self,
        req: Request<AppendOutcomeRequest>,
    ) -> Result<Response<Ack>, Status> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.refuse_first {
            return Err(Status::unavailable("warming up"));
        }
        let _ = self.arrived.send(());
        let mut stalled = self.stalled.clone();
        let _ = stalled.wait_for(|s| !*s).await;

        let req = req.into_inner();
        let message_id = req.event.as_ref().unwrap().message_id.clone();
        self.received.lock().unwrap().push(req);
        Ok(Response::new(Ack {
            message_id,
            appended: true,
            partition: 0,
            offset: "0-1".into(),
        }))
    }

    async fn identify(&self, _: Request<IdentifyRequest>) -> Result<Response<Ack>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn alias(&self, _: Request<AliasRequest>) -> Result<Response<Ack>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn batch(&self, _: Request<BatchRequest>) -> Result<Response<BatchResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

struct Running {
    fake: FakeIngest,
    arrived: mpsc::UnboundedReceiver<()>,
    stall: watch::Sender<bool>,
    url: String,
}

async fn start_ingest(refuse_first: usize, stalled: bool) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_ingest_on(listener, refuse_first, stalled)
}

fn start_ingest_on(
    listener: tokio::net::TcpListener,
    refuse_first: usize,
    stalled: bool,
) -> Running {
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let (stall, stalled) = watch::channel(stalled);
    let fake = FakeIngest {
        calls: Arc::default(),
        refuse_first,
        received: Arc::default(),
        arrived: arrived_tx,
        stalled,
    };
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = Server::builder()
        .add_service(IngestServer::new(fake.clone()))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    Running {
        fake,
        arrived,
        stall,
        url,
    }
}

fn sink(url: &str, config: IngestSinkConfig) -> (IngestSink, ingest_sink::Forwarder) {
    let t = test_deps();
    let client = ingest_sink::connect_lazy(url, Duration::from_secs(30)).unwrap();
    IngestSink::start(client, config, t.deps.sleeper.clone())
}

fn sent_event(key: &str) -> beckon_core::Event {
    let mut extra = Props::new();
    extra.insert("provider_id".into(), Value::from("rec-1"));
    let msg = message("push", key, "ada");
    events::delivery_event(events::MESSAGE_SENT, &msg, "apns", "", START, extra)
}

#[tokio::test]
async fn events_are_tracked_with_their_workspace_after_retries() {
    let mut ingest = start_ingest(2, false).await;
    let (sink, forwarder) = sink(&ingest.url, IngestSinkConfig::default());
    let event = sent_event("k-fwd-1");

    sink.emit("acme", event.clone()).await;
    ingest.arrived.recv().await.unwrap();
    drop(sink);
    forwarder.drained().await;

    assert_eq!(
        ingest.fake.calls.load(Ordering::SeqCst),
        3,
        "two refusals, one success"
    );
    let received = ingest.fake.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].workspace, "acme");
    let got = received[0].event.clone().unwrap();
    assert_eq!(got.r#type, "track");
    assert_eq!(got.event, "Message Sent");
    assert_eq!(got.message_id, event.message_id);
    assert_eq!(got.user_id, "ada");
    assert_eq!(
        timestamp_to_millis(got.timestamp.as_ref().unwrap()),
        START.0
    );
    let properties = struct_to_json(got.properties.as_ref().unwrap());
    assert_eq!(properties["channel"], "push");
    assert_eq!(properties["provider"], "apns");
    assert_eq!(properties["idempotency_key"], "k-fwd-1");
    assert_eq!(properties["version"], 3);
    assert!(got.traits.is_none());
}

#[tokio::test]
async fn a_stalled_ingest_never_blocks_the_sender() {
    let mut ingest = start_ingest(0, true).await;
    let config = IngestSinkConfig {
        queue: 2,
        concurrency: 1,
        ..IngestSinkConfig::default()
    };
    let (sink, forwarder) = sink(&ingest.url, config);

    // The first event is taken by the forwarder and stalls in ingest.
    sink.emit("acme", sent_event("k-stall-0")).await;
    ingest.arrived.recv().await.unwrap();

    // Every emit is ready at once, whether queued or dropped.
    for i in 1..=10 {
        let emitted = sink
            .emit("acme", sent_event(&format!("k-stall-{i}")))
            .now_or_never();
        assert!(emitted.is_some(), "emit {i} waited");
    }
    assert_eq!(sink.dropped(), 8, "two queued, the rest dropped");

    ingest.stall.send_replace(false);
    drop(sink);
    forwarder.drained().await;
    let keys: Vec<String> = ingest
        .fake
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|r| struct_to_json(r.event.as_ref().unwrap().properties.as_ref().unwrap()))
        .map(|p| p["idempotency_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["k-stall-0", "k-stall-1", "k-stall-2"]);
}

/// A stopping gateway asks how many events still wait, while its channels still hold the sink:
/// none when nothing was taken, each one queued or in a call otherwise, none once ingest took
/// them.
#[tokio::test]
async fn a_flush_counts_the_events_still_waiting_while_senders_live_on() {
    let mut ingest = start_ingest(0, true).await;
    let config = IngestSinkConfig {
        concurrency: 1,
        ..IngestSinkConfig::default()
    };
    let (sink, forwarder) = sink(&ingest.url, config);

    // The bound is never reached: with nothing taken, nothing waits.
    assert_eq!(forwarder.flush(Duration::from_secs(600)).await, 0);

    // One event stalls in ingest, one waits behind it.
    sink.emit("acme", sent_event("k-flush-0")).await;
    ingest.arrived.recv().await.unwrap();
    sink.emit("acme", sent_event("k-flush-1")).await;
    assert_eq!(forwarder.waiting(), 2);
    assert_eq!(forwarder.flush(Duration::from_millis(50)).await, 2);

    ingest.stall.send_replace(false);
    assert_eq!(forwarder.flush(Duration::from_secs(600)).await, 0);
    assert_eq!(ingest.fake.received.lock().unwrap().len(), 2);
    assert_eq!(sink.dropped(), 0);
}

/// With ingest down, an outcome report is answered UNAVAILABLE rather than acknowledged and
/// lost; the caller's retry, once ingest is back, is answered OK with the event it recorded.
#[tokio::test]
async fn an_outcome_ingest_cannot_take_is_refused_and_its_retry_recorded() {
    // A port nothing listens on until ingest comes back on it.
    let parked = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = parked.local_addr().unwrap();
    drop(parked);

    let t = test_deps();
    let (sink, _forwarder) = sink(&format!("http://{addr}"), IngestSinkConfig::default());
    let inbox = Arc::new(Inbox::new(
        t.deps.clock.clone(),
        beckon_core::Duration::hours(24),
        50,
    ));
    let service = GatewayService::new(Gateway::new(), inbox).with_outcomes(Arc::new(sink));
    let gateway = support::grpc::serve(service).await;
    let mut client = support::grpc::client(gateway).await;
    let unsubscribed = OutcomeRequest {
        workspace: "acme".into(),
        user_id: "ada".into(),
        message_key: "k-unsub-1".into(),
        outcome: "unsubscribed".into(),
        channel: "email".into(),
        ..Default::default()
    };

    let status = client
        .report_outcome(unsubscribed.clone())
        .await
        .expect_err("ingest is down");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status
            .message()
            .starts_with("ingest is unavailable: the event was not taken"),
        "{}",
        status.message()
    );

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let ingest = start_ingest_on(listener, 0, false);
    let answer = client
        .report_outcome(unsubscribed)
        .await
        .expect("ingest is back")
        .into_inner();

    // Taken before the answer: nothing waits in a queue.
    let received = ingest.fake.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "{received:?}");
    let event = received[0].event.clone().unwrap();
    assert_eq!(event.event, "Message Unsubscribed");
    assert_eq!(event.message_id, answer.event_id);
    assert_eq!(event.user_id, "ada");
    let properties = struct_to_json(event.properties.as_ref().unwrap());
    assert_eq!(properties["channel"], "email");
    assert_eq!(properties["idempotency_key"], "k-unsub-1");
}
