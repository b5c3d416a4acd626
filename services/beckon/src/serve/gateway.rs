//! The gateway of `beckon serve`: every channel records to a JSON-lines file (or memory)
//! unless the `providers` settings route it to a provider (APNs, FCM, SMTP, SMS, webhook,
//! the in-app inbox). Contact addresses and device tokens come from the users' state, and
//! delivery outcomes go back into the event log as events.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use beckon_core::{Event, OutboundMessage, devices};
use beckon_gateway::{
    Channel, Delivery, DeviceRegistry, EventSink, Gateway, GatewayError, Recipients,
    RecordingChannel,
};
use beckon_ingest::log::EventLog;
use beckon_user_state::StateStore;
use futures::future::BoxFuture;

/// The channels a served gateway records to.
pub const CHANNELS: [&str; 6] = ["push", "in_app", "email", "sms", "webhook", "live_activity"];

/// Appends each message as one JSON line: a channel for development and for tests that run
/// the services as processes and need to see what went out.
pub struct FileChannel {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileChannel {
    pub fn new(path: PathBuf) -> FileChannel {
        FileChannel {
            path,
            lock: Mutex::new(()),
        }
    }
}

impl Channel for FileChannel {
    fn provider(&self) -> &str {
        "file"
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Delivery, GatewayError>> {
        Box::pin(async move {
            let unavailable = |e: std::io::Error| GatewayError::Unavailable {
                provider: "file".into(),
                reason: e.to_string(),
            };
            // One write per line: processes sharing the file append whole lines.
            let mut line = crate::replay::message_json(message).to_string();
            line.push('\n');
            let _guard = self.lock.lock().map_err(|_| GatewayError::Unavailable {
                provider: "file".into(),
                reason: "lock poisoned".into(),
            })?;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(unavailable)?;
            f.write_all(line.as_bytes()).map_err(unavailable)?;
            f.sync_data().map_err(unavailable)?;
            Ok(Delivery {
                provider_id: message.idempotency_key.clone(),
                duplicate: false,
            })
        })
    }
}

/// The recorder of a served gateway: `out` (a file) or memory.
pub fn recorder(out: Option<PathBuf>) -> Arc<dyn Channel> {
    match out {
        Some(path) => Arc::new(FileChannel::new(path)),
        None => Arc::new(RecordingChannel::new()),
    }
}

/// A gateway whose every channel records to `out` (a file) or to memory.
pub fn recording_gateway(out: Option<PathBuf>) -> Gateway {
    let channel = recorder(out);
    CHANNELS
        .iter()
        .fold(Gateway::new(), |g, c| g.with(c, channel.clone()))
}

/// Email addresses, phone numbers and device tokens read from the users' state (the
/// `email`, `phone` and `devices` traits, see [`beckon_core::devices`]).
///
/// Removing a device does nothing here: the adapter reports the invalid token as an event,
/// and the user's actor, the only writer of the state, removes it when it applies the event.
pub struct StateContacts {
    store: Arc<dyn StateStore>,
}

impl StateContacts {
    pub fn new(store: Arc<dyn StateStore>) -> StateContacts {
        StateContacts { store }
    }

    async fn state(&self, workspace: &str, user: &str) -> Option<beckon_core::UserState> {
        match self.store.load(workspace, user).await {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(beckon.workspace = %workspace, error = %e, "contacts not read");
                None
            }
        }
    }
}

impl Recipients for StateContacts {
    fn email<'a>(&'a self, workspace: &'a str, user: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let state = self.state(workspace, user).await?;
            devices::address(&state, devices::EMAIL_TRAIT)
        })
    }

    fn phone<'a>(&'a self, workspace: &'a str, user: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let state = self.state(workspace, user).await?;
            devices::address(&state, devices::PHONE_TRAIT)
        })
    }
}

impl DeviceRegistry for StateContacts {
    fn tokens<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        platform: &'a str,
    ) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            self.state(workspace, user)
                .await
                .map(|state| devices::tokens(&state, platform))
                .unwrap_or_default()
        })
    }

    fn remove<'a>(
        &'a self,
        _workspace: &'a str,
        _user: &'a str,
        _platform: &'a str,
        _token: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// Delivery events appended straight to the event log, for `serve all` where ingest runs in
/// the same process. Event ids are derived from the send, so a repeat is appended once.
pub struct AppendSink {
    log: Arc<dyn EventLog>,
}

impl AppendSink {
    pub fn new(log: Arc<dyn EventLog>) -> AppendSink {
        AppendSink { log }
    }
}

impl EventSink for AppendSink {
    fn emit<'a>(&'a self, workspace: &'a str, event: Event) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // Emitted inside the send's span: the outcome's entry continues that trace, so
            // a journey branching on it is part of the same story.
            let tp = beckon_telemetry::current_trace_string();
            if let Err(e) = self.log.append(workspace, &event, tp.as_deref()).await {
                tracing::warn!(
                    beckon.workspace = %workspace,
                    messaging.message.id = %event.message_id,
                    error = %e,
                    "delivery event not appended"
                );
            }
        })
    }
}

/// Delivery events with nowhere to go (a gateway alone with no ingest URL): dropped, as the
/// start-up log said.
pub struct NoSink;

impl EventSink for NoSink {
    fn emit<'a>(&'a self, _workspace: &'a str, event: Event) -> BoxFuture<'a, ()> {
        tracing::debug!(messaging.message.id = %event.message_id, "delivery event not forwarded");
        Box::pin(async {})
    }
}
