//! Idempotency keys: which sends already happened, and which are under way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use crate::error::GatewayError;

/// What the store knew about a key when a send claimed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Never seen: the caller now owns the send.
    New,
    /// A send with this key started and never finished: it is still running elsewhere, or
    /// its gateway died after handing the message to the provider, or before.
    InFlight,
    /// Delivered before, with this provider id.
    Done(String),
}

/// Remembers idempotency keys across sends (and, when shared, across gateway processes).
///
/// A send claims its key before it talks to the provider and completes it after; a send that
/// failed releases it so a later retry starts afresh.
pub trait KeyStore: Send + Sync + 'static {
    fn claim<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Claim, GatewayError>>;

    fn complete<'a>(
        &'a self,
        key: &'a str,
        provider_id: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;

    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), GatewayError>>;
}

#[derive(Clone, Debug)]
enum Entry {
    InFlight,
    Done(String),
}

/// Keys in process memory. Clones share the same keys, which is how a test stands in for a
/// store shared by two gateway processes.
#[derive(Clone, Debug, Default)]
pub struct MemoryKeyStore {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl MemoryKeyStore {
    pub fn new() -> MemoryKeyStore {
        MemoryKeyStore::default()
    }

    fn poisoned() -> GatewayError {
        GatewayError::KeyStore("in-memory key store poisoned".into())
    }
}

impl KeyStore for MemoryKeyStore {
    fn claim<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Claim, GatewayError>> {
        let result = self
            .entries
            .lock()
            .map_err(|_| Self::poisoned())
            .map(|mut map| match map.get(key) {
                Some(Entry::Done(id)) => Claim::Done(id.clone()),
                Some(Entry::InFlight) => Claim::InFlight,
                None => {
                    map.insert(key.to_string(), Entry::InFlight);
                    Claim::New
                }
            });
        Box::pin(async move { result })
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        provider_id: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        let result = self
            .entries
            .lock()
            .map_err(|_| Self::poisoned())
            .map(|mut map| {
                map.insert(key.to_string(), Entry::Done(provider_id.to_string()));
            });
        Box::pin(async move { result })
    }

    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), GatewayError>> {
        let result = self
            .entries
            .lock()
            .map_err(|_| Self::poisoned())
            .map(|mut map| {
                if matches!(map.get(key), Some(Entry::InFlight)) {
                    map.remove(key);
                }
            });
        Box::pin(async move { result })
    }
}
