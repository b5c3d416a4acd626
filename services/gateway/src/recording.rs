//! A channel that records what it is given: replay's way out, and a witness in tests.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use beckon_core::OutboundMessage;
use futures::future::BoxFuture;

use crate::channel::{Channel, Delivery};
use crate::error::GatewayError;

/// What has been recorded: the kept messages, oldest first, and how many were ever sent.
#[derive(Default)]
struct Recorded {
    kept: VecDeque<OutboundMessage>,
    sent: u64,
}

/// Records every message sent on it, or with [`RecordingChannel::with_capacity`] only the
/// most recent ones: a long-running process with nowhere else to send must not grow for ever.
#[derive(Clone, Default)]
pub struct RecordingChannel {
    recorded: Arc<Mutex<Recorded>>,
    /// The most messages kept; `None` keeps them all.
    capacity: Option<usize>,
}

impl RecordingChannel {
    /// A recorder that keeps everything: for a replay, whose output is the whole run, and for
    /// tests.
    pub fn new() -> RecordingChannel {
        RecordingChannel::default()
    }

    /// A recorder that keeps the `capacity` most recent messages, dropping the oldest.
    pub fn with_capacity(capacity: usize) -> RecordingChannel {
        RecordingChannel {
            recorded: Arc::default(),
            capacity: Some(capacity),
        }
    }

    /// The most messages this recorder keeps, if it is bounded.
    pub fn capacity(&self) -> Option<usize> {
        self.capacity
    }

    /// Everything kept so far, in the order it was sent.
    pub fn messages(&self) -> Vec<OutboundMessage> {
        self.recorded
            .lock()
            .map(|r| r.kept.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many messages were sent on this recorder, kept or not.
    pub fn sent(&self) -> u64 {
        self.recorded.lock().map(|r| r.sent).unwrap_or_default()
    }

    pub fn take(&self) -> Vec<OutboundMessage> {
        self.recorded
            .lock()
            .map(|mut r| std::mem::take(&mut r.kept).into())
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
            let mut recorded = self
                .recorded
                .lock()
                .map_err(|_| GatewayError::Unavailable {
                    provider: "recording".into(),
                    reason: "recorder poisoned".into(),
                })?;
            if self.capacity == Some(0) {
                recorded.sent += 1;
                return Ok(delivery(recorded.sent));
            }
            if self.capacity.is_some_and(|c| recorded.kept.len() >= c) {
                recorded.kept.pop_front();
            }
            recorded.kept.push_back(message.clone());
            recorded.sent += 1;
            Ok(delivery(recorded.sent))
        })
    }
}

/// The delivery of the `n`th message sent: its number stays unique when older ones are gone.
fn delivery(n: u64) -> Delivery {
    Delivery {
        provider_id: format!("rec-{n}"),
        duplicate: false,
        deferred: false,
    }
}

#[cfg(test)]
mod tests {
    use beckon_core::Ts;

    use super::*;

    fn message(n: usize) -> OutboundMessage {
        OutboundMessage {
            idempotency_key: format!("key-{n}"),
            workspace: "default".into(),
            user_id: format!("user-{n}"),
            journey: "welcome".into(),
            version: 1,
            instance: None,
            step: "hello".into(),
            channel: "push".into(),
            at: Ts::from_millis(1_700_000_000_000),
            title: None,
            subject: None,
            body: "b".repeat(8 * 1024),
            to: None,
        }
    }

    #[tokio::test]
    async fn a_bounded_recorder_keeps_only_the_most_recent_messages() {
        let recorder = RecordingChannel::with_capacity(100);

        let mut ids = Vec::new();
        for n in 0..130 {
            ids.push(recorder.send(&message(n)).await.expect("sent").provider_id);
        }

        let kept: Vec<String> = recorder
            .messages()
            .into_iter()
            .map(|m| m.idempotency_key)
            .collect();
        let expected: Vec<String> = (30..130).map(|n| format!("key-{n}")).collect();
        assert_eq!(kept, expected);
        assert_eq!(recorder.sent(), 130);

        // Every send still has its own provider id, though the first ones are gone.
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 130);
    }

    #[tokio::test]
    async fn an_unbounded_recorder_keeps_everything() {
        let recorder = RecordingChannel::new();
        for n in 0..130 {
            recorder.send(&message(n)).await.expect("sent");
        }
        assert_eq!(recorder.messages().len(), 130);
        assert_eq!(recorder.take().len(), 130);
        assert!(recorder.messages().is_empty());
    }
}
