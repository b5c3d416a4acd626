//! The in-app inbox: messages kept per user until they expire, listed by the app, marked read
//! or dismissed, and pushed at once to apps that hold a subscription open.
//!
//! [`InboxStore`] is what the gRPC service needs of an inbox. [`Inbox`] keeps messages in
//! this process's memory; [`crate::redis_inbox::RedisInbox`] keeps them in Redis, shared by
//! every gateway replica, and pushes new ones to subscribers of any replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use beckon_core::{Clock, Duration, OutboundMessage, Ts};
use futures::future::BoxFuture;
use tokio::sync::broadcast;

use crate::channel::{Channel, Delivery};
use crate::error::GatewayError;

/// What the gRPC service needs of an inbox, wherever it keeps its messages.
pub trait InboxStore: Channel {
    /// The clock messages are dated and expired by.
    fn clock(&self) -> Arc<dyn Clock>;

    /// The user's unexpired messages, newest first.
    fn list<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Vec<InboxMessage>, GatewayError>>;

    /// Marks a message read; false when there is no such message.
    fn mark_read<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, GatewayError>>;

    /// Removes a message; false when there is no such message.
    fn dismiss<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, GatewayError>>;

    /// New messages for one user from now on. Once this answers, no later insert is missed.
    fn subscribe<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<InboxSubscription, GatewayError>>;

    /// Erases every message of one user (right to be forgotten).
    fn forget<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;
}

/// One message in a user's inbox. Its id is the idempotency key of the send.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InboxMessage {
    pub id: String,
    pub workspace: String,
    pub user_id: String,
    pub journey: String,
    pub step: String,
    pub title: Option<String>,
    pub body: String,
    pub created: Ts,
    pub expires: Ts,
    pub read: bool,
}

type UserKey = (String, String);

/// Messages per user, newest last.
pub struct Inbox {
    clock: Arc<dyn Clock>,
    ttl: Duration,
    per_user: usize,
    messages: Mutex<HashMap<UserKey, Vec<InboxMessage>>>,
    new: broadcast::Sender<Arc<InboxMessage>>,
}

impl Inbox {
    /// An inbox keeping each message for `ttl` and at most `per_user` messages a user (the
    /// oldest go first).
    pub fn new(clock: Arc<dyn Clock>, ttl: Duration, per_user: usize) -> Inbox {
        let (new, _) = broadcast::channel(1_024);
        Inbox {
            clock,
            ttl,
            per_user: per_user.max(1),
            messages: Mutex::new(HashMap::new()),
            new,
        }
    }

    /// The clock the inbox dates messages by.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Erases every message of one user (right to be forgotten).
    pub fn forget_user(&self, workspace: &str, user: &str) {
        if let Ok(mut map) = self.messages.lock() {
            map.remove(&Self::key(workspace, user));
        }
    }

    fn key(workspace: &str, user: &str) -> UserKey {
        (workspace.to_string(), user.to_string())
    }

    /// The user's unexpired messages, newest first.
    pub fn list(&self, workspace: &str, user: &str) -> Vec<InboxMessage> {
        let now = self.clock.now();
        let Ok(map) = self.messages.lock() else {
            return Vec::new();
        };
        map.get(&Self::key(workspace, user))
            .map(|list| {
                list.iter()
                    .rev()
                    .filter(|m| m.expires > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn unread(&self, workspace: &str, user: &str) -> usize {
        self.list(workspace, user)
            .iter()
            .filter(|m| !m.read)
            .count()
    }

    /// Marks a message read; false when there is no such message.
    pub fn mark_read(&self, workspace: &str, user: &str, id: &str) -> bool {
        let Ok(mut map) = self.messages.lock() else {
            return false;
        };
        let found = map
            .get_mut(&Self::key(workspace, user))
            .and_then(|list| list.iter_mut().find(|m| m.id == id));
        match found {
            Some(message) => {
                message.read = true;
                true
            }
            None => false,
        }
    }

    /// Removes a message; false when there is no such message.
    pub fn dismiss(&self, workspace: &str, user: &str, id: &str) -> bool {
        let Ok(mut map) = self.messages.lock() else {
            return false;
        };
        let Some(list) = map.get_mut(&Self::key(workspace, user)) else {
            return false;
        };
        let before = list.len();
        list.retain(|m| m.id != id);
        before != list.len()
    }

    /// How many subscriptions are open, across all users.
    pub fn subscribers(&self) -> usize {
        self.new.receiver_count()
    }

    /// New messages for one user, from now on.
    pub fn subscribe(&self, workspace: &str, user: &str) -> InboxSubscription {
        InboxSubscription::new(workspace, user, self.new.subscribe(), None)
    }

    fn insert(&self, message: &OutboundMessage) -> Result<bool, GatewayError> {
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
            expires: now.saturating_add(self.ttl),
            read: false,
        };

        let mut map = self
            .messages
            .lock()
            .map_err(|_| GatewayError::Unavailable {
                provider: "inbox".into(),
                reason: "inbox poisoned".into(),
            })?;
        let list = map
            .entry(Self::key(&message.workspace, &message.user_id))
            .or_default();
        if list.iter().any(|m| m.id == item.id) {
            return Ok(false);
        }
        list.retain(|m| m.expires > now);
        list.push(item.clone());
        let overflow = list.len().saturating_sub(self.per_user);
        list.drain(..overflow);
        drop(map);

        // Nobody listening is fine: the message waits in the list.
        let _ = self.new.send(Arc::new(item));
        Ok(true)
    }
}

/// Held by a subscription and dropped with it: lets a store stop listening for the user.
pub type SubscriptionGuard = Box<dyn std::any::Any + Send + Sync>;

/// A stream of one user's new inbox messages.
pub struct InboxSubscription {
    key: UserKey,
    rx: broadcast::Receiver<Arc<InboxMessage>>,
    _guard: Option<SubscriptionGuard>,
}

impl InboxSubscription {
    /// The messages of (`workspace`, `user`) among those `rx` receives.
    pub fn new(
        workspace: &str,
        user: &str,
        rx: broadcast::Receiver<Arc<InboxMessage>>,
        guard: Option<SubscriptionGuard>,
    ) -> InboxSubscription {
        InboxSubscription {
            key: Inbox::key(workspace, user),
            rx,
            _guard: guard,
        }
    }

    fn mine(&self, message: &InboxMessage) -> bool {
        message.workspace == self.key.0 && message.user_id == self.key.1
    }

    /// Waits for the next message; `None` once the inbox is gone. A subscriber that fell
    /// too far behind skips what it missed (the list still has it).
    pub async fn next(&mut self) -> Option<InboxMessage> {
        loop {
            match self.rx.recv().await {
                Ok(message) if self.mine(&message) => return Some((*message).clone()),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next message already delivered, without waiting.
    pub fn try_next(&mut self) -> Option<InboxMessage> {
        loop {
            match self.rx.try_recv() {
                Ok(message) if self.mine(&message) => return Some((*message).clone()),
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }
}

impl Channel for Inbox {
    fn provider(&self) -> &str {
        "inbox"
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Delivery, GatewayError>> {
        let result = self.insert(message).map(|inserted| Delivery {
            provider_id: message.idempotency_key.clone(),
            duplicate: !inserted,
            deferred: false,
        });
        Box::pin(async move { result })
    }

    /// Inserting is keyed by the idempotency key, so a repeat changes nothing.
    fn resends_safely(&self) -> bool {
        true
    }
}

impl InboxStore for Inbox {
    fn clock(&self) -> Arc<dyn Clock> {
        Inbox::clock(self)
    }

    fn list<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Vec<InboxMessage>, GatewayError>> {
        let list = Inbox::list(self, workspace, user);
        Box::pin(async move { Ok(list) })
    }

    fn mark_read<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, GatewayError>> {
        let found = Inbox::mark_read(self, workspace, user, id);
        Box::pin(async move { Ok(found) })
    }

    fn dismiss<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, GatewayError>> {
        let found = Inbox::dismiss(self, workspace, user, id);
        Box::pin(async move { Ok(found) })
    }

    fn subscribe<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<InboxSubscription, GatewayError>> {
        let subscription = Inbox::subscribe(self, workspace, user);
        Box::pin(async move { Ok(subscription) })
    }

    fn forget<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        self.forget_user(workspace, user);
        Box::pin(async { Ok(()) })
    }
}
