//! The adapter contract and the router in front of the adapters.

use std::collections::HashMap;
use std::sync::Arc;

use beckon_core::OutboundMessage;
use beckon_telemetry::Metrics;
use futures::future::BoxFuture;
use tracing::Instrument as _;

use crate::error::GatewayError;
use crate::keys::{Claim, KeyStore, MemoryKeyStore, SendKey};

/// What a provider said about an accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The provider's id for the message, when it gives one.
    pub provider_id: String,
    /// True when the idempotency key had been delivered before and nothing was sent now.
    pub duplicate: bool,
}

/// One way out: push, email, SMS, webhook, in-app, or a recorder.
pub trait Channel: Send + Sync + 'static {
    /// Short name used in metrics and logs (`apns`, `smtp`, `recording`).
    fn provider(&self) -> &str;

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Delivery, GatewayError>>;

    /// True when the provider itself drops a repeated idempotency key (a webhook receiver
    /// honouring `Idempotency-Key`), so a send whose earlier attempt is in doubt may be
    /// repeated. Providers without that guarantee are not sent to again: at most once.
    fn resends_safely(&self) -> bool {
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
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            adapters: HashMap::new(),
            keys: Arc::new(MemoryKeyStore::new()),
            metrics: Metrics::global(),
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

    /// Delivers `message` once per idempotency key, inside a `gateway.send` span, and counts
    /// the outcome in `beckon.deliveries`.
    pub async fn send(&self, message: &OutboundMessage) -> Result<Delivery, GatewayError> {
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
        let result = self.route(message).instrument(span).await;

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

    async fn route(&self, message: &OutboundMessage) -> Result<Delivery, GatewayError> {
        let adapter = self
            .adapters
            .get(&message.channel)
            .ok_or_else(|| GatewayError::NoAdapter(message.channel.clone()))?;
        let scoped = SendKey::of(message);
        let key = scoped.key;

        match self.keys.claim(scoped).await? {
            Claim::Done(provider_id) => {
                tracing::debug!(beckon.idempotency_key = key, "repeated key; not sent again");
                return Ok(Delivery {
                    provider_id,
                    duplicate: true,
                });
            }
            Claim::InFlight if !adapter.resends_safely() => {
                tracing::warn!(
                    beckon.idempotency_key = key,
                    beckon.provider = adapter.provider(),
                    "earlier send in doubt; not repeated"
                );
                return Err(GatewayError::InDoubt {
                    provider: adapter.provider().to_string(),
                    key: key.to_string(),
                });
            }
            Claim::InFlight | Claim::New => {}
        }

        let result = adapter.send(message).await;

        // The provider has answered; a store failure now must not turn a delivered message
        // into an error the caller would retry, so it is logged and the delivery returned.
        let recorded = match &result {
            Ok(delivery) => self.keys.complete(scoped, &delivery.provider_id).await,
            Err(_) => self.keys.release(scoped).await,
        };
        if let Err(e) = recorded {
            tracing::warn!(beckon.idempotency_key = key, error = %e, "key not recorded");
        }
        result
    }
}

/// The `outcome` label of a delivery: `sent`, `duplicate` (answered from the key store),
/// `failed` (may succeed later), `in_doubt` (an earlier attempt may have gone out) or
/// `rejected` (final).
fn outcome(result: &Result<Delivery, GatewayError>) -> &'static str {
    match result {
        Ok(d) if d.duplicate => "duplicate",
        Ok(_) => "sent",
        Err(GatewayError::InDoubt { .. }) => "in_doubt",
        Err(e) if e.is_retryable() => "failed",
        Err(_) => "rejected",
    }
}
