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

/// An idempotency key with the workspace and user it belongs to.
///
/// Keys are scoped by user so a store can keep them next to the user's other records (one
/// Redis Cluster slot per partition) and erase them when the user asks to be forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SendKey<'a> {
    pub workspace: &'a str,
    pub user: &'a str,
    pub key: &'a str,
}

impl<'a> SendKey<'a> {
    pub fn new(workspace: &'a str, user: &'a str, key: &'a str) -> SendKey<'a> {
        SendKey {
            workspace,
            user,
            key,
        }
    }

    /// The key of a message about to be sent.
    pub fn of(message: &'a beckon_core::OutboundMessage) -> SendKey<'a> {
        SendKey::new(
            &message.workspace,
            &message.user_id,
            &message.idempotency_key,
        )
    }
}

/// Remembers idempotency keys across sends (and, when shared, across gateway processes).
///
/// A send claims its key before it talks to the provider and completes it after; a send that
/// failed releases it so a later retry starts afresh.
pub trait KeyStore: Send + Sync + 'static {
    fn claim<'a>(&'a self, key: SendKey<'a>) -> BoxFuture<'a, Result<Claim, GatewayError>>;

    fn complete<'a>(
        &'a self,
        key: SendKey<'a>,
        provider_id: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;

    fn release<'a>(&'a self, key: SendKey<'a>) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// Erases every key of one user (right to be forgotten).
    fn forget_user<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;
}

#[derive(Clone, Debug)]
enum Entry {
    InFlight,
    Done(String),
}

/// (workspace, user, idempotency key).
type Scoped = (String, String, String);

fn scoped(key: SendKey<'_>) -> Scoped {
    (key.workspace.into(), key.user.into(), key.key.into())
}

/// Keys in process memory. Clones share the same keys, which is how a test stands in for a
/// store shared by two gateway processes. Keys are kept until the process ends.
#[derive(Clone, Debug, Default)]
pub struct MemoryKeyStore {
    entries: Arc<Mutex<HashMap<Scoped, Entry>>>,
}

impl MemoryKeyStore {
    pub fn new() -> MemoryKeyStore {
        MemoryKeyStore::default()
    }

    /// How many keys are kept, in flight or done.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn poisoned() -> GatewayError {
        GatewayError::KeyStore("in-memory key store poisoned".into())
    }
}

impl KeyStore for MemoryKeyStore {
    fn claim<'a>(&'a self, key: SendKey<'a>) -> BoxFuture<'a, Result<Claim, GatewayError>> {
        let result = self
            .entries
            .lock()
            .map_err(|_| Self::poisoned())
            .map(|mut map| match map.get(&scoped(key)) {
                Some(Entry::Done(id)) => Claim::Done(id.clone()),
                Some(Entry::InFlight) => Claim::InFlight,
                None => {
                    map.insert(scoped(key), Entry::InFlight);
                    Claim::New
                }
            });
        Box::pin(async move { result })
    }

    fn complete<'a>(
        &'a self,
        key: SendKey<'a>,
        provider_id: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        let result = self
            .entries
            .lock()
            .map_err(|_| Self::poisoned())
            .map(|mut map| {
                map.insert(scoped(key), Entry::Done(provider_id.to_string()));
            });
        Box::pin(async move { result })
    }

    fn release<'a>(&'a self, key: SendKey<'a>) -> BoxFuture<'a, Result<(), GatewayError>> {
        let result = self
            .entries
            .lock()
            .map_err(|_| Self::poisoned())
            .map(|mut map| {
                let key = scoped(key);
                if matches!(map.get(&key), Some(Entry::InFlight)) {
                    map.remove(&key);
                }
            });
        Box::pin(async move { result })
    }

    fn forget_user<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        let result = self
            .entries
            .lock()
            .map_err(|_| Self::poisoned())
            .map(|mut map| map.retain(|(w, u, _), _| w != workspace || u != user));
        Box::pin(async move { result })
    }
}
