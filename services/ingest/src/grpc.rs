//! The `beckon.v1.Ingest` gRPC service: validate, deduplicate, append, then answer.

use std::sync::Arc;

use beckon_core::{Clock, Duration, Event, Props, SystemClock, Ts};
use beckon_proto::convert::{struct_into_json, struct_to_json};
use beckon_proto::v1::ingest_server::Ingest;
use beckon_proto::v1::{
    Ack, AliasRequest, AppendOutcomeRequest, BatchRequest, BatchResponse, BatchResult,
    FieldViolation, IdentifyRequest, TrackRequest, batch_result,
};
use beckon_telemetry::Metrics;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::error::{IngestError, RejectReason, Rejection};
use crate::log::EventLog;
use crate::segment::{Draft, MAX_EVENT_BYTES, derived_id};

pub use crate::log::Appended;

/// Most events one `Batch` call may carry.
pub const MAX_BATCH: usize = 1000;

/// How far ahead of the server's clock an event's time may be, unless configured otherwise.
/// Clients' clocks are often minutes off, sometimes hours across a time-zone mistake; an event
/// days ahead is a wrong clock or a wrong unit, and would hold its user's windows, first and
/// last times hostage until then.
pub const MAX_FUTURE_SKEW: Duration = Duration(24 * 3_600_000);

/// The way an event came in, which decides what it may be and how old.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// `Track`, `Identify`, `Alias` and `Batch`: product backends, SDKs and CDPs.
    Public,
    /// `AppendOutcome`: a gateway reporting what became of a message it was given.
    Gateway,
}

pub struct IngestService {
    /// Where accepted events go; the answer comes only after the append is durable.
    log: Arc<dyn EventLog>,
    /// Appends in flight; a full house answers RESOURCE_EXHAUSTED instead of queueing.
    inflight: Arc<Semaphore>,
    metrics: Metrics,
    /// The workspaces this deployment evaluates; events for any other would be acknowledged
    /// and never applied, so they are refused. `None` takes every workspace.
    served: Option<Vec<String>>,
    /// The server's clock, which event times are held against.
    clock: Arc<dyn Clock>,
    /// How far ahead of `clock` an event's time may be.
    max_future: Duration,
    /// How far behind `clock` an event's time may be; `None` takes events of any age.
    max_late: Option<Duration>,
}

impl IngestService {
    /// Records on the process's global meter; see [`IngestService::with_metrics`].
    pub fn new(log: Arc<dyn EventLog>, max_inflight: usize) -> IngestService {
        IngestService {
            log,
            inflight: Arc::new(Semaphore::new(max_inflight.max(1))),
            metrics: Metrics::global(),
            served: None,
            clock: Arc::new(SystemClock),
            max_future: MAX_FUTURE_SKEW,
            max_late: None,
        }
    }

    /// Holds event times against `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> IngestService {
        self.clock = clock;
        self
    }

    /// Refuses events whose time is more than `skew` ahead of the server's clock.
    pub fn with_max_future_skew(mut self, skew: Duration) -> IngestService {
        self.max_future = skew;
        self
    }

    /// Refuses events whose time is more than `lateness` behind the server's clock; `None`
    /// takes events of any age, each evaluated at its own time.
    pub fn with_max_lateness(mut self, lateness: Option<Duration>) -> IngestService {
        self.max_late = lateness;
        self
    }

    /// Refuses an event from further ahead than the allowed skew, or further behind than the
    /// allowed lateness, by field `timestamp`.
    fn check_time(&self, event: &Event, path: Path) -> Result<(), Rejection> {
        let now = self.clock.now();

        // Every delay and timeout of a journey the event starts counts from its time, so an
        // event much older than now would run the journey's steps one after another at once.
        // A gateway's report of what became of a message is dated when that happened, which
        // may be long before the report reaches ingest (retries, a provider's callback, a
        // queue that waited out an ingest outage): the limit keeps old histories out, not the
        // outcomes of messages Beckon sent, so those are taken at any age. Which events are
        // such reports is told by the call they came in on, not by what they say they are.
        if let Some(late) = self.max_late
            && path == Path::Public
            && event.timestamp < now.saturating_sub(late)
        {
            return Err(Rejection::new(
                RejectReason::BadTimestamp,
                "timestamp",
                format!(
                    "\"{}\" is more than {late} behind the server's clock ({now}); events may be \
                     at most {late} late",
                    event.timestamp
                ),
            ));
        }

        let latest = now.saturating_add(self.max_future);
        if event.timestamp <= latest {
            return Ok(());
        }
        Err(Rejection::new(
            RejectReason::BadTimestamp,
            "timestamp",
            format!(
                "\"{}\" is more than {} ahead of the server's clock ({now}); events may be at \
                 most {} in the future",
                event.timestamp, self.max_future, self.max_future
            ),
        ))
    }

    /// Refuses what the path may not carry: a public call, the names of the gateway's reports
    /// (anyone could otherwise say a message failed, or was opened, for any user); the
    /// gateway's call, anything but such a report.
    fn check_path(event: &Event, path: Path) -> Result<(), Rejection> {
        use beckon_core::delivery;

        // A name written otherwise than the report it reads as (`message opened`) is refused
        // as that report, and the refusal says which one it was taken for.
        let reserved = match path {
            Path::Public => delivery::reserved_name(&event.name),
            Path::Gateway => None,
        };
        if let Some(reserved) = reserved {
            let what = if reserved == event.name {
                format!("{reserved:?}")
            } else {
                format!("{:?} reads as {reserved:?}, which", event.name)
            };
            return Err(Rejection::new(
                RejectReason::BadField,
                "event",
                format!(
                    "{what} is reserved for the gateway's reports of what became of a message; \
                     an app or a provider reports an outcome through the Gateway's \
                     ReportOutcome call"
                ),
            ));
        }

        match path {
            Path::Gateway if !delivery::OUTCOME_NAMES.contains(&event.name.as_str()) => {
                Err(Rejection::new(
                    RejectReason::BadField,
                    "event",
                    format!(
                        "{:?} is not a report of what became of a message; AppendOutcome takes \
                         only those ({})",
                        event.name,
                        delivery::OUTCOME_NAMES.join(", ")
                    ),
                ))
            }
            Path::Gateway if !delivery::is_outcome(event) => Err(Rejection::new(
                RejectReason::BadField,
                "properties.idempotency_key",
                "missing; a report names the message it is about by its idempotency key",
            )),
            Path::Public | Path::Gateway => Ok(()),
        }
    }

    /// Refuses events for workspaces other than these.
    pub fn with_workspaces(mut self, workspaces: Vec<String>) -> IngestService {
        self.served = Some(workspaces);
        self
    }

    fn check_workspace(&self, workspace: &str) -> Result<(), IngestError> {
        check_workspace(workspace)?;
        match &self.served {
            Some(served) if !served.iter().any(|w| w == workspace) => {
                Err(IngestError::Invalid(Rejection::new(
                    RejectReason::BadField,
                    "workspace",
                    format!("`{workspace}` is not served here (this deployment serves {served:?})"),
                )))
            }
            _ => Ok(()),
        }
    }

    pub fn with_metrics(mut self, metrics: Metrics) -> IngestService {
        self.metrics = metrics;
        self
    }

    /// [`IngestService::accept_unmetered`], counting refusals by reason, and duplicates
    /// apart: a repeated message id is a retry answered as taken, not a refusal.
    async fn accept(
        &self,
        workspace: &str,
        event: Option<beckon_proto::v1::Event>,
        kind: Option<&str>,
        path: Path,
        traceparent: Option<&str>,
    ) -> Result<Ack, IngestError> {
        let result = self
            .accept_unmetered(workspace, event, kind, path, traceparent)
            .await;
        match &result {
            Ok(ack) if !ack.appended => self.metrics.event_duplicate(),
            Ok(_) => {}
            Err(IngestError::Invalid(rejection)) => {
                self.metrics.event_rejected(rejection.reason.as_str());
            }
            Err(IngestError::Overloaded) => self.metrics.event_rejected("overloaded"),
            Err(IngestError::LogUnavailable(_)) => self.metrics.event_rejected("log_unavailable"),
        }
        result
    }

    /// [`IngestService::accept`] for a call of one event, as its gRPC answer.
    async fn answer(
        &self,
        workspace: &str,
        event: Option<beckon_proto::v1::Event>,
        kind: &str,
        path: Path,
        traceparent: Option<String>,
    ) -> Result<Response<Ack>, Status> {
        let ack = self
            .accept(workspace, event, Some(kind), path, traceparent.as_deref())
            .await?;
        Ok(Response::new(ack))
    }

    async fn accept_unmetered(
        &self,
        workspace: &str,
        event: Option<beckon_proto::v1::Event>,
        kind: Option<&str>,
        path: Path,
        traceparent: Option<&str>,
    ) -> Result<Ack, IngestError> {
        self.check_workspace(workspace)?;
        let event = event.ok_or_else(|| {
            IngestError::Invalid(Rejection::new(RejectReason::BadField, "event", "missing"))
        })?;
        let event = from_proto(event, kind)?;
        Self::check_path(&event, path)
            .and_then(|()| self.check_time(&event, path))
            .map_err(|r| IngestError::Invalid(prefix_field(r)))?;

        let _permit = self
            .inflight
            .try_acquire()
            .map_err(|_| IngestError::Overloaded)?;
        let appended = self.log.append(workspace, &event, traceparent).await?;
        tracing::debug!(
            beckon.workspace = workspace,
            messaging.destination.partition.id = appended.partition,
            messaging.message.id = %event.message_id,
            duplicate = appended.duplicate,
            "event appended"
        );
        Ok(Ack {
            message_id: event.message_id,
            appended: !appended.duplicate,
            partition: appended.partition,
            offset: appended.offset,
        })
    }
}

impl IngestService {
    /// Appends a batch's valid events in one go. A log that cannot take them fails the whole
    /// call, like an unavailable log fails a single event: the client sends it again, and the
    /// events that did get in are recognised as duplicates.
    async fn append_valid(
        &self,
        workspace: &str,
        events: Vec<Event>,
        traceparent: Option<&str>,
    ) -> Result<Vec<Ack>, IngestError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = u32::try_from(events.len()).unwrap_or(u32::MAX);
        let Ok(_permits) = self.inflight.try_acquire_many(wanted) else {
            for _ in &events {
                self.metrics.event_rejected("overloaded");
            }
            return Err(IngestError::Overloaded);
        };

        let appended = self.log.append_all(workspace, &events, traceparent).await;
        let mut acks = Vec::with_capacity(events.len());
        let mut failed = None;
        for (event, appended) in events.into_iter().zip(appended) {
            match appended {
                Ok(a) => {
                    if a.duplicate {
                        self.metrics.event_duplicate();
                    }
                    acks.push(Ack {
                        message_id: event.message_id,
                        appended: !a.duplicate,
                        partition: a.partition,
                        offset: a.offset,
                    });
                }
                Err(e) => {
                    self.metrics.event_rejected("log_unavailable");
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(acks),
        }
    }
}

fn check_workspace(workspace: &str) -> Result<(), IngestError> {
    if beckon_core::ids::workspace_is_valid(workspace) {
        Ok(())
    } else {
        Err(IngestError::Invalid(Rejection::new(
            RejectReason::BadField,
            "workspace",
            beckon_core::ids::WORKSPACE_RULE,
        )))
    }
}

/// Validates a protobuf event by the rules the HTTP and replay paths apply to Segment JSON,
/// reporting the first one broken with the same field and reason, so every entry point
/// rejects the same things. The fields move straight into the event; only an event without
/// a message id is also written out as Segment JSON, whose text its derived id hashes.
pub fn from_proto(e: beckon_proto::v1::Event, kind: Option<&str>) -> Result<Event, IngestError> {
    let size = prost::Message::encoded_len(&e);
    if size > MAX_EVENT_BYTES {
        return Err(IngestError::Invalid(Rejection::new(
            RejectReason::BadField,
            "event",
            format!("{size} bytes encoded, larger than {MAX_EVENT_BYTES}"),
        )));
    }
    let kind = match (kind, e.r#type.as_str()) {
        (Some(k), "") => k.to_string(),
        (Some(k), t) if t != k => {
            return Err(IngestError::Invalid(Rejection::new(
                RejectReason::UnknownType,
                "event.type",
                format!("this call takes {k:?} events, not {t:?}"),
            )));
        }
        (_, _) => e.r#type.clone(),
    };
    let timestamp = match &e.timestamp {
        // Refused rather than saturated: a client sending nanoseconds as seconds would
        // otherwise put the event at year 9999.
        Some(ts) => Some(Ts::from_parts(ts.seconds, ts.nanos).map_err(|detail| {
            IngestError::Invalid(Rejection::new(
                RejectReason::BadTimestamp,
                "event.timestamp",
                detail,
            ))
        })?),
        None => None,
    };
    let derived = e
        .message_id
        .is_empty()
        .then(|| derived_id(&segment_json(&e, &kind, timestamp)));

    // A text field left empty is absent, as it would be missing from the JSON.
    let present = |s: String| Some(s).filter(|s| !s.is_empty());
    // Only an identify keeps traits; nobody else's are worth converting.
    let traits = match (kind.as_str(), e.traits) {
        ("identify", Some(t)) => struct_into_json(t),
        _ => Props::new(),
    };
    let draft = Draft {
        kind,
        user_id: present(e.user_id),
        anonymous_id: present(e.anonymous_id),
        timestamp,
        name: present(e.event),
        previous_id: present(e.previous_id),
        message_id: present(e.message_id),
        properties: e.properties.map(struct_into_json).unwrap_or_default(),
        traits,
    };
    draft
        .build(|| derived.unwrap_or_default())
        .map_err(|r| IngestError::Invalid(prefix_field(r)))
}

/// The event as the Segment JSON object it stands for, written out: what the id of an event
/// sent without a message id is derived from, as it has been since ingest took protobuf.
fn segment_json(e: &beckon_proto::v1::Event, kind: &str, timestamp: Option<Ts>) -> String {
    let mut obj = Map::new();
    // The proto's `event` carries the page or screen name, which Segment JSON calls `name`.
    let name_key = match kind {
        "page" | "screen" => "name",
        _ => "event",
    };
    obj.insert("type".into(), Value::String(kind.to_string()));
    for (key, value) in [
        ("messageId", &e.message_id),
        ("userId", &e.user_id),
        ("anonymousId", &e.anonymous_id),
        (name_key, &e.event),
        ("previousId", &e.previous_id),
    ] {
        if !value.is_empty() {
            obj.insert(key.into(), Value::String(value.clone()));
        }
    }
    if let Some(p) = &e.properties {
        obj.insert("properties".into(), Value::Object(struct_to_json(p)));
    }
    if let Some(t) = &e.traits {
        obj.insert("traits".into(), Value::Object(struct_to_json(t)));
    }
    if let Some(at) = timestamp {
        obj.insert("timestamp".into(), Value::String(at.to_string()));
    }
    Value::Object(obj).to_string()
}

fn prefix_field(mut r: Rejection) -> Rejection {
    r.field = if r.field.is_empty() {
        "event".into()
    } else {
        format!("event.{}", r.field)
    };
    r
}

/// The trace context stored with the appended entries: this call's server span, which
/// continues the caller's `traceparent`, so the reader's span becomes its child. Without a
/// telemetry pipeline there is no span, and the caller's own context is kept instead.
fn traceparent<T>(req: &Request<T>) -> Option<String> {
    beckon_telemetry::current_trace_string().or_else(|| {
        let caller = beckon_telemetry::extract_metadata(req.metadata());
        beckon_telemetry::to_trace_string(&caller)
    })
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn track(&self, req: Request<TrackRequest>) -> Result<Response<Ack>, Status> {
        let tp = traceparent(&req);
        let r = req.into_inner();
        self.answer(&r.workspace, r.event, "track", Path::Public, tp)
            .await
    }

    async fn identify(&self, req: Request<IdentifyRequest>) -> Result<Response<Ack>, Status> {
        let tp = traceparent(&req);
        let r = req.into_inner();
        self.answer(&r.workspace, r.event, "identify", Path::Public, tp)
            .await
    }

    async fn alias(&self, req: Request<AliasRequest>) -> Result<Response<Ack>, Status> {
        let tp = traceparent(&req);
        let r = req.into_inner();
        self.answer(&r.workspace, r.event, "alias", Path::Public, tp)
            .await
    }

    async fn append_outcome(
        &self,
        req: Request<AppendOutcomeRequest>,
    ) -> Result<Response<Ack>, Status> {
        let tp = traceparent(&req);
        let r = req.into_inner();
        self.answer(&r.workspace, r.event, "track", Path::Gateway, tp)
            .await
    }

    async fn batch(&self, req: Request<BatchRequest>) -> Result<Response<BatchResponse>, Status> {
        let tp = traceparent(&req);
        let r = req.into_inner();
        self.check_workspace(&r.workspace)?;
        if r.events.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "events: {} events in one batch; at most {MAX_BATCH}",
                r.events.len()
            )));
        }

        // Each event is answered on its own: one bad event loses nothing else.
        let mut outcomes = Vec::with_capacity(r.events.len());
        let mut valid = Vec::with_capacity(r.events.len());
        for (i, event) in r.events.into_iter().enumerate() {
            let checked = from_proto(event, None).and_then(|event| {
                Self::check_path(&event, Path::Public)
                    .and_then(|()| self.check_time(&event, Path::Public))
                    .map_err(|r| IngestError::Invalid(prefix_field(r)))?;
                Ok(event)
            });
            match checked {
                Ok(event) => {
                    outcomes.push(None);
                    valid.push(event);
                }
                Err(IngestError::Invalid(rej)) => {
                    self.metrics.event_rejected(rej.reason.as_str());
                    outcomes.push(Some(batch_result::Outcome::Rejected(FieldViolation {
                        field: rej.field.replacen("event", &format!("events[{i}]"), 1),
                        reason: format!("{}: {}", rej.reason, rej.detail),
                    })));
                }
                Err(e) => return Err(e.into()),
            }
        }

        // The valid events are appended together, in order, and answered one by one.
        let acks = self
            .append_valid(&r.workspace, valid, tp.as_deref())
            .await?;
        let mut acks = acks.into_iter();
        let results = outcomes
            .into_iter()
            .map(|outcome| BatchResult {
                outcome: outcome.or_else(|| acks.next().map(batch_result::Outcome::Ack)),
            })
            .collect();
        Ok(Response::new(BatchResponse { results }))
    }
}
