//! The `beckon.v1.Gateway` gRPC service: sends through a [`Gateway`] and the in-app inbox.
//!
//! Requests are checked field by field before anything is sent; a bad field is answered
//! `INVALID_ARGUMENT` with its name (`message.user_id: must not be empty`). Domain errors
//! become status codes through the one mapping in [`crate::error`].
//!
//! `SubscribeInbox` streams a user's new inbox messages as they are inserted: the stream
//! waits on the inbox's broadcast, so a message reaches the app while `Send` is still
//! answering. The stream ends when the client goes away (tonic drops it, and with it the
//! subscription) or when the service is drained ([`DrainHandle`]), so a server shutting down
//! does not wait on subscribers that would never leave.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use beckon_core::{Clock, Event, OutboundMessage, Ts};
use beckon_proto::convert::millis_to_timestamp;
use beckon_proto::v1 as pb;
use beckon_proto::v1::gateway_server::{Gateway as GatewayRpc, GatewayServer};
use futures::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::channel::Gateway;
use crate::error::GatewayError;
use crate::events::{self, EventSink};
use crate::inbox::{InboxMessage, InboxStore, InboxSubscription};
use crate::providers::CHANNELS;
use beckon_core::Props;
use beckon_core::ids::id_problem;

/// Longest idempotency key (and inbox item id, which is one) accepted, in bytes. A journey's
/// key names the workspace, the user (an id of up to
/// [`MAX_ID_BYTES`](beckon_core::ids::MAX_ID_BYTES)), the journey, the step and counters, so
/// it is allowed well beyond the ids it is made of.
pub const MAX_KEY_BYTES: usize = 4096;

/// Longest journey, step or url text accepted in an outcome report, in bytes.
const MAX_TEXT_BYTES: usize = 4096;

/// Largest body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The channel name the inbox answers on in inbox listings.
const IN_APP: &str = "in_app";

/// The gRPC face of a [`Gateway`] and its [`Inbox`].
pub struct GatewayService {
    gateway: Gateway,
    inbox: Arc<dyn InboxStore>,
    clock: Arc<dyn Clock>,
    drain: watch::Sender<bool>,
    /// Where reported outcomes (and inbox reads) go as events; nowhere when absent.
    outcomes: Option<Arc<dyn EventSink>>,
    /// The workspaces this deployment evaluates. An outcome reported for any other would be
    /// refused by ingest after it was acknowledged here, and lost, so it is refused up front.
    /// `None` takes every workspace.
    served: Option<Vec<String>>,
    /// Outcome reports answered with an error because their event could not be taken.
    refused: AtomicU64,
}

/// Ends every open `SubscribeInbox` stream of a service, for a graceful shutdown.
#[derive(Clone)]
pub struct DrainHandle(watch::Sender<bool>);

impl DrainHandle {
    pub fn drain(&self) {
        self.0.send_replace(true);
    }
}

impl GatewayService {
    /// Serves `gateway` and `inbox`. The inbox should also be the gateway's `in_app` adapter,
    /// or nothing sent will show up in it. Time comes from the inbox's clock.
    pub fn new(gateway: Gateway, inbox: Arc<dyn InboxStore>) -> GatewayService {
        let (drain, _) = watch::channel(false);
        GatewayService {
            clock: inbox.clock(),
            gateway,
            inbox,
            drain,
            outcomes: None,
            served: None,
            refused: AtomicU64::new(0),
        }
    }

    /// Refuses outcomes reported for workspaces other than these.
    pub fn with_workspaces(mut self, workspaces: Vec<String>) -> GatewayService {
        self.served = Some(workspaces);
        self
    }

    fn check_served(&self, workspace: &str) -> Result<(), Status> {
        match &self.served {
            Some(served) if !served.iter().any(|w| w == workspace) => Err(invalid(
                "workspace",
                format!("{workspace:?} is not served here (this deployment serves {served:?})"),
            )),
            _ => Ok(()),
        }
    }

    /// Reports outcomes (`ReportOutcome`, inbox messages marked read) to `sink` as events.
    pub fn with_outcomes(mut self, sink: Arc<dyn EventSink>) -> GatewayService {
        self.outcomes = Some(sink);
        self
    }

    fn outcome_event(outcome: Outcome, message: &OutboundMessage, extra: Props) -> Event {
        events::delivery_event(outcome.event_name(), message, "app", "", message.at, extra)
    }

    /// Turns a reported outcome into its event and answers its id only once the event is
    /// taken: the report exists for that event alone, so one that cannot be forwarded now is
    /// answered with an error the caller retries on (a repeat is recorded once).
    async fn report(
        &self,
        outcome: Outcome,
        message: &OutboundMessage,
        extra: Props,
    ) -> Result<String, Status> {
        let event = Self::outcome_event(outcome, message, extra);
        let id = event.message_id.clone();
        if let Some(sink) = &self.outcomes {
            sink.deliver(&message.workspace, event).await?;
        }
        Ok(id)
    }

    /// A handle that ends the open inbox subscriptions.
    pub fn drain_handle(&self) -> DrainHandle {
        DrainHandle(self.drain.clone())
    }

    /// The tonic service, ready to be added to a server.
    pub fn into_server(self) -> GatewayServer<Self> {
        GatewayServer::new(self)
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> Status {
    GatewayError::InvalidArgument {
        field: field.to_string(),
        reason: reason.into(),
    }
    .into()
}

/// Same rule as ingest: workspaces appear in keys and metrics, so they stay short and plain.
fn check_workspace(workspace: &str) -> Result<(), Status> {
    let ok = !workspace.is_empty()
        && workspace.len() <= 64
        && workspace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "workspace",
            "expected 1 to 64 letters, digits, '-' or '_'",
        ))
    }
}

/// An idempotency key or inbox item id.
fn check_key(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > MAX_KEY_BYTES {
        return Err(invalid(
            field,
            format!("{} bytes; at most {MAX_KEY_BYTES}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// A user id, by the rule ingest applies to the events that bring users in: a user it took
/// can always be sent to.
fn check_user_id(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    match id_problem(value) {
        Some(why) => Err(invalid(field, why)),
        None => Ok(()),
    }
}

/// Whether `channel` looks like a channel name: short, lowercase letters, digits and `_`.
fn channel_shaped(channel: &str) -> bool {
    !channel.is_empty()
        && channel.len() <= 32
        && channel
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A message's channel (in `field`) must be one a journey can send on. One of those that this
/// gateway has no provider for is a different matter, answered when the send is routed.
fn check_known_channel(field: &str, channel: &str) -> Result<(), Status> {
    let known = CHANNELS.join(", ");
    if CHANNELS.contains(&channel) {
        Ok(())
    } else if channel_shaped(channel) {
        Err(invalid(
            field,
            format!("unknown channel `{channel}`; known channels: {known}"),
        ))
    } else {
        // Not echoed: it may be long, or hold anything at all.
        Err(invalid(
            field,
            format!("not a channel name; known channels: {known}"),
        ))
    }
}

/// How long a `Send` may take to reach its provider: three quarters of the caller's deadline
/// (its `grpc-timeout`), the rest left for writing a deferral and for the answer's way back.
/// `None` when the caller set no deadline, or one that does not parse.
fn send_budget(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Duration> {
    use std::time::Duration;

    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (unit, digits) = text.as_bytes().split_last()?;
    // At most eight digits, as gRPC specifies; no product below can overflow then.
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let deadline = match unit {
        b'H' => Duration::from_secs(n * 3_600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    };
    Some(deadline - deadline / 4)
}

/// Longest address or token taken in `message.to`, and most tokens in all: far above any
/// real one, low enough that a message cannot carry megabytes of them.
const MAX_CONTACT_BYTES: usize = 4_096;
const MAX_CONTACT_TOKENS: usize = 100;

/// The addresses a `Send` carries, each within bounds.
fn contacts(to: pb::Contacts) -> Result<beckon_core::Contacts, Status> {
    let bounded = |field: &str, text: &str| {
        if text.len() > MAX_CONTACT_BYTES {
            Err(invalid(
                field,
                format!("{} bytes; at most {MAX_CONTACT_BYTES}", text.len()),
            ))
        } else {
            Ok(())
        }
    };
    for (field, value) in [
        ("message.to.email", &to.email),
        ("message.to.phone", &to.phone),
    ] {
        if let Some(value) = value {
            bounded(field, value)?;
        }
    }
    let count: usize = to.devices.iter().map(|d| d.tokens.len()).sum();
    if count > MAX_CONTACT_TOKENS {
        return Err(invalid(
            "message.to.devices",
            format!("{count} tokens; at most {MAX_CONTACT_TOKENS}"),
        ));
    }
    for (i, d) in to.devices.iter().enumerate() {
        bounded(&format!("message.to.devices[{i}].platform"), &d.platform)?;
        for (j, token) in d.tokens.iter().enumerate() {
            bounded(&format!("message.to.devices[{i}].tokens[{j}]"), token)?;
        }
    }
    Ok(beckon_core::Contacts {
        email: to.email.and_then(non_empty),
        phone: to.phone.and_then(non_empty),
        devices: to
            .devices
            .into_iter()
            .map(|d| (d.platform, d.tokens))
            .collect(),
    })
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// Checks a `Send` request and turns it into the message the gateway sends.
fn outbound(request: pb::SendRequest, now: Ts) -> Result<OutboundMessage, Status> {
    check_workspace(&request.workspace)?;
    let m = request
        .message
        .ok_or_else(|| invalid("message", "is required"))?;
    check_key("message.idempotency_key", &m.idempotency_key)?;
    check_user_id("message.user_id", &m.user_id)?;
    check_known_channel("message.channel", &m.channel)?;
    if m.body.is_empty() && m.title.is_empty() {
        return Err(invalid(
            "message.body",
            "must not be empty when there is no title",
        ));
    }
    if m.body.len() > MAX_BODY_BYTES {
        return Err(invalid(
            "message.body",
            format!("{} bytes; at most {MAX_BODY_BYTES}", m.body.len()),
        ));
    }
    // A time outside the calendar is refused, not replaced: the message's time is what
    // providers and receivers are told, and what its delivery events are about.
    let at = match m.at {
        None => now,
        Some(ts) => {
            Ts::from_parts(ts.seconds, ts.nanos).map_err(|why| invalid("message.at", why))?
        }
    };

    Ok(OutboundMessage {
        idempotency_key: m.idempotency_key,
        workspace: request.workspace,
        user_id: m.user_id,
        journey: m.journey,
        version: m.version,
        instance: m.instance,
        step: m.step,
        channel: m.channel,
        at,
        title: non_empty(m.title),
        subject: non_empty(m.subject),
        body: m.body,
        to: m.to.map(contacts).transpose()?,
    })
}

/// The outcomes an app or a provider callback may report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Opened,
    Clicked,
    Unsubscribed,
}

impl Outcome {
    fn parse(text: &str) -> Result<Outcome, Status> {
        match text {
            "delivered" => Ok(Outcome::Delivered),
            "opened" => Ok(Outcome::Opened),
            "clicked" => Ok(Outcome::Clicked),
            "unsubscribed" => Ok(Outcome::Unsubscribed),
            _ => Err(invalid(
                "outcome",
                "expected delivered, opened, clicked or unsubscribed",
            )),
        }
    }

    fn event_name(self) -> &'static str {
        match self {
            Outcome::Delivered => events::MESSAGE_DELIVERED,
            Outcome::Opened => events::MESSAGE_OPENED,
            Outcome::Clicked => events::MESSAGE_CLICKED,
            Outcome::Unsubscribed => events::MESSAGE_UNSUBSCRIBED,
        }
    }
}

/// Checks an outcome report; the message it is about, as far as the report tells it.
fn reported(r: pb::OutcomeRequest, now: Ts) -> Result<(Outcome, OutboundMessage, Props), Status> {
    check_user(&r.workspace, &r.user_id)?;
    check_key("message_key", &r.message_key)?;
    let outcome = Outcome::parse(&r.outcome)?;
    // The channel is optional here, but one that is given becomes the outcome event's
    // `channel` property, which journeys branch on: it must be one they can send on.
    if !r.channel.is_empty() {
        check_known_channel("channel", &r.channel)?;
    }
    for (field, value) in [("journey", &r.journey), ("step", &r.step), ("url", &r.url)] {
        if value.len() > MAX_TEXT_BYTES || value.chars().any(char::is_control) {
            return Err(invalid(field, "too long or contains control characters"));
        }
    }
    if outcome == Outcome::Clicked && r.url.is_empty() {
        return Err(invalid("url", "a click needs the url that was clicked"));
    }
    // An unsubscribe is recorded as the channel's opt-out: without the channel it would be
    // taken and change nothing, and the user would go on getting messages.
    if outcome == Outcome::Unsubscribed && r.channel.is_empty() {
        return Err(invalid(
            "channel",
            "an unsubscribe needs the channel the user unsubscribed from",
        ));
    }
    // Checked here rather than left to ingest: the outcome becomes an event forwarded later,
    // and a time ingest refuses then would be lost with only a warning to show for it.
    let at = match r.at {
        None => now,
        Some(ts) => Ts::from_parts(ts.seconds, ts.nanos).map_err(|why| invalid("at", why))?,
    };
    let mut extra = Props::new();
    if !r.url.is_empty() {
        extra.insert("url".into(), r.url.into());
    }
    let message = OutboundMessage {
        idempotency_key: r.message_key,
        workspace: r.workspace,
        user_id: r.user_id,
        journey: r.journey,
        version: 0,
        instance: None,
        step: r.step,
        channel: r.channel,
        at,
        title: None,
        subject: None,
        body: String::new(),
        to: None,
    };
    Ok((outcome, message, extra))
}

fn check_user(workspace: &str, user: &str) -> Result<(), Status> {
    check_workspace(workspace)?;
    check_user_id("user_id", user)
}

fn item(m: &InboxMessage) -> pb::InboxMessage {
    pb::InboxMessage {
        id: m.id.clone(),
        journey: m.journey.clone(),
        step: m.step.clone(),
        title: m.title.clone().unwrap_or_default(),
        body: m.body.clone(),
        created: Some(millis_to_timestamp(m.created.0)),
        expires: Some(millis_to_timestamp(m.expires.0)),
        read: m.read,
    }
}

fn as_outbound(m: &InboxMessage) -> pb::OutboundMessage {
    pb::OutboundMessage {
        idempotency_key: m.id.clone(),
        user_id: m.user_id.clone(),
        channel: IN_APP.to_string(),
        journey: m.journey.clone(),
        step: m.step.clone(),
        subject: String::new(),
        body: m.body.clone(),
        at: Some(millis_to_timestamp(m.created.0)),
        title: m.title.clone().unwrap_or_default(),
        version: 0,
        instance: None,
        to: None,
    }
}

type InboxStream = Pin<Box<dyn Stream<Item = Result<pb::InboxMessage, Status>> + Send>>;

/// The next message of a subscription, or `None` once the service drains or the inbox is
/// gone. Nothing is spawned: when the client leaves, tonic drops the stream and this future.
async fn next_item(
    mut state: (InboxSubscription, watch::Receiver<bool>),
) -> Option<(
    Result<pb::InboxMessage, Status>,
    (InboxSubscription, watch::Receiver<bool>),
)> {
    let (subscription, drain) = &mut state;
    let message = tokio::select! {
        message = subscription.next() => message?,
        _ = drain.wait_for(|drained| *drained) => return None,
    };
    Some((Ok(item(&message)), state))
}

#[tonic::async_trait]
impl GatewayRpc for GatewayService {
    async fn send(
        &self,
        request: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        let budget = send_budget(request.metadata());
        let message = outbound(request.into_inner(), self.clock.now())?;

        // A caller that gives up (deadline, disconnect) drops this handler. The send runs in a
        // task of its own so that a claimed key is always recorded or released, never left in
        // doubt by the cancellation.
        let gateway = self.gateway.clone();
        let task_message = message.clone();
        // The spawned task keeps the call's span: it is the same send, in the same trace.
        let span = tracing::Span::current();
        let send = async move {
            // A provider slower than the caller's deadline would otherwise be answered after
            // the caller gave up, and the caller would send again while this one still runs.
            match budget {
                Some(within) => gateway.send_within(&task_message, within).await,
                None => gateway.send(&task_message).await,
            }
        };
        let result = tokio::spawn(send.instrument(span))
            .await
            .map_err(|e| Status::internal(format!("send task failed: {e}")))?;
        let outcome = match &result {
            Ok(d) if d.duplicate => "duplicate",
            Ok(d) if d.deferred => "deferred",
            Ok(_) => "sent",
            Err(_) => "failed",
        };
        tracing::debug!(
            rpc.service = "beckon.v1.Gateway",
            rpc.method = "Send",
            beckon.workspace = %message.workspace,
            beckon.channel = %message.channel,
            beckon.idempotency_key = %message.idempotency_key,
            beckon.outcome = outcome,
            "send answered"
        );

        let delivery = result?;
        let reason = if delivery.duplicate {
            "delivered before; not sent again".to_string()
        } else if delivery.deferred {
            // The provider's own words stay in the gateway's log; the caller learns that the
            // message is kept and will be retried.
            "the provider could not take it now; kept in the retry queue".to_string()
        } else {
            String::new()
        };
        Ok(Response::new(pb::SendResponse {
            outcome: outcome.to_string(),
            provider_id: delivery.provider_id,
            reason,
        }))
    }

    async fn list_inbox(
        &self,
        request: Request<pb::ListInboxRequest>,
    ) -> Result<Response<pb::ListInboxResponse>, Status> {
        let r = request.into_inner();
        check_user(&r.workspace, &r.user_id)?;

        let list = self.inbox.list(&r.workspace, &r.user_id).await?;
        Ok(Response::new(pb::ListInboxResponse {
            messages: list.iter().map(as_outbound).collect(),
            items: list.iter().map(item).collect(),
        }))
    }

    async fn mark_inbox_read(
        &self,
        request: Request<pb::InboxItemRequest>,
    ) -> Result<Response<pb::InboxItemResponse>, Status> {
        let r = request.into_inner();
        check_user(&r.workspace, &r.user_id)?;
        check_key("id", &r.id)?;

        // Reading a message is opening it: journeys may wait for that.
        let unread = self
            .inbox
            .list(&r.workspace, &r.user_id)
            .await?
            .into_iter()
            .find(|m| m.id == r.id && !m.read);
        let found = self
            .inbox
            .mark_read(&r.workspace, &r.user_id, &r.id)
            .await?;
        if let Some(m) = unread.filter(|_| found) {
            let message = OutboundMessage {
                idempotency_key: m.id,
                workspace: m.workspace,
                user_id: m.user_id,
                journey: m.journey,
                version: 0,
                instance: None,
                step: m.step,
                channel: IN_APP.to_string(),
                at: self.clock.now(),
                title: None,
                subject: None,
                body: String::new(),
                to: None,
            };
            // The item is read either way; its event goes the way of the other delivery
            // events, through the sink's queue.
            if let Some(sink) = &self.outcomes {
                let event = Self::outcome_event(Outcome::Opened, &message, Props::new());
                sink.emit(&message.workspace, event).await;
            }
        }
        Ok(Response::new(pb::InboxItemResponse { found }))
    }

    async fn dismiss_inbox_message(
        &self,
        request: Request<pb::InboxItemRequest>,
    ) -> Result<Response<pb::InboxItemResponse>, Status> {
        let r = request.into_inner();
        check_user(&r.workspace, &r.user_id)?;
        check_key("id", &r.id)?;

        let found = self.inbox.dismiss(&r.workspace, &r.user_id, &r.id).await?;
        Ok(Response::new(pb::InboxItemResponse { found }))
    }

    async fn report_outcome(
        &self,
        request: Request<pb::OutcomeRequest>,
    ) -> Result<Response<pb::OutcomeResponse>, Status> {
        let (outcome, message, extra) = reported(request.into_inner(), self.clock.now())?;
        self.check_served(&message.workspace)?;
        let event_id = self
            .report(outcome, &message, extra)
            .await
            .inspect_err(|status| {
                // Logged at 1, 2, 4, 8, ... refusals: an ingest outage refuses every report,
                // and each caller is told already.
                let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        beckon.workspace = %message.workspace,
                        beckon.outcome = outcome.event_name(),
                        beckon.refused = n,
                        error = %status.message(),
                        "outcome not recorded; the caller is told to retry"
                    );
                }
            })?;
        tracing::debug!(
            rpc.service = "beckon.v1.Gateway",
            rpc.method = "ReportOutcome",
            beckon.workspace = %message.workspace,
            beckon.outcome = outcome.event_name(),
            "outcome reported"
        );
        Ok(Response::new(pb::OutcomeResponse { event_id }))
    }

    type SubscribeInboxStream = InboxStream;

    async fn subscribe_inbox(
        &self,
        request: Request<pb::ListInboxRequest>,
    ) -> Result<Response<Self::SubscribeInboxStream>, Status> {
        let r = request.into_inner();
        check_user(&r.workspace, &r.user_id)?;

        // Subscribed before answering, so a message sent once the client has the response
        // headers is not missed.
        let subscription = self.inbox.subscribe(&r.workspace, &r.user_id).await?;
        let stream = futures::stream::unfold((subscription, self.drain.subscribe()), next_item);
        tracing::debug!(
            rpc.service = "beckon.v1.Gateway",
            rpc.method = "SubscribeInbox",
            beckon.workspace = %r.workspace,
            "inbox subscription opened"
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beckon_core::ids::MAX_ID_BYTES;

    fn request(edit: impl FnOnce(&mut pb::SendRequest)) -> pb::SendRequest {
        let mut r = pb::SendRequest {
            workspace: "acme".into(),
            message: Some(pb::OutboundMessage {
                idempotency_key: "k1".into(),
                user_id: "u1".into(),
                channel: "in_app".into(),
                body: "<p>Hello Ada</p>".into(),
                ..Default::default()
            }),
        };
        edit(&mut r);
        r
    }

    fn field_error(r: pb::SendRequest) -> String {
        let status = outbound(r, Ts(0)).expect_err("a bad field is refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        status.message().to_string()
    }

    #[test]
    fn each_bad_field_is_named() {
        type Edit = fn(&mut pb::SendRequest);
        let cases: [(&str, Edit); 10] = [
            ("invalid workspace", |r| r.workspace = "ac me".into()),
            ("invalid message:", |r| r.message = None),
            ("invalid message.idempotency_key", |r| {
                if let Some(m) = r.message.as_mut() {
                    m.idempotency_key.clear();
                }
            }),
            ("invalid message.user_id", |r| {
                if let Some(m) = r.message.as_mut() {
                    m.user_id = "x".repeat(MAX_ID_BYTES + 1);
                }
            }),
            ("invalid message.channel", |r| {
                if let Some(m) = r.message.as_mut() {
                    m.channel = "Push!".into();
                }
            }),
            ("invalid message.body", |r| {
                if let Some(m) = r.message.as_mut() {
                    m.body.clear();
                }
            }),
            (
                "invalid message.channel: unknown channel `pigeon`; known channels: push, \
                 in_app, email, sms, webhook, live_activity",
                |r| {
                    if let Some(m) = r.message.as_mut() {
                        m.channel = "pigeon".into();
                    }
                },
            ),
            ("invalid message.at", |r| {
                if let Some(m) = r.message.as_mut() {
                    let mut at = millis_to_timestamp(1_000);
                    at.nanos = -1;
                    m.at = Some(at);
                }
            }),
            (
                "invalid message.at: seconds 9223372036854775 out of range",
                |r| {
                    if let Some(m) = r.message.as_mut() {
                        m.at = Some(millis_to_timestamp(i64::MAX));
                    }
                },
            ),
            (
                "invalid message.at: seconds -9223372036854776 out of range",
                |r| {
                    if let Some(m) = r.message.as_mut() {
                        m.at = Some(millis_to_timestamp(i64::MIN));
                    }
                },
            ),
        ];
        for (expected, edit) in cases {
            let message = field_error(request(edit));
            assert!(message.starts_with(expected), "{message}");
        }
    }

    #[test]
    fn every_user_ingest_accepts_can_be_sent_to() {
        // The longest user id ingest takes, and the key a journey makes for a message to it.
        let user = "u".repeat(MAX_ID_BYTES);
        let key = format!("acme:{user}:cart-abandonment-reminder:1712345678901:second-push:2");
        let r = request(|r| {
            if let Some(m) = r.message.as_mut() {
                m.user_id = user.clone();
                m.idempotency_key = key.clone();
            }
        });
        let message = outbound(r, Ts(0)).expect("accepted");
        assert_eq!((message.user_id, message.idempotency_key), (user, key));

        let blank = field_error(request(|r| {
            if let Some(m) = r.message.as_mut() {
                m.user_id = "   ".into();
            }
        }));
        assert!(
            blank.starts_with("invalid message.user_id: only whitespace"),
            "{blank}"
        );
    }

    #[test]
    fn the_send_budget_is_most_of_the_callers_deadline() {
        let budget = |value: &str| {
            let mut metadata = tonic::metadata::MetadataMap::new();
            if let Ok(v) = value.parse() {
                metadata.insert("grpc-timeout", v);
            }
            send_budget(&metadata)
        };
        let ms = std::time::Duration::from_millis;
        assert_eq!(budget("2S"), Some(ms(1_500)));
        assert_eq!(budget("2000m"), Some(ms(1_500)));
        assert_eq!(budget("4000000u"), Some(ms(3_000)));
        assert_eq!(budget("1M"), Some(ms(45_000)));
        assert_eq!(budget("99999999H").map(|d| d.as_secs() > 0), Some(true));
        for bad in ["", "S", "12", "123456789S", "-1S", "1.5S", "10x"] {
            assert_eq!(budget(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_good_request_keeps_every_field() {
        let m = outbound(request(|_| {}), Ts(42)).expect("valid");
        assert_eq!(m.workspace, "acme");
        assert_eq!(m.at, Ts(42));
        assert_eq!(m.title, None);
        assert_eq!(m.body, "<p>Hello Ada</p>");
    }

    #[test]
    fn an_outcome_ingest_would_refuse_later_is_refused_now() {
        let outcome = |edit: fn(&mut pb::OutcomeRequest)| {
            let mut r = pb::OutcomeRequest {
                workspace: "acme".into(),
                user_id: "u1".into(),
                message_key: "k1".into(),
                outcome: "clicked".into(),
                url: "https://example.com/a".into(),
                ..Default::default()
            };
            edit(&mut r);
            reported(r, Ts(42)).map(|(_, m, _)| m.at)
        };
        assert_eq!(outcome(|_| {}).ok(), Some(Ts(42)));

        let refused = outcome(|r| r.at = Some(millis_to_timestamp(i64::MAX / 2)))
            .expect_err("past the calendar");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("at"), "{}", refused.message());
        assert!(
            refused.message().contains("out of range"),
            "{}",
            refused.message()
        );

        let refused = outcome(|r| r.channel = "fax".into()).expect_err("no such channel");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            refused.message(),
            "invalid channel: unknown channel `fax`; known channels: push, in_app, email, sms, \
             webhook, live_activity"
        );
        let refused = outcome(|r| r.channel = "Fax Machine!".into()).expect_err("not a name");
        assert!(
            refused
                .message()
                .starts_with("invalid channel: not a channel name; known"),
            "{}",
            refused.message()
        );
        assert!(outcome(|r| r.channel = "email".into()).is_ok());

        let refused = outcome(|r| r.url.clear()).expect_err("a click without its url");
        assert!(refused.message().contains("url"), "{}", refused.message());
        assert!(
            outcome(|r| {
                r.outcome = "opened".into();
                r.url.clear();
            })
            .is_ok()
        );

        let refused = outcome(|r| r.outcome = "unsubscribed".into())
            .expect_err("an unsubscribe without its channel");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            refused.message(),
            "invalid channel: an unsubscribe needs the channel the user unsubscribed from"
        );
        assert!(
            outcome(|r| {
                r.outcome = "unsubscribed".into();
                r.channel = "email".into();
            })
            .is_ok()
        );
    }
}
