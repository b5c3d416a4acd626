//! Idempotency keys in Redis, shared by every gateway replica.
//!
//! Layout, with the user's partition in the hash tag so all of a user's keys sit in one
//! Redis Cluster slot and each operation is one atomic script:
//!
//! ```text
//! bk:{<workspace>:<partition>}:sent:<idempotency key>   "i:<attempt token>" while in flight,
//!                                                       "d:<provider id>" once delivered
//! bk:{<workspace>:<partition>}:sent-by:<user>           set of the user's idempotency keys
//! ```
//!
//! The names come from the shared layout ([`Keys`]), with its escaping, so they share the slot
//! of the user's state. The per-user set exists so [`KeyStore::forget_user`] finds a user's
//! keys without a scan, and so does UserState's ForgetUser, which erases them with the rest of
//! the user.
//! Both expire after the configured TTL; every write renews the set's expiry, so it always
//! outlives its members. A key left in flight by a gateway that died stays in doubt until
//! its TTL runs out, exactly as the in-memory store would keep it until the process ends;
//! one left by an attempt that reached no provider is taken over by the retry holding its
//! token (see [`KeyStore`]). A bare "i", written before claims had tokens, reads as in flight
//! under a token nobody holds.
//!
//! Idempotency keys are derived from (workspace, user, journey instance, step), so a key is
//! unique within its workspace; the layout relies on that and does not repeat the user.

use std::sync::LazyLock;

use beckon_core::Duration;
use beckon_core::partition::DEFAULT_PARTITIONS;
use beckon_scheduler::keys::Keys;
use futures::future::BoxFuture;
use redis::Script;
use redis::aio::ConnectionLike;

use crate::error::GatewayError;
use crate::keys::{Claim, KeyStore, SendKey};

/// A claim written before claims carried tokens.
const IN_FLIGHT: &str = "i";
const IN_FLIGHT_PREFIX: &str = "i:";
const DONE_PREFIX: &str = "d:";

/// Answers what the key held, or claims it when it held nothing or the caller's own claim
/// (returns nil).
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local held = redis.call('GET', KEYS[1])
if held and held ~= 'i:' .. ARGV[3] then return held end
redis.call('SET', KEYS[1], 'i:' .. ARGV[3], 'PX', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return false
",
    )
});

static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[1], 'd:' .. ARGV[3], 'PX', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
",
    )
});

/// Only the caller's own in-flight claim is released: a delivered key must stay delivered,
/// and another attempt's claim is that attempt's.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == 'i:' .. ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[1])
end
return 1
",
    )
});

/// How keys are named and kept.
#[derive(Clone, Debug)]
pub struct RedisKeysConfig {
    /// First part of every key: `bk`, or a test's own namespace on a shared server.
    pub namespace: String,
    /// Must match the partition count of the rest of the deployment, so the user's keys share
    /// a slot with the user's state.
    pub partitions: u32,
    /// How long a key is remembered. Outbox retries of one send must fall within it.
    pub ttl: Duration,
}

impl Default for RedisKeysConfig {
    fn default() -> Self {
        RedisKeysConfig {
            namespace: "bk".to_string(),
            partitions: DEFAULT_PARTITIONS,
            ttl: Duration::hours(7 * 24),
        }
    }
}

/// A [`KeyStore`] in Redis, over a connection manager or a cluster connection.
#[derive(Clone)]
pub struct RedisKeyStore<C> {
    conn: C,
    config: RedisKeysConfig,
}

fn store_error(e: redis::RedisError) -> GatewayError {
    GatewayError::KeyStore(e.to_string())
}

impl<C> RedisKeyStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    pub fn new(conn: C, config: RedisKeysConfig) -> RedisKeyStore<C> {
        RedisKeyStore { conn, config }
    }

    fn keys(&self, workspace: &str, user: &str) -> Keys {
        Keys::of_user(
            &self.config.namespace,
            workspace,
            user,
            self.config.partitions,
        )
    }

    /// `bk:{<workspace>:<partition>}`: the prefix of all of one user's keys.
    pub fn user_prefix(&self, workspace: &str, user: &str) -> String {
        self.keys(workspace, user).prefix().to_string()
    }

    /// The Redis key holding one idempotency key.
    pub fn key_name(&self, key: SendKey<'_>) -> String {
        self.keys(key.workspace, key.user).sent(key.key)
    }

    fn index_name(&self, workspace: &str, user: &str) -> String {
        self.keys(workspace, user).sent_by(user)
    }

    fn ttl_ms(&self) -> i64 {
        self.config.ttl.as_millis().max(1)
    }

    async fn claim_key(&self, key: SendKey<'_>, token: &str) -> Result<Claim, GatewayError> {
        let mut conn = self.conn.clone();
        let held: Option<String> = CLAIM
            .key(self.key_name(key))
            .key(self.index_name(key.workspace, key.user))
            .arg(self.ttl_ms())
            .arg(key.key)
            .arg(token)
            .invoke_async(&mut conn)
            .await
            .map_err(store_error)?;

        Ok(match held {
            None => Claim::New,
            Some(v) if v == IN_FLIGHT || v.starts_with(IN_FLIGHT_PREFIX) => Claim::InFlight,
            Some(v) => match v.strip_prefix(DONE_PREFIX) {
                Some(id) => Claim::Done(id.to_string()),
                None => {
                    return Err(GatewayError::KeyStore(
                        "unexpected value under an idempotency key".into(),
                    ));
                }
            },
        })
    }

    async fn complete_key(&self, key: SendKey<'_>, provider_id: &str) -> Result<(), GatewayError> {
        let mut conn = self.conn.clone();
        COMPLETE
            .key(self.key_name(key))
            .key(self.index_name(key.workspace, key.user))
            .arg(self.ttl_ms())
            .arg(key.key)
            .arg(provider_id)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(store_error)
    }

    async fn release_key(&self, key: SendKey<'_>, token: &str) -> Result<(), GatewayError> {
        let mut conn = self.conn.clone();
        RELEASE
            .key(self.key_name(key))
            .key(self.index_name(key.workspace, key.user))
            .arg(key.key)
            .arg(token)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(store_error)
    }

    /// Deletes the user's keys batch by batch until the index is empty, so a key claimed
    /// while forgetting is not left behind. Every command names its keys, all in one slot.
    async fn forget(&self, workspace: &str, user: &str) -> Result<(), GatewayError> {
        let mut conn = self.conn.clone();
        let keys = self.keys(workspace, user);
        let index = keys.sent_by(user);
        loop {
            let members: Vec<String> = redis::cmd("SRANDMEMBER")
                .arg(&index)
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(store_error)?;
            if members.is_empty() {
                return Ok(());
            }

            let names: Vec<String> = members.iter().map(|k| keys.sent(k)).collect();
            redis::pipe()
                .atomic()
                .del(&names)
                .ignore()
                .srem(&index, &members)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(store_error)?;
            tracing::debug!(
                beckon.workspace = workspace,
                beckon.keys = members.len(),
                "idempotency keys forgotten"
            );
        }
    }
}

impl<C> KeyStore for RedisKeyStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn claim<'a>(
        &'a self,
        key: SendKey<'a>,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Claim, GatewayError>> {
        Box::pin(self.claim_key(key, token))
    }

    fn complete<'a>(
        &'a self,
        key: SendKey<'a>,
        provider_id: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(self.complete_key(key, provider_id))
    }

    fn release<'a>(
        &'a self,
        key: SendKey<'a>,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(self.release_key(key, token))
    }

    fn forget_user<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(self.forget(workspace, user))
    }
}
