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
///
/// Every attempt claims with a token of its own ([`attempt_token`]). A claim still holding
/// the same token is the caller's own: claiming it again answers [`Claim::New`]. That is how
/// the retry queue takes over a claim whose attempt provably reached no provider (the store
/// failed around the claim, or the provider refused and the release failed): the deferred
/// entry keeps the token, and only the retry that holds it may go on. A claim left by an
/// attempt that may have reached a provider (its gateway died mid-call) has a token nobody
/// holds, and stays in doubt: at most once.
pub trait KeyStore: Send + Sync + 'static {
    fn claim<'a>(
        &'a self,
        key: SendKey<'a>,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Claim, GatewayError>>;

    fn complete<'a>(
        &'a self,
        key: SendKey<'a>,
        provider_id: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// Frees the key when it is still in flight under `token`.
    fn release<'a>(
        &'a self,
        key: SendKey<'a>,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// Erases every key of one user (right to be forgotten).
    fn forget_user<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;
}

/// A fresh token for one attempt's claim: 128 random bits, hex.
pub fn attempt_token() -> String {
    use ring::rand::SecureRandom as _;

    static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // Never seen on the platforms the gateway runs on; unique within the process still.
        let n = FALLBACK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return format!("p{}-{n}", std::process::id());
    }
    crate::crypto::hex(&bytes)
}

#[derive(Clone, Debug)]
enum Entry {
    InFlight(String),
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
    fn claim<'a>(
        &'a self,
        key: SendKey<'a>,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Claim, GatewayError>> {
        let result = self
            .entries
            .lock()
            .map_err(|_| Self::poisoned())
            .map(|mut map| match map.get(&scoped(key)) {
                Some(Entry::Done(id)) => Claim::Done(id.clone()),
                Some(Entry::InFlight(held)) if held == token => Claim::New,
                Some(Entry::InFlight(_)) => Claim::InFlight,
                None => {
                    map.insert(scoped(key), Entry::InFlight(token.to_string()));
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

    fn release<'a>(
        &'a self,
        key: SendKey<'a>,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        let result = self
            .entries
            .lock()
            .map_err(|_| Self::poisoned())
            .map(|mut map| {
                let key = scoped(key);
                if matches!(map.get(&key), Some(Entry::InFlight(held)) if held == token) {
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
