//! Where a message goes: the addresses `OutboundMessage` does not carry (email address, phone
//! number, device tokens), looked up by workspace and user.
//!
//! A deployment backs these traits with the user-state store; the in-memory implementations
//! serve single-process runs and tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

/// Device platforms a registry keeps tokens for.
pub mod platform {
    /// APNs device tokens of an app (alert and background pushes).
    pub const IOS: &str = "ios";
    /// APNs push tokens of running Live Activities (update and end events).
    pub const IOS_LIVE_ACTIVITY: &str = "ios-liveactivity";
    /// APNs push-to-start tokens (Live Activity start events).
    pub const IOS_PUSH_TO_START: &str = "ios-pushtostart";
    /// FCM registration tokens.
    pub const FCM: &str = "fcm";
}

/// Contact addresses of users.
pub trait Recipients: Send + Sync + 'static {
    fn email<'a>(&'a self, workspace: &'a str, user: &'a str) -> BoxFuture<'a, Option<String>>;
    fn phone<'a>(&'a self, workspace: &'a str, user: &'a str) -> BoxFuture<'a, Option<String>>;
}

/// Push tokens of users' devices. A token the provider calls invalid is removed, so it is not
/// tried again.
pub trait DeviceRegistry: Send + Sync + 'static {
    fn tokens<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        platform: &'a str,
    ) -> BoxFuture<'a, Vec<String>>;

    fn remove<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        platform: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, ()>;
}

type UserKey = (String, String);

/// (workspace, user, platform).
type DeviceKey = (String, String, String);

/// Email addresses and phone numbers in memory.
#[derive(Clone, Default)]
pub struct MemoryRecipients {
    emails: Arc<Mutex<HashMap<UserKey, String>>>,
    phones: Arc<Mutex<HashMap<UserKey, String>>>,
}

impl MemoryRecipients {
    pub fn new() -> MemoryRecipients {
        MemoryRecipients::default()
    }

    pub fn set_email(&self, workspace: &str, user: &str, email: &str) {
        if let Ok(mut map) = self.emails.lock() {
            map.insert((workspace.into(), user.into()), email.into());
        }
    }

    pub fn set_phone(&self, workspace: &str, user: &str, phone: &str) {
        if let Ok(mut map) = self.phones.lock() {
            map.insert((workspace.into(), user.into()), phone.into());
        }
    }
}

fn lookup(map: &Mutex<HashMap<UserKey, String>>, workspace: &str, user: &str) -> Option<String> {
    map.lock()
        .ok()?
        .get(&(workspace.to_string(), user.to_string()))
        .cloned()
}

impl Recipients for MemoryRecipients {
    fn email<'a>(&'a self, workspace: &'a str, user: &'a str) -> BoxFuture<'a, Option<String>> {
        let found = lookup(&self.emails, workspace, user);
        Box::pin(async move { found })
    }

    fn phone<'a>(&'a self, workspace: &'a str, user: &'a str) -> BoxFuture<'a, Option<String>> {
        let found = lookup(&self.phones, workspace, user);
        Box::pin(async move { found })
    }
}

/// Device tokens in memory, per (workspace, user, platform), in registration order.
#[derive(Clone, Default)]
pub struct MemoryDevices {
    tokens: Arc<Mutex<HashMap<DeviceKey, Vec<String>>>>,
}

impl MemoryDevices {
    pub fn new() -> MemoryDevices {
        MemoryDevices::default()
    }

    /// Registers a token; registering it again changes nothing.
    pub fn register(&self, workspace: &str, user: &str, platform: &str, token: &str) {
        if let Ok(mut map) = self.tokens.lock() {
            let list = map
                .entry((workspace.into(), user.into(), platform.into()))
                .or_default();
            if !list.iter().any(|t| t == token) {
                list.push(token.into());
            }
        }
    }

    fn list(&self, workspace: &str, user: &str, platform: &str) -> Vec<String> {
        let key = (
            workspace.to_string(),
            user.to_string(),
            platform.to_string(),
        );
        self.tokens
            .lock()
            .ok()
            .and_then(|map| map.get(&key).cloned())
            .unwrap_or_default()
    }
}

impl DeviceRegistry for MemoryDevices {
    fn tokens<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        platform: &'a str,
    ) -> BoxFuture<'a, Vec<String>> {
        let found = self.list(workspace, user, platform);
        Box::pin(async move { found })
    }

    fn remove<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        platform: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, ()> {
        if let Ok(mut map) = self.tokens.lock() {
            let key = (
                workspace.to_string(),
                user.to_string(),
                platform.to_string(),
            );
            if let Some(list) = map.get_mut(&key) {
                list.retain(|t| t != token);
            }
        }
        Box::pin(async {})
    }
}
