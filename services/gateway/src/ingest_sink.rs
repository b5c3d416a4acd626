//! Delivery events forwarded to the Ingest service, so journeys can branch on them.
//!
//! Sending must never wait on ingest: [`IngestSink::emit`] only puts the event in a bounded
//! queue and returns. A forwarder task takes events from the queue and calls ingest's
//! `AppendOutcome`, a few at a time, retrying answers that may succeed later with a growing
//! backoff. That call is the gateway's own: it takes reports at any age, and it is the only
//! one that takes their names at all, so no other caller can say what became of a message.
//! When ingest is so slow that the queue fills, further events are dropped and counted
//! ([`IngestSink::dropped`]) rather than holding up deliveries; a message already delivered
//! stays delivered either way.
//!
//! An event whose caller must know it arrived (a reported outcome) skips the queue:
//! [`IngestSink::deliver`](EventSink::deliver) calls `AppendOutcome` itself, with the same
//! retries, within [`IngestSinkConfig::deliver_within`], and says whether ingest took it.
//!
//! Retries are safe: delivery events have message ids derived from the idempotency key, so
//! ingest appends a repeated event once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use beckon_core::Event;
use beckon_proto::convert::{json_to_struct, millis_to_timestamp};
use beckon_proto::internal::InternalToken;
use beckon_proto::v1 as pb;
use beckon_proto::v1::ingest_client::IngestClient;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument as _;

use crate::error::GatewayError;
use crate::events::EventSink;
use crate::sleep::Sleeper;

#[derive(Clone, Debug)]
pub struct IngestSinkConfig {
    /// Events waiting to be forwarded; beyond this, new events are dropped.
    pub queue: usize,
    /// `AppendOutcome` calls in flight at once.
    pub concurrency: usize,
    /// Tries per event, the first included.
    pub max_attempts: u32,
    /// Wait before the second try; doubled for each further one, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Deadline of one `AppendOutcome` call, sent to ingest as `grpc-timeout`.
    pub timeout: Duration,
    /// How long a direct delivery (an event its caller waits for) may take, retries included.
    pub deliver_within: Duration,
    /// The deployment's internal token, which ingest asks of `AppendOutcome` when it has one.
    pub internal_token: Option<InternalToken>,
}

impl Default for IngestSinkConfig {
    fn default() -> Self {
        IngestSinkConfig {
            queue: 10_000,
            concurrency: 8,
            max_attempts: 8,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            deliver_within: Duration::from_secs(5),
            internal_token: None,
        }
    }
}

/// A client of the Ingest service at `url` that connects on first use, so the gateway starts
/// while ingest is still coming up. `timeout` bounds each call on the client side too.
pub fn connect_lazy(url: &str, timeout: Duration) -> Result<IngestClient<Channel>, GatewayError> {
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| GatewayError::Config {
        field: "ingest.url".into(),
        reason: e.to_string(),
    })?;
    Ok(lazy_client(endpoint, timeout))
}

/// [`connect_lazy`] for an endpoint already built (with TLS, say).
pub fn lazy_client(endpoint: Endpoint, timeout: Duration) -> IngestClient<Channel> {
    IngestClient::new(endpoint.timeout(timeout).connect_lazy())
}

struct Queued {
    workspace: String,
    event: Event,
    /// Trace context of the send that produced the event: the forwarding call continues it,
    /// although it runs later on the forwarder's task.
    trace: Option<String>,
}

/// An [`EventSink`] that forwards to ingest through a bounded queue.
pub struct IngestSink {
    tx: mpsc::Sender<Queued>,
    dropped: Arc<AtomicU64>,
    waiting: Arc<Waiting>,
    /// For direct deliveries, which do not go through the queue.
    client: IngestClient<Channel>,
    config: IngestSinkConfig,
    sleeper: Arc<dyn Sleeper>,
}

/// Events taken by the sink and not yet forwarded or given up on: queued, or in a call.
#[derive(Default)]
struct Waiting {
    count: AtomicU64,
    /// Woken each time the count falls to zero.
    none: Notify,
}

impl Waiting {
    fn add(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn done(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.none.notify_waiters();
        }
    }

    fn now(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

/// The forwarder task. It ends once every [`IngestSink`] is dropped and the queue is empty.
pub struct Forwarder {
    task: JoinHandle<()>,
    waiting: Arc<Waiting>,
}

impl Forwarder {
    /// Waits until the queue has been forwarded (or given up on), for a graceful shutdown.
    /// Only returns once every [`IngestSink`] is dropped; see [`Forwarder::flush`] for a
    /// process whose senders live on.
    pub async fn drained(self) {
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "ingest forwarder ended abnormally");
        }
    }

    /// Events taken and not yet forwarded or given up on: queued, or in a call to ingest.
    pub fn waiting(&self) -> u64 {
        self.waiting.now()
    }

    /// Waits up to `within` for every event taken so far to be forwarded (or given up on),
    /// and returns how many still wait: 0 when all went. Senders may live on meanwhile, as
    /// they do in a stopping gateway whose channels still hold the sink.
    pub async fn flush(&self, within: Duration) -> u64 {
        let all_gone = async {
            loop {
                // Registered before the count is read, so a last event finishing in between
                // still wakes this.
                let none = self.waiting.none.notified();
                if self.waiting.now() == 0 {
                    return;
                }
                none.await;
            }
        };
        let _ = tokio::time::timeout(within, all_gone).await;
        self.waiting.now()
    }
}

impl IngestSink {
    /// Starts the forwarder on the current tokio runtime.
    pub fn start(
        client: IngestClient<Channel>,
        config: IngestSinkConfig,
        sleeper: Arc<dyn Sleeper>,
    ) -> (IngestSink, Forwarder) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let waiting = Arc::new(Waiting::default());
        let task = tokio::spawn(forward_all(
            rx,
            client.clone(),
            config.clone(),
            sleeper.clone(),
            waiting.clone(),
        ));
        let sink = IngestSink {
            tx,
            dropped: Arc::default(),
            waiting: waiting.clone(),
            client,
            config,
            sleeper,
        };
        (sink, Forwarder { task, waiting })
    }

    /// Events dropped because the queue was full or the forwarder had stopped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl EventSink for IngestSink {
    fn emit<'a>(&'a self, workspace: &'a str, event: Event) -> BoxFuture<'a, ()> {
        let queued = Queued {
            workspace: workspace.to_string(),
            event,
            trace: beckon_telemetry::current_trace_string(),
        };
        // Counted before it is queued, so the forwarder never finishes it first.
        self.waiting.add();
        if let Err(e) = self.tx.try_send(queued) {
            self.waiting.done();
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Logged at 1, 2, 4, 8, ... drops: visible, without a line per event.
            if n.is_power_of_two() {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "queue full",
                    mpsc::error::TrySendError::Closed(_) => "forwarder stopped",
                };
                tracing::warn!(beckon.dropped = n, reason = why, "delivery event dropped");
            }
        }
        Box::pin(async {})
    }

    fn deliver<'a>(
        &'a self,
        workspace: &'a str,
        event: Event,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        let queued = Queued {
            workspace: workspace.to_string(),
            event,
            trace: beckon_telemetry::current_trace_string(),
        };
        let within = self.config.deliver_within;
        let forwarded = forward(
            self.client.clone(),
            &self.config,
            self.sleeper.as_ref(),
            queued,
        );
        Box::pin(async move {
            let unavailable = |reason: String| GatewayError::Unavailable {
                provider: "ingest".into(),
                reason,
            };
            match tokio::time::timeout(within, forwarded).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(status)) => Err(unavailable(format!(
                    "the event was not taken ({:?}: {})",
                    status.code(),
                    status.message()
                ))),
                Err(_) => Err(unavailable(format!(
                    "the event was not taken within {} ms",
                    within.as_millis()
                ))),
            }
        })
    }
}

/// The protobuf form of a delivery event.
pub fn to_proto(event: &Event) -> pb::Event {
    let non_empty = |props: &beckon_core::Props| (!props.is_empty()).then(|| json_to_struct(props));
    pb::Event {
        r#type: event.kind.as_str().to_string(),
        message_id: event.message_id.clone(),
        user_id: event.user.clone(),
        anonymous_id: event.anonymous_id.clone().unwrap_or_default(),
        event: event.name.clone(),
        properties: non_empty(&event.properties),
        traits: non_empty(&event.traits),
        timestamp: Some(millis_to_timestamp(event.timestamp.0)),
        previous_id: event.previous_id.clone().unwrap_or_default(),
    }
}

async fn forward_all(
    rx: mpsc::Receiver<Queued>,
    client: IngestClient<Channel>,
    config: IngestSinkConfig,
    sleeper: Arc<dyn Sleeper>,
    waiting: Arc<Waiting>,
) {
    let queue = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|queued| (queued, rx))
    });
    let (client, config, sleeper, waiting) = (&client, &config, &sleeper, &waiting);
    queue
        .for_each_concurrent(config.concurrency.max(1), |queued| {
            let span = tracing::info_span!(
                "ingest.forward",
                otel.kind = "client",
                rpc.system = "grpc",
                rpc.service = "beckon.v1.Ingest",
                rpc.method = "AppendOutcome",
                beckon.workspace = %queued.workspace,
            );
            if let Some(trace) = &queued.trace {
                beckon_telemetry::set_parent_from_trace_string(&span, trace);
            }
            let forwarded = forward(client.clone(), config, sleeper.as_ref(), queued);
            async move {
                // A failure was logged where it happened; the queue goes on with the rest.
                let _ = forwarded.await;
                waiting.done();
            }
            .instrument(span)
        })
        .await;
}

/// Answers that may succeed when tried again.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Unknown
    )
}

/// Calls `AppendOutcome` until ingest takes the event, refuses it for good, or the tries
/// run out; the last refusal when it was not taken.
async fn forward(
    mut client: IngestClient<Channel>,
    config: &IngestSinkConfig,
    sleeper: &dyn Sleeper,
    queued: Queued,
) -> Result<(), tonic::Status> {
    let event = to_proto(&queued.event);
    let max_attempts = config.max_attempts.max(1);
    let mut backoff = config.backoff;
    for attempt in 1..=max_attempts {
        let mut request = tonic::Request::new(pb::AppendOutcomeRequest {
            workspace: queued.workspace.clone(),
            event: Some(event.clone()),
        });
        request.set_timeout(config.timeout);
        beckon_telemetry::inject_metadata(
            &beckon_telemetry::propagation::current_context(),
            request.metadata_mut(),
        );
        if let Some(token) = &config.internal_token {
            token.attach(request.metadata_mut());
        }

        let status = match client.append_outcome(request).await {
            Ok(_) => {
                tracing::debug!(
                    beckon.workspace = %queued.workspace,
                    messaging.message.id = %event.message_id,
                    beckon.attempt = attempt,
                    "delivery event forwarded"
                );
                return Ok(());
            }
            Err(status) => status,
        };
        if !retryable(status.code()) || attempt == max_attempts {
            tracing::warn!(
                beckon.workspace = %queued.workspace,
                messaging.message.id = %event.message_id,
                beckon.attempt = attempt,
                rpc.grpc.status_code = status.code() as i32,
                "delivery event not forwarded"
            );
            return Err(status);
        }

        tracing::debug!(
            messaging.message.id = %event.message_id,
            beckon.attempt = attempt,
            rpc.grpc.status_code = status.code() as i32,
            "ingest refused delivery event; retrying"
        );
        sleeper.sleep(backoff).await;
        backoff = (backoff * 2).min(config.max_backoff);
    }
    Err(tonic::Status::unavailable("no try was made"))
}
