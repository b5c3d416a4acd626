//! A gateway whose channels record every message to a JSON-lines file (or memory), for
//! development and for tests that run the services as processes. Provider adapters (APNs,
//! FCM, SMTP, SMS, webhook) plug into the same [`Gateway`] through configuration of their own.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use beckon_core::OutboundMessage;
use beckon_gateway::{Channel, Delivery, Gateway, GatewayError, RecordingChannel};
use futures::future::BoxFuture;

/// The channels a served gateway records to.
pub const CHANNELS: [&str; 5] = ["push", "in_app", "email", "sms", "webhook"];

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

/// A gateway whose every channel records to `out` (a file) or to memory.
pub fn recording_gateway(out: Option<PathBuf>) -> Gateway {
    let channel: Arc<dyn Channel> = match out {
        Some(path) => Arc::new(FileChannel::new(path)),
        None => Arc::new(RecordingChannel::new()),
    };
    CHANNELS
        .iter()
        .fold(Gateway::new(), |g, c| g.with(c, channel.clone()))
}
