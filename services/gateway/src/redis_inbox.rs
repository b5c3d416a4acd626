//! The in-app inbox in Redis, shared by every gateway replica.
//!
//! One key per user, in the partition key layout ([`beckon_scheduler::keys`]), so it shares
//! the slot of the user's state and idempotency keys:
//!
//! ```text
//! bk:{<workspace>:<partition>}:u:<user>:inbox       hash: message id -> message (JSON)
//! ```
//!
//! (workspace and user escaped as the layout says). [`RedisInbox::user_key`] names it and
//! [`RedisInbox::forget_user`] deletes it, which is all there is to erase of a user's inbox;
//! the user-state store's ForgetUser deletes the same key with the rest of the user. Each message carries its own expiry; expired ones are
//! left out of listings and pruned on the next insert, and the key itself expires with its
//! newest message. An insert keeps at most `per_user` messages (the oldest go first).
//!
//! New messages are pushed, not polled: the insert script publishes the message on the
//! user's channel `bk:{<workspace>:<partition>}:u:<user>:inbox-new`, and each replica holds
//! one pub/sub connection on which it subscribes to the channels of the users whose apps are
//! connected to it (and unsubscribes when the last one leaves). A connection lost is
//! reconnected and every channel subscribed again; messages published in between are not
//! pushed, but they are in the inbox the app lists when it reconnects.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use beckon_core::partition::DEFAULT_PARTITIONS;
use beckon_core::{Clock, Duration, OutboundMessage};
use beckon_scheduler::keys::Keys;
use futures::StreamExt;
use futures::future::BoxFuture;
use redis::Script;
use redis::aio::{ConnectionLike, PubSubSink};
use tokio::sync::broadcast;

use crate::channel::{Channel, Delivery};
use crate::error::GatewayError;
use crate::inbox::{InboxMessage, InboxStore, InboxSubscription};

/// Inserts a message unless its id is there, prunes expired and surplus messages, renews
/// the key's expiry and publishes the message. Returns 1 when inserted.
static INSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local now = tonumber(ARGV[3])
local keep = tonumber(ARGV[4])
local live = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local m = cjson.decode(all[i + 1])
  if m.expires <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    table.insert(live, {all[i], m.created})
  end
end
if #live > keep then
  table.sort(live, function(a, b)
    if a[2] == b[2] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for i = 1, #live - keep do redis.call('HDEL', KEYS[1], live[i][1]) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[2])
return 1
",
    )
});

/// Sets `read` on an unexpired message. Returns 1 when found.
static MARK_READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local m = cjson.decode(raw)
if m.expires <= tonumber(ARGV[2]) then return 0 end
m.read = true
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(m))
return 1
",
    )
});

#[derive(Clone, Debug)]
pub struct RedisInboxConfig {
    /// First part of every key: `bk`, or a test's own namespace on a shared server.
    pub namespace: String,
    /// Must match the rest of the deployment, so the key shares the user's slot.
    pub partitions: u32,
    /// How long a message is kept.
    pub ttl: Duration,
    /// Messages kept per user.
    pub per_user: usize,
}

impl Default for RedisInboxConfig {
    fn default() -> Self {
        RedisInboxConfig {
            namespace: "bk".into(),
            partitions: DEFAULT_PARTITIONS,
            ttl: Duration::hours(30 * 24),
            per_user: 200,
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Unavailable {
        provider: "inbox".into(),
        reason: e.to_string(),
    }
}

/// Subscriptions of one channel in this process, and their fan-out.
type Listeners = (usize, broadcast::Sender<Arc<InboxMessage>>);

/// Who listens on which channel in this process.
#[derive(Default)]
struct Hub {
    /// Channel name to its listeners.
    channels: Mutex<HashMap<String, Listeners>>,
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
}

impl Hub {
    fn deliver(&self, channel: &str, payload: &[u8]) {
        let Ok(message) = serde_json::from_slice::<InboxMessage>(payload) else {
            tracing::warn!(beckon.channel = channel, "unreadable inbox notification");
            return;
        };
        let sender = self
            .channels
            .lock()
            .ok()
            .and_then(|c| c.get(channel).map(|(_, tx)| tx.clone()));
        if let Some(tx) = sender {
            let _ = tx.send(Arc::new(message));
        }
    }

    fn channel_names(&self) -> Vec<String> {
        self.channels
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Drops one subscription of a channel; the last one unsubscribes the connection.
struct Leave {
    hub: Arc<Hub>,
    channel: String,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let last = match self.hub.channels.lock() {
            Ok(mut channels) => match channels.get_mut(&self.channel) {
                Some((count, _)) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    channels.remove(&self.channel);
                    true
                }
                None => false,
            },
            Err(_) => false,
        };
        if !last {
            return;
        }
        let (hub, channel) = (self.hub.clone(), self.channel.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // Decided under the sink's lock: a subscription of the same user that came
                // in meanwhile keeps the channel.
                let mut sink = hub.sink.lock().await;
                let wanted = hub
                    .channels
                    .lock()
                    .map(|c| c.contains_key(&channel))
                    .unwrap_or(true);
                if let (Some(sink), false) = (sink.as_mut(), wanted) {
                    let _ = sink.unsubscribe(&channel).await;
                }
            });
        }
    }
}

/// The inbox in Redis. `C` is a connection manager or a cluster connection for the data;
/// pub/sub runs on a connection of its own to one node (a cluster forwards publishes to
/// every node).
pub struct RedisInbox<C> {
    conn: C,
    config: RedisInboxConfig,
    clock: Arc<dyn Clock>,
    hub: Arc<Hub>,
}

impl<C> RedisInbox<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Connects the pub/sub side to `pubsub` and starts listening; reconnects by itself.
    pub async fn start(
        conn: C,
        pubsub: redis::Client,
        config: RedisInboxConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<RedisInbox<C>, GatewayError> {
        let hub = Arc::new(Hub::default());
        let stream = connect(&pubsub, &hub).await?;
        tokio::spawn(listen(pubsub, hub.clone(), stream));
        Ok(RedisInbox {
            conn,
            config,
            clock,
            hub,
        })
    }

    fn keys(&self, workspace: &str, user: &str) -> Keys {
        Keys::of_user(
            &self.config.namespace,
            workspace,
            user,
            self.config.partitions,
        )
    }

    /// The one key holding the user's inbox.
    pub fn user_key(&self, workspace: &str, user: &str) -> String {
        self.keys(workspace, user).user_inbox(user)
    }

    /// The pub/sub channel announcing the user's new messages.
    pub fn user_channel(&self, workspace: &str, user: &str) -> String {
        format!("{}-new", self.user_key(workspace, user))
    }

    /// Deletes every inbox key of the user; the number of keys removed.
    pub async fn forget_user(&self, workspace: &str, user: &str) -> Result<u64, GatewayError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(self.user_key(workspace, user))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn insert(&self, message: &OutboundMessage) -> Result<bool, GatewayError> {
        let now = self.clock.now();
        let item = InboxMessage {
            id: message.idempotency_key.clone(),
            workspace: message.workspace.clone(),
            user_id: message.user_id.clone(),
            journey: message.journey.clone(),
            step: message.step.clone(),
            title: message.title.clone(),
            body: message.body.clone(),
            created: now,
            expires: now.saturating_add(self.config.ttl),
            read: false,
        };
        let json = serde_json::to_string(&item).map_err(unavailable)?;
        let mut conn = self.conn.clone();
        let inserted: i64 = INSERT
            .key(self.user_key(&item.workspace, &item.user_id))
            .arg(&item.id)
            .arg(json)
            .arg(now.0)
            .arg(self.config.per_user.max(1))
            .arg(self.config.ttl.as_millis().max(1))
            .arg(self.user_channel(&item.workspace, &item.user_id))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(inserted == 1)
    }

    async fn all(&self, workspace: &str, user: &str) -> Result<Vec<InboxMessage>, GatewayError> {
        let mut conn = self.conn.clone();
        let raw: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.user_key(workspace, user))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let now = self.clock.now();
        let mut list: Vec<InboxMessage> = raw
            .values()
            .filter_map(|json| serde_json::from_str::<InboxMessage>(json).ok())
            .filter(|m| m.expires > now)
            .collect();
        list.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
        Ok(list)
    }

    async fn join(&self, workspace: &str, user: &str) -> Result<InboxSubscription, GatewayError> {
        let channel = self.user_channel(workspace, user);
        let (rx, first) = {
            let mut channels = self
                .hub
                .channels
                .lock()
                .map_err(|_| unavailable("poisoned"))?;
            let entry = channels
                .entry(channel.clone())
                .or_insert_with(|| (0, broadcast::channel(64).0));
            entry.0 += 1;
            (entry.1.subscribe(), entry.0 == 1)
        };
        let leave = Leave {
            hub: self.hub.clone(),
            channel: channel.clone(),
        };

        // Subscribed (and confirmed by Redis) before answering, so no later insert is missed.
        // A failure drops `leave`, which undoes the count.
        if first {
            let mut sink = self.hub.sink.lock().await;
            let sink = sink
                .as_mut()
                .ok_or_else(|| unavailable("pub/sub reconnecting"))?;
            sink.subscribe(&channel).await.map_err(unavailable)?;
        }
        Ok(InboxSubscription::new(
            workspace,
            user,
            rx,
            Some(Box::new(leave)),
        ))
    }
}

/// Opens the pub/sub connection, subscribes the channels already wanted, and keeps its
/// sink for later subscriptions.
async fn connect(
    client: &redis::Client,
    hub: &Hub,
) -> Result<redis::aio::PubSubStream, GatewayError> {
    let (mut sink, stream) = client
        .get_async_pubsub()
        .await
        .map_err(unavailable)?
        .split();
    let mut held = hub.sink.lock().await;
    let wanted = hub.channel_names();
    if !wanted.is_empty() {
        sink.subscribe(&wanted).await.map_err(unavailable)?;
    }
    *held = Some(sink);
    Ok(stream)
}

/// Hands notifications to local subscribers; reconnects when the connection ends. The task
/// ends when the process does.
async fn listen(client: redis::Client, hub: Arc<Hub>, mut stream: redis::aio::PubSubStream) {
    loop {
        while let Some(msg) = stream.next().await {
            hub.deliver(msg.get_channel_name(), msg.get_payload_bytes());
        }
        *hub.sink.lock().await = None;
        tracing::warn!("inbox pub/sub connection lost; reconnecting");
        stream = loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            match connect(&client, &hub).await {
                Ok(stream) => break stream,
                Err(e) => tracing::debug!(error = %e, "inbox pub/sub reconnect failed"),
            }
        };
        tracing::info!("inbox pub/sub reconnected");
    }
}

impl<C> Channel for RedisInbox<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn provider(&self) -> &str {
        "inbox"
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Delivery, GatewayError>> {
        Box::pin(async move {
            let inserted = self.insert(message).await?;
            Ok(Delivery {
                provider_id: message.idempotency_key.clone(),
                duplicate: !inserted,
                deferred: false,
            })
        })
    }

    /// Inserting is keyed by the idempotency key, so a repeat changes nothing.
    fn resends_safely(&self) -> bool {
        true
    }
}

impl<C> InboxStore for RedisInbox<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    fn list<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Vec<InboxMessage>, GatewayError>> {
        Box::pin(self.all(workspace, user))
    }

    fn mark_read<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, GatewayError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let found: i64 = MARK_READ
                .key(self.user_key(workspace, user))
                .arg(id)
                .arg(self.clock.now().0)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(found == 1)
        })
    }

    fn dismiss<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, GatewayError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let removed: i64 = redis::cmd("HDEL")
                .arg(self.user_key(workspace, user))
                .arg(id)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(removed == 1)
        })
    }

    fn subscribe<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<InboxSubscription, GatewayError>> {
        Box::pin(self.join(workspace, user))
    }

    fn forget<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move { self.forget_user(workspace, user).await.map(|_| ()) })
    }
}
