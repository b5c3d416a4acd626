//! Channel gateways: how a rendered message leaves Beckon.
//!
//! Every adapter implements [`Channel`]. The [`Gateway`] routes a message to the adapter of its
//! channel and keeps idempotency keys in a [`KeyStore`], so a send retried after a crash is
//! not delivered twice.
//!
//! The provider adapters ([`webhook`], [`email`], [`apns`], [`fcm`], [`sms`]) share one shape
//! ([`adapter::Adapter`] around an [`adapter::Provider`]): a config struct whose secrets never
//! print, request building, a retry policy that sorts provider answers into retried and final,
//! a rate limit and a circuit breaker per provider, and delivery outcomes reported as events
//! through an [`EventSink`].

pub mod adapter;
pub mod apns;
pub mod channel;
mod crypto;
pub mod email;
pub mod email_text;
pub mod error;
pub mod events;
pub mod fcm;
pub mod grpc;
mod http;
pub mod inbox;
pub mod ingest_sink;
pub mod jwt;
pub mod keys;
pub mod policy;
pub mod providers;
pub mod recipients;
pub mod recording;
pub mod redis_inbox;
pub mod redis_keys;
pub mod redis_retry;
pub mod retry_queue;
pub mod secret;
pub mod sleep;
pub mod sms;
pub mod webhook;

pub use adapter::{Adapter, Attempt, Deps, Provider, Target};
pub use channel::{Channel, Delivery, Gateway, Tries};
pub use error::GatewayError;
pub use events::{EventSink, MemorySink};
pub use ingest_sink::{IngestSink, IngestSinkConfig};
pub use keys::{Claim, KeyStore, MemoryKeyStore, SendKey};
pub use policy::DeliveryPolicy;
pub use providers::{ProviderKind, ProvidersConfig, SecretRef, Wiring};
pub use recipients::{DeviceRegistry, MemoryDevices, MemoryRecipients, Recipients};
pub use recording::RecordingChannel;
pub use redis_inbox::{RedisInbox, RedisInboxConfig};
pub use redis_keys::{RedisKeyStore, RedisKeysConfig};
pub use redis_retry::RedisRetryQueue;
pub use retry_queue::{MemoryRetryQueue, RetryQueue, RetryQueuePolicy};
pub use secret::Secret;
pub use sleep::{Sleeper, TokioSleeper, VirtualSleeper};

/// Erases what the gateway keeps about one user (right to be forgotten): the user's inbox
/// messages, the idempotency keys of the user's sends and the user's deferred sends.
/// Delivery events already forwarded to ingest are erased with the rest of the user's data
/// there.
pub async fn forget_user(
    gateway: &Gateway,
    inbox: &inbox::Inbox,
    workspace: &str,
    user: &str,
) -> Result<(), GatewayError> {
    inbox.forget_user(workspace, user);
    if let Some(queue) = gateway.retry_queue() {
        queue.forget_user(workspace, user).await?;
    }
    gateway.key_store().forget_user(workspace, user).await
}
