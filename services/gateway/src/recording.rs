//! A channel that records what it is given: replay's way out, and a witness in tests.

use std::sync::{Arc, Mutex};

use beckon_core::OutboundMessage;
use futures::future::BoxFuture;

use crate::channel::{Channel, Delivery};
use crate::error::GatewayError;

#[derive(Clone, Default)]
pub struct RecordingChannel {
    messages: Arc<Mutex<Vec<OutboundMessage>>>,
}

impl RecordingChannel {
    pub fn new() -> RecordingChannel {
        RecordingChannel::default()
    }

    /// Everything recorded so far, in the order it was sent.
    pub fn messages(&self) -> Vec<OutboundMessage> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn take(&self) -> Vec<OutboundMessage> {
        self.messages
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

impl Channel for RecordingChannel {
    fn provider(&self) -> &str {
        "recording"
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Delivery, GatewayError>> {
        Box::pin(async move {
            let mut all = self
                .messages
                .lock()
                .map_err(|_| GatewayError::Unavailable {
                    provider: "recording".into(),
                    reason: "recorder poisoned".into(),
                })?;
            all.push(message.clone());
            Ok(Delivery {
                provider_id: format!("rec-{}", all.len()),
                duplicate: false,
                deferred: false,
            })
        })
    }
}
