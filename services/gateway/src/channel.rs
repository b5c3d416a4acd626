//! The adapter contract and the router in front of the adapters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use beckon_core::OutboundMessage;
use futures::future::BoxFuture;

use crate::error::GatewayError;

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

    fn send<'a>(&'a self, message: &'a OutboundMessage) -> BoxFuture<'a, Result<Delivery, GatewayError>>;
}

/// Routes messages to the adapter of their channel, delivering each idempotency key once.
///
/// Keys are remembered in memory here; a gateway that must survive restarts keeps them in a
/// shared store instead.
#[derive(Clone, Default)]
pub struct Gateway {
    adapters: HashMap<String, Arc<dyn Channel>>,
    delivered: Arc<Mutex<HashMap<String, String>>>,
}

impl Gateway {
    pub fn new() -> Gateway {
        Gateway::default()
    }

    /// Sends messages on `channel` (`push`, `email`, ...) through `adapter`.
    pub fn with(mut self, channel: &str, adapter: Arc<dyn Channel>) -> Gateway {
        self.adapters.insert(channel.to_string(), adapter);
        self
    }

    pub async fn send(&self, message: &OutboundMessage) -> Result<Delivery, GatewayError> {
        let adapter = self
            .adapters
            .get(&message.channel)
            .ok_or_else(|| GatewayError::NoAdapter(message.channel.clone()))?;

        if let Some(id) = self.delivered_id(&message.idempotency_key) {
            return Ok(Delivery {
                provider_id: id,
                duplicate: true,
            });
        }

        let delivery = adapter.send(message).await?;
        if let Ok(mut seen) = self.delivered.lock() {
            seen.insert(message.idempotency_key.clone(), delivery.provider_id.clone());
        }
        Ok(delivery)
    }

    fn delivered_id(&self, key: &str) -> Option<String> {
        self.delivered.lock().ok()?.get(key).cloned()
    }
}
