//! The adapter contract and the router in front of the adapters.

use std::collections::HashMap;
use std::sync::Arc;

use beckon_core::{Clock, OutboundMessage, Props};
use beckon_telemetry::Metrics;
use futures::future::BoxFuture;
use serde_json::Value;
use tracing::Instrument as _;

use crate::error::GatewayError;
use crate::events::{self, EventSink};
use crate::keys::{Claim, KeyStore, MemoryKeyStore, SendKey};
use crate::retry_queue::{Deferred, Redelivered, Relevance, RetryQueue, RetryQueuePolicy};

/// What a provider said about an accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The provider's id for the message, when it gives one.
    pub provider_id: String,
    /// True when the idempotency key had been delivered before and nothing was sent now.
    pub duplicate: bool,
    /// True when the provider could not take the message now and it waits in the gateway's
    /// retry queue instead.
    pub deferred: bool,
}

/// How hard one send tries before it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tries {
    /// Every attempt the adapter's retry policy allows, with its backoff between them.
    Policy,
    /// One attempt per recipient. With `within`, the whole send also ends by then: a
    /// recipient still without an answer counts as one the provider could not take now.
    Once { within: Option<std::time::Duration> },
}

/// One way out: push, email, SMS, webhook, in-app, or a recorder.
pub trait Channel: Send + Sync + 'static {
    /// Short name used in metrics and logs (`apns`, `smtp`, `recording`).
    fn provider(&self) -> &str;

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Delivery, GatewayError>>;

    /// [`Channel::send`], trying only as hard as `tries` allows. A channel without retries
    /// of its own (a recorder, the inbox) makes its one attempt either way.
    fn send_trying<'a>(
        &'a self,
        message: &'a OutboundMessage,
        tries: Tries,
    ) -> BoxFuture<'a, Result<Delivery, GatewayError>> {
        let _ = tries;
        self.send(message)
    }

    /// True when the provider itself drops a repeated idempotency key (a webhook receiver
    /// honouring `Idempotency-Key`), so a send whose earlier attempt is in doubt may be
    /// repeated. Providers without that guarantee are not sent to again: at most once.
    fn resends_safely(&self) -> bool {
        false
    }

    /// True when the channel reports its own refusals as `Message Failed` (the provider
    /// adapters do); the gateway reports them for the channels that do not.
    fn reports_refusals(&self) -> bool {
        false
    }
}

/// Routes messages to the adapter of their channel, delivering each idempotency key once.
///
/// Keys live in a [`KeyStore`]: in memory by default, shared between gateway processes when
/// the store is. A send claims its key before the provider is called and records the
/// provider's id after, so a repeat of a delivered key is answered from the store. A key left
/// claimed by a gateway that died mid-send is "in doubt": it is sent again only through an
/// adapter whose provider deduplicates by key ([`Channel::resends_safely`]).
#[derive(Clone)]
pub struct Gateway {
    adapters: HashMap<String, Arc<dyn Channel>>,
    keys: Arc<dyn KeyStore>,
    metrics: Metrics,
    retry: Option<Retrying>,
    held: Arc<HeldClaims>,
}

/// A key's sends in this process, one at a time, and the token of the claim the last of them
/// left on the key without reaching a provider.
type KeySlot = Arc<tokio::sync::Mutex<Option<String>>>;

/// The keys this process is sending, or holds a claim on.
///
/// A claim whose answer was lost (the store timed out, or went away mid-call) may have been
/// written all the same, and only its token can take it over; a send that finds it under
/// another token has to treat the message as in doubt and never sends it. When such an
/// attempt cannot be deferred either, its caller gets an error and sends again: the token
/// waits here for that send. Sends of one key in this process also go one at a time, so a
/// caller that gave up waiting and sent again is answered after the first attempt (from the
/// store, or by taking over what it left) instead of racing it under a token of its own.
#[derive(Default)]
struct HeldClaims {
    slots: std::sync::Mutex<HashMap<String, KeySlot>>,
}

impl HeldClaims {
    fn name(key: SendKey<'_>) -> String {
        // Joined by a control character, which keeps two different keys from one name.
        [key.workspace, key.user, key.key].join("\u{1f}")
    }

    fn slot(&self, name: &str) -> KeySlot {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.entry(name.to_string()).or_default().clone()
    }

    /// Forgets the key once no send of it is waiting and it holds no claim.
    fn done_with(&self, name: &str, slot: &KeySlot) {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The map's reference and this one: nobody else waits on the slot.
        let alone = Arc::strong_count(slot) <= 2;
        let empty = slot.try_lock().is_ok_and(|held| held.is_none());
        if alone && empty {
            slots.remove(name);
        }
    }
}

/// A send's use of its key's slot, given back however the send ends: one dropped half-way
/// (its caller stopped waiting) leaves no empty slot behind in the map.
struct SlotInUse<'a> {
    held: &'a HeldClaims,
    name: String,
    slot: KeySlot,
}

impl<'a> SlotInUse<'a> {
    fn take(held: &'a HeldClaims, name: String) -> SlotInUse<'a> {
        let slot = held.slot(&name);
        SlotInUse { held, name, slot }
    }
}

impl Drop for SlotInUse<'_> {
    fn drop(&mut self) {
        self.held.done_with(&self.name, &self.slot);
    }
}

/// Which send of a message this is.
#[derive(Clone, Copy, Debug)]
enum Pass {
    /// The send a caller asked for; `within` is how long the caller waits for the answer.
    First { within: Option<std::time::Duration> },
    /// A retry from the gateway's own queue.
    Retry,
}

/// The queue, the clock and the batch of a pass: what working a retry queue needs.
pub(crate) type RetryParts = (Arc<dyn RetryQueue>, Arc<dyn Clock>, usize);

/// A gateway's retry queue and what it needs to work it.
#[derive(Clone)]
struct Retrying {
    queue: Arc<dyn RetryQueue>,
    policy: RetryQueuePolicy,
    clock: Arc<dyn Clock>,
    /// Where what the queue does with a message is reported: deferred, sent, withdrawn, or
    /// given up on (a final `Message Failed`).
    sink: Arc<dyn EventSink>,
    /// Asked before each retry whether the message still means something.
    relevance: Option<Arc<dyn Relevance>>,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            adapters: HashMap::new(),
            keys: Arc::new(MemoryKeyStore::new()),
            metrics: Metrics::global(),
            retry: None,
            held: Arc::default(),
        }
    }
}

impl Gateway {
    pub fn new() -> Gateway {
        Gateway::default()
    }

    /// Keeps idempotency keys in `keys` instead of this process's memory.
    pub fn with_key_store(mut self, keys: Arc<dyn KeyStore>) -> Gateway {
        self.keys = keys;
        self
    }

    /// Sends messages on `channel` (`push`, `email`, ...) through `adapter`.
    pub fn with(mut self, channel: &str, adapter: Arc<dyn Channel>) -> Gateway {
        self.adapters.insert(channel.to_string(), adapter);
        self
    }

    /// Counts deliveries on `metrics` instead of the global meter.
    pub fn with_metrics(mut self, metrics: Metrics) -> Gateway {
        self.metrics = metrics;
        self
    }

    /// The key store this gateway records sends in.
    pub fn key_store(&self) -> &Arc<dyn KeyStore> {
        &self.keys
    }

    /// Defers sends a later attempt may deliver to `queue` instead of failing them, and
    /// reports to `sink` what becomes of each: `Message Deferred`, then `Deferred Message
    /// Sent`, `Message Withdrawn` or a final `Message Failed`. Time (deferral, backoff,
    /// giving up) comes from `clock`.
    pub fn with_retry_queue(
        mut self,
        queue: Arc<dyn RetryQueue>,
        policy: RetryQueuePolicy,
        clock: Arc<dyn Clock>,
        sink: Arc<dyn EventSink>,
    ) -> Gateway {
        self.retry = Some(Retrying {
            queue,
            policy,
            clock,
            sink,
            relevance: None,
        });
        self
    }

    /// Before each retry from the queue, asks `relevance` whether the message still means
    /// something, and withdraws it unsent when it does not. Needs a retry queue first.
    pub fn with_relevance(mut self, relevance: Arc<dyn Relevance>) -> Gateway {
        if let Some(retry) = &mut self.retry {
            retry.relevance = Some(relevance);
        }
        self
    }

    /// What working the retry queue needs: the queue, the clock, the batch of a pass.
    pub(crate) fn retry_parts(&self) -> Option<RetryParts> {
        self.retry
            .as_ref()
            .map(|r| (r.queue.clone(), r.clock.clone(), r.policy.batch))
    }

    /// The retry queue deferred sends wait in, when there is one.
    pub fn retry_queue(&self) -> Option<&Arc<dyn RetryQueue>> {
        self.retry.as_ref().map(|r| &r.queue)
    }

    /// Delivers `message` once per idempotency key, inside a `gateway.send` span, and counts
    /// the outcome in `beckon.deliveries`.
    ///
    /// With a retry queue, the provider gets one attempt (per recipient, bounded by the
    /// adapter's call timeout); a send it could not take now (no answer, a retryable answer,
    /// or its circuit open) is deferred to the queue and answered with
    /// [`Delivery::deferred`], and the queue's retries follow the adapter's whole policy. The
    /// caller, a user-state partition applying a batch, is held for one attempt at most,
    /// not for every retry and backoff. When the queue cannot be written, that attempt's
    /// failure is returned for the caller to retry. Without a queue, the adapter's whole
    /// policy is tried, and a send still failing fails with the provider's error.
    pub async fn send(&self, message: &OutboundMessage) -> Result<Delivery, GatewayError> {
        self.send_in_span(message, Pass::First { within: None }, None, &mut None)
            .await
    }

    /// [`Gateway::send`] for a caller that waits no longer than `within`: with a retry queue,
    /// a provider still silent by then is given up on for now and the message deferred, so
    /// the caller gets its answer in time. Without a queue, the same as [`Gateway::send`].
    pub async fn send_within(
        &self,
        message: &OutboundMessage,
        within: std::time::Duration,
    ) -> Result<Delivery, GatewayError> {
        let within = Some(within);
        self.send_in_span(message, Pass::First { within }, None, &mut None)
            .await
    }

    /// One send. `held` is the token of a claim an earlier attempt left on the key without
    /// reaching a provider; a claim this attempt leaves so is put in `leftover` (a first
    /// send keeps it in the deferred entry itself).
    async fn send_in_span(
        &self,
        message: &OutboundMessage,
        pass: Pass,
        held: Option<&str>,
        leftover: &mut Option<String>,
    ) -> Result<Delivery, GatewayError> {
        let span = tracing::info_span!(
            "gateway.send",
            beckon.workspace = %message.workspace,
            beckon.journey = %message.journey,
            beckon.step = %message.step,
            beckon.channel = %message.channel,
            beckon.provider = tracing::field::Empty,
            beckon.outcome = tracing::field::Empty,
        );
        let recorded = span.clone();
        let first = matches!(pass, Pass::First { .. });
        let tries = match (pass, &self.retry) {
            (Pass::First { within }, Some(_)) => Tries::Once { within },
            _ => Tries::Policy,
        };
        let result = async {
            match (self.route(message, tries, held).await, &self.retry) {
                ((Err(e), left), Some(retry)) if first && e.is_retryable() => {
                    self.defer(retry, message, e, left).await
                }
                ((result, left), _) => {
                    if let Some(left) = left {
                        *leftover = Some(left);
                    }
                    result
                }
            }
        }
        .instrument(span)
        .await;

        // The channel is a label only when an adapter serves it; anything else a caller sent
        // would add a time series per distinct value.
        let (channel, provider) = match self.adapters.get(&message.channel) {
            Some(adapter) => (message.channel.as_str(), adapter.provider()),
            None => ("other", "none"),
        };
        let outcome = outcome(&result);
        recorded.record("beckon.provider", provider);
        recorded.record("beckon.outcome", outcome);
        self.metrics.delivery(channel, provider, outcome);
        result
    }

    /// Keeps `message` in the retry queue after `failure`; the failure stands when it cannot.
    async fn defer(
        &self,
        retry: &Retrying,
        message: &OutboundMessage,
        failure: GatewayError,
        claim: Option<String>,
    ) -> Result<Delivery, GatewayError> {
        let now = retry.clock.now();
        let entry = Deferred {
            message: message.clone(),
            attempts: 0,
            since: now,
            reason: failure.to_string(),
            claim,
        };
        match retry
            .queue
            .defer(&entry, retry.policy.next_due(now, 1))
            .await
        {
            Ok(kept_now) => {
                tracing::info!(
                    beckon.idempotency_key = %message.idempotency_key,
                    reason = %failure,
                    "send deferred"
                );
                // Not a failure: the user's record says the message waits, and why. A batch
                // sent again while it waits changes nothing, so says nothing.
                if kept_now {
                    let mut extra = Props::new();
                    extra.insert("reason".into(), Value::from(failure.to_string()));
                    self.report(retry, events::MESSAGE_DEFERRED, message, "", extra)
                        .await;
                }
                Ok(Delivery {
                    provider_id: String::new(),
                    duplicate: false,
                    deferred: true,
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, reason = %failure, "send could not be deferred");
                Err(failure)
            }
        }
    }

    /// One pass over the retry queue: takes the entries due now (up to the policy's batch)
    /// and attempts each again. Delivered and refused entries leave the queue; the others go
    /// back with a longer wait, or, past `give_up_after`, leave it with a final `Message
    /// Failed` event. Fails only when the queue itself cannot be read.
    pub async fn redeliver_due(&self) -> Result<Redelivered, GatewayError> {
        let mut done = Redelivered::default();
        let Some(retry) = &self.retry else {
            return Ok(done);
        };
        let now = retry.clock.now();
        let taken = retry
            .queue
            .take_due(now, retry.policy.hold, retry.policy.batch)
            .await?;

        for mut entry in taken {
            let withdrawn = match &retry.relevance {
                Some(relevance) => relevance.withdrawn(&entry.message).await,
                None => None,
            };
            if let Some(why) = withdrawn {
                tracing::info!(
                    beckon.idempotency_key = %entry.message.idempotency_key,
                    beckon.journey = %entry.message.journey,
                    reason = %why,
                    "deferred send withdrawn"
                );
                retry.queue.remove(&entry.message).await?;
                let mut extra = Props::new();
                extra.insert("reason".into(), Value::from(why));
                let message = &entry.message;
                self.report(retry, events::MESSAGE_WITHDRAWN, message, "", extra)
                    .await;
                done.withdrawn += 1;
                continue;
            }

            let held = entry.claim.clone();
            let mut left = None;
            let result = self
                .send_in_span(&entry.message, Pass::Retry, held.as_deref(), &mut left)
                .await;
            // The next attempt takes over what this one left, or claims afresh.
            entry.claim = left;
            let kept = match result {
                Ok(delivery) => {
                    let mut extra = Props::new();
                    extra.insert("attempts".into(), Value::from(entry.attempts + 1));
                    extra.insert("provider_id".into(), Value::from(delivery.provider_id));
                    let message = &entry.message;
                    self.report(retry, events::DEFERRED_MESSAGE_SENT, message, "", extra)
                        .await;
                    done.sent += 1;
                    false
                }
                // In doubt: another send of the key is under way, or died mid-call. Either
                // settles (delivered, or released) within the key's life; wait for that.
                Err(e) if e.is_retryable() || matches!(e, GatewayError::InDoubt { .. }) => {
                    entry.attempts += 1;
                    entry.reason = e.to_string();
                    let now = retry.clock.now();
                    if now.saturating_sub(retry.policy.give_up_after) >= entry.since {
                        self.give_up(retry, &entry).await;
                        done.given_up += 1;
                        false
                    } else {
                        let due = retry.policy.next_due(now, entry.attempts + 1);
                        retry.queue.retry_at(&entry, due).await?;
                        done.retried += 1;
                        true
                    }
                }
                Err(e) => {
                    let reports = self
                        .adapters
                        .get(&entry.message.channel)
                        .is_some_and(|a| a.reports_refusals());
                    if !reports {
                        let mut extra = Props::new();
                        extra.insert("reason".into(), Value::from(e.to_string()));
                        extra.insert("retryable".into(), Value::from(false));
                        let message = &entry.message;
                        self.report(retry, events::MESSAGE_FAILED, message, "refused", extra)
                            .await;
                    }
                    done.refused += 1;
                    false
                }
            };
            if !kept {
                retry.queue.remove(&entry.message).await?;
            }
        }
        Ok(done)
    }

    /// Reports what became of `message` in the retry queue to its user, as the event `name`.
    async fn report(
        &self,
        retry: &Retrying,
        name: &str,
        message: &OutboundMessage,
        discriminator: &str,
        extra: Props,
    ) {
        let provider = self
            .adapters
            .get(&message.channel)
            .map_or("none", |a| a.provider());
        let at = retry.clock.now();
        let event = events::delivery_event(name, message, provider, discriminator, at, extra);
        retry.sink.emit(&message.workspace, event).await;
    }

    /// Reports a message given up on: a final `Message Failed`, once per message.
    async fn give_up(&self, retry: &Retrying, entry: &Deferred) {
        let message = &entry.message;
        let provider = self
            .adapters
            .get(&message.channel)
            .map_or("none", |a| a.provider());
        tracing::warn!(
            beckon.idempotency_key = %message.idempotency_key,
            beckon.provider = provider,
            attempts = entry.attempts,
            reason = %entry.reason,
            "deferred send given up"
        );
        let mut extra = Props::new();
        extra.insert(
            "reason".into(),
            Value::from(format!(
                "gave up after {} attempts: {}",
                entry.attempts, entry.reason
            )),
        );
        extra.insert("retryable".into(), Value::from(false));
        extra.insert("attempts".into(), Value::from(entry.attempts));
        self.report(retry, events::MESSAGE_FAILED, message, "given-up", extra)
            .await;
    }

    /// One attempt at the provider, under the message's idempotency key. Besides the
    /// result, the token of a claim left on the key by an attempt that reached no provider
    /// (or that the provider refused), when it could not be released: whoever holds it may
    /// take the claim over ([`KeyStore`]).
    async fn route(
        &self,
        message: &OutboundMessage,
        tries: Tries,
        held: Option<&str>,
    ) -> (Result<Delivery, GatewayError>, Option<String>) {
        if !self.adapters.contains_key(&message.channel) {
            return (Err(GatewayError::NoAdapter(message.channel.clone())), None);
        }
        let using = SlotInUse::take(&self.held, HeldClaims::name(SendKey::of(message)));
        let routed = {
            let mut kept = using.slot.lock().await;
            // The queue's entry holds its own claim's token; a caller's send takes over what
            // an earlier send of this process left. The token stays in the slot until the
            // claim is answered: a caller that stops waiting (a gRPC deadline drops the
            // handler) must not take with it the only token that can take the claim over.
            let token = match held {
                Some(token) => token.to_string(),
                None => kept.get_or_insert_with(crate::keys::attempt_token).clone(),
            };
            let routed = self.route_claimed(message, tries, token, &mut kept).await;
            kept.clone_from(&routed.1);
            routed
        };
        drop(using);
        routed
    }

    /// [`Gateway::route`] under `token`, with the key's sends in this process held off.
    /// `kept` is the key's slot, emptied once the claim is answered.
    async fn route_claimed(
        &self,
        message: &OutboundMessage,
        tries: Tries,
        token: String,
        kept: &mut Option<String>,
    ) -> (Result<Delivery, GatewayError>, Option<String>) {
        let Some(adapter) = self.adapters.get(&message.channel) else {
            return (Err(GatewayError::NoAdapter(message.channel.clone())), None);
        };
        let scoped = SendKey::of(message);
        let key = scoped.key;

        // A claim whose answer was lost may have been written all the same; nothing was
        // sent, so the token goes with the failure.
        let claim = match self.keys.claim(scoped, &token).await {
            Ok(claim) => claim,
            Err(e) => return (Err(e), Some(token)),
        };
        // From here an attempt dropped half-way may have reached the provider: a later send
        // must find it in doubt rather than take its claim over and send twice.
        *kept = None;
        match claim {
            Claim::Done(provider_id) => {
                tracing::debug!(beckon.idempotency_key = key, "repeated key; not sent again");
                let delivery = Delivery {
                    provider_id,
                    duplicate: true,
                    deferred: false,
                };
                return (Ok(delivery), None);
            }
            Claim::InFlight if !adapter.resends_safely() => {
                tracing::warn!(
                    beckon.idempotency_key = key,
                    beckon.provider = adapter.provider(),
                    "earlier send in doubt; not repeated"
                );
                let doubt = GatewayError::InDoubt {
                    provider: adapter.provider().to_string(),
                    key: key.to_string(),
                };
                return (Err(doubt), None);
            }
            Claim::InFlight | Claim::New => {}
        }

        let result = adapter.send_trying(message, tries).await;

        // The provider has answered; a store failure now must not turn a delivered message
        // into an error the caller would retry, so it is logged and the delivery returned.
        // A failed send's claim that cannot be released goes back with its token: an error
        // is the answer on which the claim is released anyway, so taking it over later
        // sends no more than a release would have let through.
        let (recorded, left) = match &result {
            Ok(delivery) => {
                let done = self.keys.complete(scoped, &delivery.provider_id).await;
                (done, None)
            }
            Err(_) => {
                let released = self.keys.release(scoped, &token).await;
                let left = released.is_err().then(|| token.clone());
                (released, left)
            }
        };
        if let Err(e) = recorded {
            tracing::warn!(beckon.idempotency_key = key, error = %e, "key not recorded");
        }
        (result, left)
    }
}

/// The `outcome` label of a delivery: `sent`, `duplicate` (answered from the key store),
/// `deferred` (kept in the retry queue), `failed` (may succeed later), `in_doubt` (an
/// earlier attempt may have gone out) or `rejected` (final).
fn outcome(result: &Result<Delivery, GatewayError>) -> &'static str {
    match result {
        Ok(d) if d.duplicate => "duplicate",
        Ok(d) if d.deferred => "deferred",
        Ok(_) => "sent",
        Err(GatewayError::InDoubt { .. }) => "in_doubt",
        Err(e) if e.is_retryable() => "failed",
        Err(_) => "rejected",
    }
}
