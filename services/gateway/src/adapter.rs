//! The shape every provider adapter shares.
//!
//! A [`Provider`] knows one protocol: who the recipients of a message are, how to make one
//! attempt, and how to read the answer into an [`Attempt`]. [`Adapter`] wraps it with what is
//! the same for all of them: the rate limit, the circuit breaker, retries with backoff, and the
//! delivery events.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use beckon_core::{Clock, OutboundMessage, Props, SystemClock};
use beckon_telemetry::{CircuitState, Metrics};
use futures::future::BoxFuture;
use serde_json::Value;
use tracing::Instrument as _;

use crate::channel::{Channel, Delivery, Tries};
use crate::error::GatewayError;
use crate::events::{self, EventSink};
use crate::policy::{BreakerState, CircuitBreaker, DeliveryPolicy, RateLimiter};
use crate::sleep::{Sleeper, TokioSleeper};

/// The clock, the sleeper and the event sink: injected, so tests and replay drive time.
#[derive(Clone)]
pub struct Deps {
    pub clock: Arc<dyn Clock>,
    pub sleeper: Arc<dyn Sleeper>,
    pub sink: Arc<dyn EventSink>,
}

impl Deps {
    /// The wall clock and real waits, for live services.
    pub fn live(sink: Arc<dyn EventSink>) -> Deps {
        Deps {
            clock: Arc::new(SystemClock),
            sleeper: Arc::new(TokioSleeper),
            sink,
        }
    }
}

/// One recipient of a message: a device token, an address, a number, an endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub address: String,
    /// The device platform ([`crate::recipients::platform`]) when the address is a push
    /// token; an invalid push token is reported as `Device Token Invalid`.
    pub platform: Option<String>,
}

impl Target {
    pub fn address(address: impl Into<String>) -> Target {
        Target {
            address: address.into(),
            platform: None,
        }
    }

    pub fn device(platform: &str, token: impl Into<String>) -> Target {
        Target {
            address: token.into(),
            platform: Some(platform.to_string()),
        }
    }

    /// The last characters of the address: enough to tell targets apart in logs and events,
    /// not enough to use one.
    pub fn redacted(&self) -> String {
        let chars: Vec<char> = self.address.chars().collect();
        let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
        format!("…{tail}")
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("address", &self.redacted())
            .field("platform", &self.platform)
            .finish()
    }
}

/// What one attempt at one target came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The provider took the message.
    Accepted { provider_id: String },
    /// The provider could not take it now (throttled, unavailable, unreachable); the same
    /// request may succeed later. `after` is the provider's own hint.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// The provider refused the message for good. `invalid_address` says the recipient itself
    /// is gone (an unregistered device token), so it is forgotten.
    Reject {
        reason: String,
        invalid_address: bool,
    },
}

/// One provider protocol.
pub trait Provider: Send + Sync + 'static {
    /// Short name for logs, metrics and events (`webhook`, `smtp`, `apns`).
    fn name(&self) -> &'static str;

    /// True when the provider drops a repeated idempotency key itself.
    fn dedupes_by_key(&self) -> bool {
        false
    }

    /// Where `message` goes. An empty list means there is nobody to send to.
    fn targets<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Vec<Target>, GatewayError>>;

    /// One attempt at one target. Protocol-level refreshes (a new auth token after the
    /// provider said the old one expired) happen inside.
    fn attempt<'a>(
        &'a self,
        message: &'a OutboundMessage,
        target: &'a Target,
    ) -> BoxFuture<'a, Attempt>;

    /// Forgets a target the provider called invalid.
    fn forget<'a>(&'a self, message: &'a OutboundMessage, target: &'a Target) -> BoxFuture<'a, ()> {
        let _ = (message, target);
        Box::pin(async {})
    }
}

/// How delivery to one target ended.
enum Outcome {
    Sent(String),
    Retryable(String),
    Final(String),
}

/// A provider with retries, a rate limit, a circuit breaker and delivery events: a
/// [`Channel`] the [`crate::Gateway`] can route to.
pub struct Adapter<P> {
    provider: P,
    policy: DeliveryPolicy,
    limiter: RateLimiter,
    breaker: CircuitBreaker,
    deps: Deps,
    metrics: Metrics,
}

impl<P: Provider> Adapter<P> {
    pub fn new(provider: P, policy: DeliveryPolicy, deps: Deps) -> Adapter<P> {
        Adapter {
            limiter: RateLimiter::new(policy.rate_limit.clone()),
            breaker: CircuitBreaker::new(policy.breaker.clone()),
            provider,
            policy,
            deps,
            metrics: Metrics::global(),
        }
    }

    /// Records provider latency and circuit state on `metrics` instead of the global meter.
    pub fn with_metrics(mut self, metrics: Metrics) -> Adapter<P> {
        self.metrics = metrics;
        self
    }

    /// Publishes the breaker's state as `beckon.circuit.state`.
    fn report_circuit(&self, channel: &str) {
        let state = match self.breaker.state() {
            BreakerState::Closed { .. } => CircuitState::Closed,
            BreakerState::HalfOpen { .. } => CircuitState::HalfOpen,
            BreakerState::Open { .. } => CircuitState::Open,
        };
        self.metrics
            .set_circuit_state(channel, self.provider.name(), state);
    }

    /// One call to the provider, in a client span, timed into `beckon.provider.duration`.
    async fn timed_attempt(
        &self,
        message: &OutboundMessage,
        target: &Target,
        attempt: u32,
    ) -> Attempt {
        let name = self.provider.name();
        let span = tracing::info_span!(
            "provider.attempt",
            otel.name = %format_args!("{name} send"),
            otel.kind = "client",
            beckon.provider = name,
            beckon.channel = %message.channel,
            beckon.attempt = attempt,
            beckon.outcome = tracing::field::Empty,
        );
        let recorded = span.clone();

        // Provider latency needs sub-millisecond monotonic time; the injected clock keeps
        // domain time, which a test may hold still.
        #[allow(
            clippy::disallowed_methods,
            reason = "measures elapsed time of a network call"
        )]
        let started = std::time::Instant::now();
        let answer = self
            .provider
            .attempt(message, target)
            .instrument(span)
            .await;
        let ms = started.elapsed().as_secs_f64() * 1_000.0;
        self.metrics
            .record_provider_call(&message.channel, name, ms);

        let outcome = match &answer {
            Attempt::Accepted { .. } => "accepted",
            Attempt::Retry { .. } => "retry",
            Attempt::Reject { .. } => "rejected",
        };
        recorded.record("beckon.outcome", outcome);
        answer
    }

    pub fn provider_ref(&self) -> &P {
        &self.provider
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    async fn deliver(
        &self,
        message: &OutboundMessage,
        tries: Tries,
    ) -> Result<Delivery, GatewayError> {
        let name = self.provider.name();
        let targets = match self.provider.targets(message).await {
            Ok(targets) if targets.is_empty() => {
                let e = GatewayError::NoRecipient {
                    what: format!("{name} recipient"),
                    user: message.user_id.clone(),
                };
                self.report_failed(message, "no_recipient").await;
                return Err(e);
            }
            Ok(targets) => targets,
            Err(e) => {
                if !e.is_retryable() {
                    self.report_failed(message, &e.to_string()).await;
                }
                return Err(e);
            }
        };

        let (attempts, within) = match tries {
            Tries::Policy => (self.policy.retry.max_attempts.max(1), None),
            Tries::Once { within } => (1, within),
        };
        // The caller's wait bounds the whole send, every recipient's attempt included. Once
        // it is over, the recipients left are not tried at all.
        let mut deadline = within.map(|d| Box::pin(tokio::time::sleep(d)));

        let mut sent = Vec::new();
        let mut retryable = None;
        let mut last_final = None;
        for target in &targets {
            let outcome = match deadline.as_mut() {
                None => self.deliver_to(message, target, attempts).await,
                Some(deadline) => tokio::select! {
                    biased;
                    () = deadline.as_mut() => {
                        // Not the provider's failure: the breaker is left as it stands, and
                        // a probe dropped here is replaced after the cool-down.
                        tracing::debug!(
                            beckon.provider = name,
                            beckon.idempotency_key = %message.idempotency_key,
                            "no answer before the caller's deadline"
                        );
                        Outcome::Retryable("no answer before the caller's deadline".into())
                    }
                    outcome = self.deliver_to(message, target, attempts) => outcome,
                },
            };
            match outcome {
                Outcome::Sent(id) => sent.push(id),
                Outcome::Retryable(reason) => retryable = Some(reason),
                Outcome::Final(reason) => last_final = Some(reason),
            }
        }

        if !sent.is_empty() {
            // The message counts as sent: a recipient that could not take it now is not
            // retried (its key is done), and the count says how many missed it.
            if retryable.is_some() {
                tracing::info!(
                    beckon.provider = name,
                    beckon.idempotency_key = %message.idempotency_key,
                    recipients = targets.len(),
                    sent = sent.len(),
                    "message sent to some recipients; the others could not take it now"
                );
            }
            let provider_id = sent.join(",");
            let mut extra = Props::new();
            extra.insert("provider_id".into(), Value::from(provider_id.clone()));
            extra.insert("recipients".into(), Value::from(sent.len()));
            let at = self.deps.clock.now();
            let event = events::delivery_event(events::MESSAGE_SENT, message, name, "", at, extra);
            self.deps.sink.emit(&message.workspace, event).await;
            return Ok(Delivery {
                provider_id,
                duplicate: false,
                deferred: false,
            });
        }

        // Nothing went out. When any target may still take the message later, the whole
        // send is retryable: the retry queue (or the caller) keeps it, and the devices that
        // refused for good have been forgotten by then. Nothing is reported to the user's
        // journeys yet: the message may still go out, and a journey waiting for `Message
        // Failed` must not move on while it can.
        if let Some(reason) = retryable {
            tracing::debug!(
                beckon.provider = name,
                beckon.idempotency_key = %message.idempotency_key,
                beckon.reason = %reason,
                "provider could not take the message now"
            );
            return Err(GatewayError::Unavailable {
                provider: name.to_string(),
                reason,
            });
        }
        let reason = last_final.unwrap_or_else(|| "no attempt made".into());
        self.report_failed(message, &reason).await;
        Err(GatewayError::Rejected {
            provider: name.to_string(),
            reason,
        })
    }

    /// Up to `max_attempts` attempts at one target, with the policy's backoff between them.
    async fn deliver_to(
        &self,
        message: &OutboundMessage,
        target: &Target,
        max_attempts: u32,
    ) -> Outcome {
        let name = self.provider.name();
        let mut attempt = 0;
        loop {
            attempt += 1;

            let allowed = self.breaker.allow(self.deps.clock.now());
            self.report_circuit(&message.channel);
            if !allowed {
                tracing::debug!(beckon.provider = name, "circuit open; not calling provider");
                return Outcome::Retryable("circuit open".into());
            }

            let wait = self.limiter.reserve(self.deps.clock.now());
            if !wait.is_zero() {
                self.deps.sleeper.sleep(wait).await;
            }

            let answer = self.timed_attempt(message, target, attempt).await;
            match answer {
                Attempt::Accepted { provider_id } => {
                    self.breaker.record_success();
                    self.report_circuit(&message.channel);
                    tracing::debug!(
                        beckon.provider = name,
                        beckon.idempotency_key = %message.idempotency_key,
                        beckon.attempt = attempt,
                        "provider accepted message"
                    );
                    return Outcome::Sent(provider_id);
                }
                Attempt::Reject {
                    reason,
                    invalid_address,
                } => {
                    // A refusal is an answer from a healthy provider.
                    self.breaker.record_success();
                    self.report_circuit(&message.channel);
                    tracing::debug!(
                        beckon.provider = name,
                        beckon.idempotency_key = %message.idempotency_key,
                        beckon.reason = %reason,
                        beckon.invalid_address = invalid_address,
                        "provider rejected message"
                    );
                    if invalid_address {
                        self.forget(message, target, &reason).await;
                    }
                    return Outcome::Final(reason);
                }
                Attempt::Retry { reason, after } => {
                    if self.breaker.record_failure(self.deps.clock.now()) {
                        tracing::warn!(
                            beckon.provider = name,
                            beckon.reason = %reason,
                            "circuit opened"
                        );
                    }
                    self.report_circuit(&message.channel);
                    if attempt >= max_attempts {
                        return Outcome::Retryable(reason);
                    }

                    let unit = crate::policy::retry_jitter();
                    let delay = self.policy.retry.delay(attempt, unit, after);
                    tracing::debug!(
                        beckon.provider = name,
                        beckon.reason = %reason,
                        beckon.attempt = attempt,
                        beckon.delay_ms = delay.as_millis() as u64,
                        "retrying"
                    );
                    self.deps.sleeper.sleep(delay).await;
                }
            }
        }
    }

    async fn forget(&self, message: &OutboundMessage, target: &Target, reason: &str) {
        self.provider.forget(message, target).await;

        let Some(platform) = &target.platform else {
            return;
        };
        let mut extra = Props::new();
        extra.insert("platform".into(), Value::from(platform.clone()));
        extra.insert("reason".into(), Value::from(reason));
        extra.insert("token_suffix".into(), Value::from(target.redacted()));
        // The user's state removes the device by this value when it applies the event.
        extra.insert(
            beckon_core::devices::TOKEN_PROPERTY.into(),
            Value::from(target.address.clone()),
        );
        let at = self.deps.clock.now();
        let event = events::delivery_event(
            events::DEVICE_TOKEN_INVALID,
            message,
            self.provider.name(),
            &target.address,
            at,
            extra,
        );
        self.deps.sink.emit(&message.workspace, event).await;
    }

    /// Reports a message that will not be delivered: a final `Message Failed`. A send the
    /// provider could not take now is not reported here; only its final outcome is.
    async fn report_failed(&self, message: &OutboundMessage, reason: &str) {
        let mut extra = Props::new();
        extra.insert("reason".into(), Value::from(reason));
        // Always false, as only final failures are reported; kept for journeys that filter
        // on it.
        extra.insert("retryable".into(), Value::from(false));
        let at = self.deps.clock.now();

        // One event per message: a batch redelivered after the refusal is refused again,
        // and ingest keeps the first report of the two.
        let event = events::delivery_event(
            events::MESSAGE_FAILED,
            message,
            self.provider.name(),
            "refused",
            at,
            extra,
        );
        self.deps.sink.emit(&message.workspace, event).await;
    }
}

impl<P: Provider> Channel for Adapter<P> {
    fn provider(&self) -> &str {
        self.provider.name()
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Delivery, GatewayError>> {
        Box::pin(self.deliver(message, Tries::Policy))
    }

    fn send_trying<'a>(
        &'a self,
        message: &'a OutboundMessage,
        tries: Tries,
    ) -> BoxFuture<'a, Result<Delivery, GatewayError>> {
        Box::pin(self.deliver(message, tries))
    }

    fn resends_safely(&self) -> bool {
        self.provider.dedupes_by_key()
    }

    fn reports_refusals(&self) -> bool {
        true
    }
}
