//! Deferred sends in Redis, shared by every gateway replica.
//!
//! Layout, all in one hash tag so each step is one atomic script on one Redis Cluster slot:
//!
//! ```text
//! <ns>:{gateway-retry}:due                 sorted set: member -> next attempt (ms)
//! <ns>:{gateway-retry}:body                hash: member -> the entry as JSON
//! <ns>:{gateway-retry}:user:<ws>:<user>    set of the user's members, for forgetting
//! ```
//!
//! A member is `<workspace>:<idempotency key>`, the workspace escaped. One slot for the whole
//! queue is enough: it holds only what providers could not take, and is drained as they
//! recover. Taking an entry moves its score to the end of its hold, so a gateway that dies
//! mid-attempt leaves it to another replica once the hold runs out.

use std::sync::LazyLock;

use beckon_core::{Duration, OutboundMessage, Ts};
use beckon_scheduler::keys::escape;
use futures::future::BoxFuture;
use redis::Script;
use redis::aio::ConnectionLike;

use crate::error::GatewayError;
use crate::retry_queue::{Deferred, RetryQueue};

static DEFER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
",
    )
});

/// Entries whose body is gone (forgotten between steps) are dropped from the schedule.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {}
for _, member in ipairs(due) do
  local body = redis.call('HGET', KEYS[2], member)
  if body then
    redis.call('ZADD', KEYS[1], ARGV[2], member)
    out[#out + 1] = body
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return out
",
    )
});

static RETRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
",
    )
});

static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return redis.call('HDEL', KEYS[2], ARGV[1])
",
    )
});

static FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local members = redis.call('SMEMBERS', KEYS[3])
for _, member in ipairs(members) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('HDEL', KEYS[2], member)
end
redis.call('DEL', KEYS[3])
return #members
",
    )
});

/// The queue's key names under one namespace.
#[derive(Clone, Debug)]
struct Names {
    prefix: String,
}

impl Names {
    fn new(namespace: &str) -> Names {
        Names {
            prefix: format!("{namespace}:{{gateway-retry}}"),
        }
    }

    fn due(&self) -> String {
        format!("{}:due", self.prefix)
    }

    fn body(&self) -> String {
        format!("{}:body", self.prefix)
    }

    fn user(&self, workspace: &str, user: &str) -> String {
        format!(
            "{}:user:{}:{}",
            self.prefix,
            escape(workspace),
            escape(user)
        )
    }
}

fn member(message: &OutboundMessage) -> String {
    format!("{}:{}", escape(&message.workspace), message.idempotency_key)
}

fn store_error(e: redis::RedisError) -> GatewayError {
    GatewayError::KeyStore(format!("retry queue: {e}"))
}

fn encode(entry: &Deferred) -> Result<String, GatewayError> {
    serde_json::to_string(entry).map_err(|e| GatewayError::KeyStore(format!("retry queue: {e}")))
}

/// Erases one user's deferred sends: what the gateway's [`RetryQueue::forget_user`] does, for
/// callers that erase a user's other records over their own connection.
pub async fn forget_user<C: ConnectionLike + Send>(
    con: &mut C,
    namespace: &str,
    workspace: &str,
    user: &str,
) -> Result<u64, redis::RedisError> {
    let names = Names::new(namespace);
    FORGET
        .key(names.due())
        .key(names.body())
        .key(names.user(workspace, user))
        .invoke_async(con)
        .await
}

/// A [`RetryQueue`] in Redis, over a connection manager or a cluster connection.
#[derive(Clone)]
pub struct RedisRetryQueue<C> {
    conn: C,
    namespace: String,
    names: Names,
}

impl<C> RedisRetryQueue<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A queue under `namespace` (`bk`, or a test's own on a shared server).
    pub fn new(conn: C, namespace: &str) -> RedisRetryQueue<C> {
        RedisRetryQueue {
            conn,
            namespace: namespace.to_string(),
            names: Names::new(namespace),
        }
    }
}

impl<C> RetryQueue for RedisRetryQueue<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn defer<'a>(
        &'a self,
        entry: &'a Deferred,
        due: Ts,
    ) -> BoxFuture<'a, Result<bool, GatewayError>> {
        Box::pin(async move {
            let body = encode(entry)?;
            let message = &entry.message;
            let mut con = self.conn.clone();
            let kept: i64 = DEFER
                .key(self.names.due())
                .key(self.names.body())
                .key(self.names.user(&message.workspace, &message.user_id))
                .arg(member(message))
                .arg(due.as_millis())
                .arg(body)
                .invoke_async(&mut con)
                .await
                .map_err(store_error)?;
            Ok(kept == 1)
        })
    }

    fn take_due<'a>(
        &'a self,
        now: Ts,
        hold: Duration,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Deferred>, GatewayError>> {
        Box::pin(async move {
            let mut con = self.conn.clone();
            let bodies: Vec<Vec<u8>> = TAKE
                .key(self.names.due())
                .key(self.names.body())
                .arg(now.as_millis())
                .arg(now.saturating_add(hold).as_millis())
                .arg(limit)
                .invoke_async(&mut con)
                .await
                .map_err(store_error)?;
            let mut entries = Vec::with_capacity(bodies.len());
            for body in bodies {
                match serde_json::from_slice::<Deferred>(&body) {
                    Ok(entry) => entries.push(entry),
                    // Written by another version, or damaged. It stays hidden for its hold
                    // and comes round again; a log line each time says why it never goes.
                    Err(e) => tracing::error!(error = %e, "unreadable deferred send skipped"),
                }
            }
            Ok(entries)
        })
    }

    fn retry_at<'a>(
        &'a self,
        entry: &'a Deferred,
        due: Ts,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let body = encode(entry)?;
            let mut con = self.conn.clone();
            let _: i64 = RETRY
                .key(self.names.due())
                .key(self.names.body())
                .arg(member(&entry.message))
                .arg(due.as_millis())
                .arg(body)
                .invoke_async(&mut con)
                .await
                .map_err(store_error)?;
            Ok(())
        })
    }

    fn remove<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let mut con = self.conn.clone();
            let _: i64 = REMOVE
                .key(self.names.due())
                .key(self.names.body())
                .key(self.names.user(&message.workspace, &message.user_id))
                .arg(member(message))
                .invoke_async(&mut con)
                .await
                .map_err(store_error)?;
            Ok(())
        })
    }

    fn forget_user<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let mut con = self.conn.clone();
            forget_user(&mut con, &self.namespace, workspace, user)
                .await
                .map_err(store_error)?;
            Ok(())
        })
    }

    fn waiting(&self) -> BoxFuture<'_, Result<u64, GatewayError>> {
        Box::pin(async move {
            let mut con = self.conn.clone();
            redis::cmd("HLEN")
                .arg(self.names.body())
                .query_async(&mut con)
                .await
                .map_err(store_error)
        })
    }
}
