//! Sends a provider could not take, kept and retried apart from the partition that made them.
//!
//! A journey's send is part of applying one log entry: before this queue, a provider that was
//! down failed the whole batch, and the partition retried it until the provider came back, so
//! no other user in the partition moved on (no goal, no exit) meanwhile. With a queue, the
//! partition's send gets one attempt, and a send that fails in a way a later attempt may fix is
//! written here and answered `deferred`; the partition goes on, and
//! [`crate::Gateway::redeliver_due`] sends it again with backoff, each time with the adapter's
//! whole retry policy.
//!
//! Exactly once still rests on the idempotency key store: a deferred message retried here and
//! the same message sent again by a redelivered batch claim the same key, so one of them goes
//! out. A message that stays undeliverable past the policy's `give_up_after` is dropped and
//! reported as a final `Message Failed` event, so journeys can branch on it.
//!
//! Each step is reported to the message's user as an event ([`beckon_core::delivery`]):
//! `Message Deferred` when the message is first kept here, then one of `Deferred Message
//! Sent`, `Message Withdrawn` or `Message Failed`. The user's state notes each beside the
//! journey's `sent` decision, so an explanation of the user says what became of the message.
//!
//! Stores: [`MemoryRetryQueue`] here, lost with the process like the in-memory key store it
//! goes with; [`crate::redis_retry::RedisRetryQueue`], shared by every gateway replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use beckon_core::{Duration, OutboundMessage, Ts};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::GatewayError;
use crate::policy::RetryPolicy;

/// A message waiting for its next attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deferred {
    pub message: OutboundMessage,
    /// Attempts made since it was deferred (the send that deferred it not counted).
    pub attempts: u32,
    /// When the first attempt failed: the message's age in the queue counts from here.
    pub since: Ts,
    /// Why the last attempt failed.
    #[serde(default)]
    pub reason: String,
    /// The token of a claim the last attempt may have left on the message's idempotency
    /// key without reaching any provider: the next attempt claims with it, and so takes
    /// that claim over instead of finding the send in doubt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
}

/// How the queue retries and when it gives up.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryQueuePolicy {
    /// Wait before attempt `n` after deferral: `n = 1` for the first retry.
    pub backoff: RetryPolicy,
    /// A message still undelivered this long after its first failure is dropped: by then it
    /// is unlikely to mean what it meant when the user's behavior asked for it.
    pub give_up_after: Duration,
    /// How long a taken entry is hidden from other takers; a gateway that dies mid-attempt
    /// leaves it to another after this.
    pub hold: Duration,
    /// Entries taken per pass.
    pub batch: usize,
}

impl Default for RetryQueuePolicy {
    fn default() -> Self {
        RetryQueuePolicy {
            backoff: RetryPolicy {
                max_attempts: u32::MAX,
                base_delay: std::time::Duration::from_secs(2),
                max_delay: std::time::Duration::from_secs(300),
            },
            give_up_after: Duration::hours(6),
            hold: Duration::from_millis(60_000),
            batch: 64,
        }
    }
}

impl RetryQueuePolicy {
    /// When attempt `attempt` (1-based, counted from deferral) is due, from `now`.
    pub fn next_due(&self, now: Ts, attempt: u32) -> Ts {
        let unit = crate::policy::retry_jitter();
        let wait = self.backoff.delay(attempt, unit, None);
        let ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        now.saturating_add(Duration(ms))
    }
}

/// Where deferred messages wait. Entries are keyed by (workspace, idempotency key).
pub trait RetryQueue: Send + Sync + 'static {
    /// Keeps `entry` until `due`; true when it is kept now. An entry kept already under the
    /// same key is left as it is (and false returned): a batch redelivered while its message
    /// waits here keeps the first deferral's age.
    fn defer<'a>(
        &'a self,
        entry: &'a Deferred,
        due: Ts,
    ) -> BoxFuture<'a, Result<bool, GatewayError>>;

    /// Up to `limit` entries due at `now`, each hidden from other takers until `now + hold`.
    fn take_due<'a>(
        &'a self,
        now: Ts,
        hold: Duration,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Deferred>, GatewayError>>;

    /// Puts a taken entry back for another attempt at `due`. Nothing happens when the entry
    /// is gone meanwhile (its user was forgotten).
    fn retry_at<'a>(
        &'a self,
        entry: &'a Deferred,
        due: Ts,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// Removes the entry of a message sent, refused for good, or given up on.
    fn remove<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// Erases every entry of one user (right to be forgotten).
    fn forget_user<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// How many entries wait, taken or not.
    fn waiting(&self) -> BoxFuture<'_, Result<u64, GatewayError>>;
}

/// Whether a deferred message still means something: a message whose journey instance has
/// since ended on a goal or an exit rule (the user bought, the cart was emptied) would now
/// only annoy, so it is withdrawn instead of sent.
pub trait Relevance: Send + Sync + 'static {
    /// Why `message` should no longer be sent, or `None` to send it.
    fn withdrawn<'a>(&'a self, message: &'a OutboundMessage) -> BoxFuture<'a, Option<String>>;
}

/// What one pass over the due entries did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Redelivered {
    /// Delivered now, or found delivered already by another send of the same key; reported
    /// as `Deferred Message Sent`.
    pub sent: u64,
    /// Failed again and put back for later.
    pub retried: u64,
    /// Refused for good by the provider, with a final `Message Failed` event.
    pub refused: u64,
    /// Past `give_up_after`, dropped with a final `Message Failed` event.
    pub given_up: u64,
    /// Dropped unsent: its journey instance ended on a goal or an exit rule meanwhile;
    /// reported as `Message Withdrawn`.
    pub withdrawn: u64,
}

impl Redelivered {
    pub fn total(&self) -> u64 {
        self.sent + self.retried + self.refused + self.given_up + self.withdrawn
    }
}

#[derive(Clone, Debug)]
struct Held {
    entry: Deferred,
    due: Ts,
}

/// Entries in process memory, in a [`Gateway`](crate::Gateway) without Redis. Clones share
/// the entries.
#[derive(Clone, Debug, Default)]
pub struct MemoryRetryQueue {
    entries: Arc<Mutex<HashMap<(String, String), Held>>>,
}

impl MemoryRetryQueue {
    pub fn new() -> MemoryRetryQueue {
        MemoryRetryQueue::default()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut HashMap<(String, String), Held>) -> T,
    ) -> Result<T, GatewayError> {
        self.entries
            .lock()
            .map(|mut map| f(&mut map))
            .map_err(|_| GatewayError::KeyStore("in-memory retry queue poisoned".into()))
    }
}

fn scoped(message: &OutboundMessage) -> (String, String) {
    (message.workspace.clone(), message.idempotency_key.clone())
}

impl RetryQueue for MemoryRetryQueue {
    fn defer<'a>(
        &'a self,
        entry: &'a Deferred,
        due: Ts,
    ) -> BoxFuture<'a, Result<bool, GatewayError>> {
        let result = self.with(|map| match map.entry(scoped(&entry.message)) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Held {
                    entry: entry.clone(),
                    due,
                });
                true
            }
        });
        Box::pin(async move { result })
    }

    fn take_due<'a>(
        &'a self,
        now: Ts,
        hold: Duration,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Deferred>, GatewayError>> {
        let result = self.with(|map| {
            let mut due: Vec<&mut Held> = map.values_mut().filter(|h| h.due <= now).collect();
            due.sort_by_key(|h| h.due);
            due.into_iter()
                .take(limit)
                .map(|held| {
                    held.due = now.saturating_add(hold);
                    held.entry.clone()
                })
                .collect()
        });
        Box::pin(async move { result })
    }

    fn retry_at<'a>(
        &'a self,
        entry: &'a Deferred,
        due: Ts,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        let result = self.with(|map| {
            if let Some(held) = map.get_mut(&scoped(&entry.message)) {
                held.entry = entry.clone();
                held.due = due;
            }
        });
        Box::pin(async move { result })
    }

    fn remove<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        let result = self.with(|map| {
            map.remove(&scoped(message));
        });
        Box::pin(async move { result })
    }

    fn forget_user<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        let result = self.with(|map| {
            map.retain(|(w, _), held| w != workspace || held.entry.message.user_id != user);
        });
        Box::pin(async move { result })
    }

    fn waiting(&self) -> BoxFuture<'_, Result<u64, GatewayError>> {
        let result = self.with(|map| map.len() as u64);
        Box::pin(async move { result })
    }
}

/// Works a gateway's retry queue until `stop` resolves: a pass every `every`, and passes back
/// to back while each finds a full batch, so a backlog left by an outage drains at the
/// providers' pace rather than a batch per tick. Publishes the queue's length as
/// `beckon.sends.deferred`.
pub async fn work(
    gateway: crate::Gateway,
    every: std::time::Duration,
    metrics: beckon_telemetry::Metrics,
    stop: impl std::future::Future<Output = ()>,
) {
    let Some((queue, clock, batch)) = gateway.retry_parts() else {
        return;
    };
    tokio::pin!(stop);
    // An unreachable store fails every pass; a line every half minute says so.
    let warnings = beckon_telemetry::LogRateLimiter::new(clock, 1, Duration::from_millis(30_000));
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(every) => {}
        }

        loop {
            match gateway.redeliver_due().await {
                Ok(pass) if pass.total() > 0 => {
                    tracing::debug!(
                        sent = pass.sent,
                        retried = pass.retried,
                        refused = pass.refused,
                        given_up = pass.given_up,
                        withdrawn = pass.withdrawn,
                        "retry queue pass"
                    );
                    // Only a pass that found as many as it may take can have left some due.
                    if pass.total() < batch as u64 {
                        break;
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    if let beckon_telemetry::Admit::Log { suppressed } = warnings.admit("pass") {
                        tracing::warn!(error = %e, suppressed, "retry queue unreadable");
                    }
                    break;
                }
            }
        }
        if let Ok(n) = queue.waiting().await {
            metrics.set_sends_deferred(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}
