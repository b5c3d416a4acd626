//! Delivery outcomes reported back as behavioral events, so journeys can branch on them
//! ("if Message Failed", "when Device Token Invalid").

use std::sync::{Arc, Mutex};

use beckon_core::{Event, EventKind, OutboundMessage, Props, Ts};
use futures::future::BoxFuture;
use serde_json::Value;

use crate::error::GatewayError;

/// Event names the gateway emits.
pub const MESSAGE_SENT: &str = beckon_core::delivery::MESSAGE_SENT;
/// The message will not be delivered: refused for good, nobody to send it to, or given up on
/// by the retry queue. Never sent for a failure a later attempt may repair.
pub const MESSAGE_FAILED: &str = beckon_core::delivery::MESSAGE_FAILED;
/// The provider could not take the message now; it waits in the retry queue.
pub const MESSAGE_DEFERRED: &str = beckon_core::delivery::MESSAGE_DEFERRED;
/// A message that waited in the retry queue went out (besides the adapter's `Message Sent`,
/// which only provider adapters report).
pub const DEFERRED_MESSAGE_SENT: &str = beckon_core::delivery::DEFERRED_MESSAGE_SENT;
/// A message that waited in the retry queue was dropped unsent: its journey instance ended.
pub const MESSAGE_WITHDRAWN: &str = beckon_core::delivery::MESSAGE_WITHDRAWN;
pub const DEVICE_TOKEN_INVALID: &str = beckon_core::devices::DEVICE_TOKEN_INVALID;
/// The provider reports the message reached the device or mailbox.
pub const MESSAGE_DELIVERED: &str = beckon_core::delivery::MESSAGE_DELIVERED;
/// The user opened the message (an inbox message marked read, a push tapped).
pub const MESSAGE_OPENED: &str = beckon_core::delivery::MESSAGE_OPENED;
pub const MESSAGE_CLICKED: &str = beckon_core::delivery::MESSAGE_CLICKED;
/// Applying it sets the user's `<channel>_opt_out` trait.
pub const MESSAGE_UNSUBSCRIBED: &str = beckon_core::delivery::MESSAGE_UNSUBSCRIBED;

/// Whether the event is an outcome of a message Beckon sent (as [`delivery_event`] builds
/// it): one of the names above, carrying the message's idempotency key. Such an event follows
/// from a user's state, so a user with none (forgotten since the send) has nothing it is
/// about.
pub fn is_delivery_outcome(event: &Event) -> bool {
    beckon_core::delivery::is_outcome(event)
}

/// Where delivery events go: ingest in a deployment, a vector in tests.
///
/// Emitting never fails from the adapter's point of view; a sink that cannot forward an event
/// keeps or drops it by its own policy, because a message already delivered must not be
/// reported as failed. Events belong to the workspace of the message they are about.
pub trait EventSink: Send + Sync + 'static {
    fn emit<'a>(&'a self, workspace: &'a str, event: Event) -> BoxFuture<'a, ()>;

    /// Hands `event` over and answers only once it is taken where it goes (forwarded to
    /// ingest, appended to the log), or with the reason it could not be. For an event that
    /// is the whole point of its caller's request (a reported outcome), which must not be
    /// acknowledged and then lost.
    fn deliver<'a>(
        &'a self,
        workspace: &'a str,
        event: Event,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;
}

/// Keeps events in memory, in order, with their workspace.
#[derive(Clone, Debug, Default)]
pub struct MemorySink {
    events: Arc<Mutex<Vec<(String, Event)>>>,
}

impl MemorySink {
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    pub fn events(&self) -> Vec<Event> {
        self.scoped().into_iter().map(|(_, e)| e).collect()
    }

    /// The events with the workspace each was emitted for.
    pub fn scoped(&self) -> Vec<(String, Event)> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// The events with the given name.
    pub fn named(&self, name: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.name == name)
            .collect()
    }
}

impl EventSink for MemorySink {
    fn emit<'a>(&'a self, workspace: &'a str, event: Event) -> BoxFuture<'a, ()> {
        if let Ok(mut events) = self.events.lock() {
            events.push((workspace.to_string(), event));
        }
        Box::pin(async {})
    }

    fn deliver<'a>(
        &'a self,
        workspace: &'a str,
        event: Event,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            self.emit(workspace, event).await;
            Ok(())
        })
    }
}

/// Builds a delivery event about `message`.
///
/// The event id is derived from the idempotency key, the event name and `discriminator`
/// (a device, say), so an outcome reported twice after a crash is deduplicated by ingest.
pub fn delivery_event(
    name: &str,
    message: &OutboundMessage,
    provider: &str,
    discriminator: &str,
    at: Ts,
    extra: Props,
) -> Event {
    let mut properties = Props::new();
    properties.insert("channel".into(), Value::from(message.channel.clone()));
    properties.insert("provider".into(), Value::from(provider));
    properties.insert("journey".into(), Value::from(message.journey.clone()));
    properties.insert("version".into(), Value::from(message.version));
    properties.insert("step".into(), Value::from(message.step.clone()));
    properties.insert(
        "idempotency_key".into(),
        Value::from(message.idempotency_key.clone()),
    );
    if let Some(instance) = message.instance {
        properties.insert("instance".into(), Value::from(instance));
    }
    properties.extend(extra);

    let id_source = format!("{}\n{name}\n{discriminator}", message.idempotency_key);
    Event {
        kind: EventKind::Track,
        message_id: format!("gw-{}", crate::crypto::sha256_hex(id_source.as_bytes(), 16)),
        user: message.user_id.clone(),
        anonymous_id: None,
        name: name.to_string(),
        properties,
        traits: Props::new(),
        timestamp: at,
        previous_id: None,
    }
}
