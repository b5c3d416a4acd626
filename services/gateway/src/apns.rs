//! Apple Push Notification service over HTTP/2 with token (JWT) authentication.
//!
//! One `POST /3/device/<token>` per device, with these headers:
//!
//! | header | value |
//! | --- | --- |
//! | `authorization` | `bearer <ES256 JWT>` with `kid` (key id), `iss` (team id), `iat` |
//! | `apns-push-type` | `alert`, `background` or `liveactivity` |
//! | `apns-topic` | the bundle id; `<bundle id>.push-type.liveactivity` for Live Activities |
//! | `apns-priority` | 10 (immediate) for alerts and Live Activities, 5 for background |
//! | `apns-expiration` | unix seconds until which APNs keeps trying; 0 = once |
//! | `apns-collapse-id` | `<journey>.<step>`, so a newer nudge replaces an older one |
//! | `apns-id` | a UUID derived from the idempotency key and the device |
//!
//! The provider token is signed from the clock's time and reused until it is
//! `token_refresh` old (at most 55 minutes, since APNs refuses tokens older than an hour),
//! or until APNs answers `ExpiredProviderToken`, which re-signs and resends at once.
//!
//! Which message becomes which push: channel `live_activity` is a Live Activity whose body is
//! JSON (see [`LiveActivityBody`]); any other channel is an alert, except a message without a
//! title whose body is a JSON object, which is a background push carrying that object.
//!
//! Answers: `BadDeviceToken`, `DeviceTokenNotForTopic` (400) and `Unregistered`,
//! `ExpiredToken` (410) remove the device; 429, 500 and 503 are retried and remove nothing;
//! anything else is final.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beckon_core::{Clock, OutboundMessage, Ts};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::Url;

use crate::adapter::{Adapter, Attempt, Deps, Provider, Target};
use crate::crypto;
use crate::error::GatewayError;
use crate::http;
use crate::jwt::Es256Signer;
use crate::policy::DeliveryPolicy;
use crate::recipients::{DeviceRegistry, platform};
use crate::secret::Secret;

/// The largest payload APNs takes for these push types.
pub const MAX_PAYLOAD: usize = 4096;

/// APNs refuses provider tokens older than an hour; refreshing stays clear of that edge.
const MAX_TOKEN_AGE: Duration = Duration::from_secs(55 * 60);

#[derive(Clone)]
pub struct ApnsConfig {
    /// `https://api.push.apple.com` or the sandbox in a deployment. Required: no default.
    pub endpoint: Url,
    pub team_id: String,
    pub key_id: String,
    /// The `.p8` signing key (PKCS#8 PEM).
    pub signing_key: Secret,
    /// The app's bundle id.
    pub topic: String,
    pub token_refresh: Duration,
    /// How long APNs keeps trying an offline device; `None` sends `apns-expiration: 0`.
    pub expiration: Option<Duration>,
    /// Sets `apns-collapse-id` on alerts.
    pub collapse: bool,
    pub timeout: Duration,
    pub policy: DeliveryPolicy,
}

impl ApnsConfig {
    pub fn new(
        endpoint: Url,
        team_id: impl Into<String>,
        key_id: impl Into<String>,
        signing_key: Secret,
        topic: impl Into<String>,
    ) -> ApnsConfig {
        ApnsConfig {
            endpoint,
            team_id: team_id.into(),
            key_id: key_id.into(),
            signing_key,
            topic: topic.into(),
            token_refresh: Duration::from_secs(50 * 60),
            expiration: Some(Duration::from_secs(3_600)),
            collapse: true,
            timeout: Duration::from_secs(10),
            policy: DeliveryPolicy::default(),
        }
    }
}

impl fmt::Debug for ApnsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApnsConfig")
            .field("endpoint", &self.endpoint.as_str())
            .field("team_id", &self.team_id)
            .field("key_id", &self.key_id)
            .field("signing_key", &"***")
            .field("topic", &self.topic)
            .field("token_refresh", &self.token_refresh)
            .field("expiration", &self.expiration)
            .field("collapse", &self.collapse)
            .field("timeout", &self.timeout)
            .field("policy", &self.policy)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LiveActivityEvent {
    Start,
    Update,
    End,
}

/// The body of a `live_activity` message.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct LiveActivityBody {
    pub event: LiveActivityEvent,
    #[serde(rename = "content-state")]
    pub content_state: Value,
    /// For `start`: the `ActivityAttributes` type name and its values.
    #[serde(rename = "attributes-type", default)]
    pub attributes_type: Option<String>,
    #[serde(default)]
    pub attributes: Option<Value>,
    #[serde(rename = "stale-date", default)]
    pub stale_date: Option<i64>,
    #[serde(rename = "dismissal-date", default)]
    pub dismissal_date: Option<i64>,
}

/// What kind of push a message becomes.
#[derive(Clone, Debug, PartialEq)]
pub enum ApnsPush {
    Alert,
    Background(Map<String, Value>),
    LiveActivity(LiveActivityBody),
}

impl ApnsPush {
    pub fn from_message(message: &OutboundMessage) -> Result<ApnsPush, GatewayError> {
        if message.channel == "live_activity" {
            let body =
                serde_json::from_str(&message.body).map_err(|e| GatewayError::InvalidArgument {
                    field: "body".into(),
                    reason: format!("not a Live Activity update: {e}"),
                })?;
            return Ok(ApnsPush::LiveActivity(body));
        }

        if message.title.is_none()
            && let Ok(Value::Object(data)) = serde_json::from_str::<Value>(&message.body)
        {
            return Ok(ApnsPush::Background(data));
        }
        Ok(ApnsPush::Alert)
    }

    /// The registry platform whose tokens this push goes to.
    pub fn platform(&self) -> &'static str {
        match self {
            ApnsPush::LiveActivity(b) if b.event == LiveActivityEvent::Start => {
                platform::IOS_PUSH_TO_START
            }
            ApnsPush::LiveActivity(_) => platform::IOS_LIVE_ACTIVITY,
            ApnsPush::Alert | ApnsPush::Background(_) => platform::IOS,
        }
    }

    pub fn push_type(&self) -> &'static str {
        match self {
            ApnsPush::Alert => "alert",
            ApnsPush::Background(_) => "background",
            ApnsPush::LiveActivity(_) => "liveactivity",
        }
    }

    pub fn priority(&self) -> u8 {
        match self {
            ApnsPush::Background(_) => 5,
            ApnsPush::Alert | ApnsPush::LiveActivity(_) => 10,
        }
    }

    /// The JSON payload. `now` stamps Live Activity updates, which the device orders by it.
    pub fn payload(&self, message: &OutboundMessage, now: Ts) -> Value {
        let origin = json!({
            "journey": message.journey,
            "step": message.step,
            "key": message.idempotency_key,
        });
        match self {
            ApnsPush::Alert => {
                let mut alert = Map::new();
                if let Some(title) = &message.title {
                    alert.insert("title".into(), Value::from(title.clone()));
                }
                if let Some(subtitle) = &message.subject {
                    alert.insert("subtitle".into(), Value::from(subtitle.clone()));
                }
                alert.insert("body".into(), Value::from(message.body.clone()));
                json!({ "aps": { "alert": alert, "sound": "default" }, "beckon": origin })
            }
            ApnsPush::Background(data) => {
                let mut payload = data.clone();
                payload.insert("aps".into(), json!({ "content-available": 1 }));
                payload.insert("beckon".into(), origin);
                Value::Object(payload)
            }
            ApnsPush::LiveActivity(body) => live_activity_payload(body, message, now),
        }
    }
}

fn live_activity_payload(body: &LiveActivityBody, message: &OutboundMessage, now: Ts) -> Value {
    let event = match body.event {
        LiveActivityEvent::Start => "start",
        LiveActivityEvent::Update => "update",
        LiveActivityEvent::End => "end",
    };
    let mut aps = Map::new();
    aps.insert("timestamp".into(), Value::from(now.0.div_euclid(1_000)));
    aps.insert("event".into(), Value::from(event));
    aps.insert("content-state".into(), body.content_state.clone());
    if let Some(stale) = body.stale_date {
        aps.insert("stale-date".into(), Value::from(stale));
    }
    if let Some(dismissal) = body.dismissal_date {
        aps.insert("dismissal-date".into(), Value::from(dismissal));
    }
    if let Some(kind) = &body.attributes_type {
        aps.insert("attributes-type".into(), Value::from(kind.clone()));
    }
    if let Some(attributes) = &body.attributes {
        aps.insert("attributes".into(), attributes.clone());
    }
    if let Some(title) = &message.title {
        aps.insert(
            "alert".into(),
            json!({ "title": title, "body": message.subject.clone().unwrap_or_default() }),
        );
    }
    json!({ "aps": aps })
}

/// `apns-collapse-id`: at most 64 bytes, cut on a character boundary.
fn collapse_id(message: &OutboundMessage) -> String {
    let mut id = format!("{}.{}", message.journey, message.step);
    while id.len() > 64 {
        id.pop();
    }
    id
}

/// The `apns-id` of a message to one device: the same on every retry.
pub fn apns_id(idempotency_key: &str, device_token: &str) -> String {
    crypto::uuid_from(format!("{idempotency_key}\n{device_token}").as_bytes())
}

#[derive(Deserialize)]
struct ErrorBody {
    reason: String,
}

struct ProviderToken {
    jwt: String,
    issued: Ts,
}

/// The APNs protocol.
pub struct ApnsProvider {
    config: ApnsConfig,
    signer: Es256Signer,
    client: reqwest::Client,
    devices: Arc<dyn DeviceRegistry>,
    clock: Arc<dyn Clock>,
    token: Mutex<Option<ProviderToken>>,
}

enum Answer {
    Done(Attempt),
    ExpiredProviderToken,
}

impl ApnsProvider {
    /// The provider token, signed anew when it is old or `fresh` asks for it.
    fn bearer(&self, fresh: bool) -> Result<String, GatewayError> {
        let now = self.clock.now();
        let max_age = self.config.token_refresh.min(MAX_TOKEN_AGE);
        let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let mut cached = self.token.lock().map_err(|_| GatewayError::Config {
            field: "apns token".into(),
            reason: "token cache poisoned".into(),
        })?;

        if let Some(token) = cached.as_ref()
            && !fresh
            && now.0 - token.issued.0 < max_age_ms
        {
            return Ok(token.jwt.clone());
        }

        let claims = json!({ "iss": self.config.team_id, "iat": now.0.div_euclid(1_000) });
        let jwt = self.signer.sign(&self.config.key_id, &claims)?;
        tracing::debug!(beckon.provider = "apns", "signed a new provider token");
        *cached = Some(ProviderToken {
            jwt: jwt.clone(),
            issued: now,
        });
        Ok(jwt)
    }

    async fn push(&self, message: &OutboundMessage, token: &str) -> Attempt {
        let push = match ApnsPush::from_message(message) {
            Ok(push) => push,
            Err(e) => return reject(e.to_string()),
        };
        let now = self.clock.now();
        let body = push.payload(message, now).to_string();
        if body.len() > MAX_PAYLOAD {
            return reject("PayloadTooLarge".into());
        }

        // One resend with a fresh token when APNs says the current one expired.
        for fresh in [false, true] {
            match self.post(message, &push, token, &body, now, fresh).await {
                Answer::Done(attempt) => return attempt,
                Answer::ExpiredProviderToken if !fresh => continue,
                Answer::ExpiredProviderToken => break,
            }
        }
        Attempt::Retry {
            reason: "ExpiredProviderToken".into(),
            after: None,
        }
    }

    async fn post(
        &self,
        message: &OutboundMessage,
        push: &ApnsPush,
        token: &str,
        body: &str,
        now: Ts,
        fresh: bool,
    ) -> Answer {
        let bearer = match self.bearer(fresh) {
            Ok(bearer) => bearer,
            Err(e) => return Answer::Done(reject(e.to_string())),
        };
        let mut url = self.config.endpoint.clone();
        url.set_path(&format!("/3/device/{token}"));
        let topic = match push {
            ApnsPush::LiveActivity(_) => format!("{}.push-type.liveactivity", self.config.topic),
            _ => self.config.topic.clone(),
        };
        let expiration = self
            .config
            .expiration
            .map(|ttl| now.0.div_euclid(1_000) + i64::try_from(ttl.as_secs()).unwrap_or(0))
            .unwrap_or(0);
        let id = apns_id(&message.idempotency_key, token);

        let mut request = self
            .client
            .post(url)
            .header("authorization", format!("bearer {bearer}"))
            .header("apns-push-type", push.push_type())
            .header("apns-topic", topic)
            .header("apns-priority", push.priority().to_string())
            .header("apns-expiration", expiration.to_string())
            .header("apns-id", &id)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if self.config.collapse && *push == ApnsPush::Alert {
            request = request.header("apns-collapse-id", collapse_id(message));
        }

        let response = match request.body(body.to_string()).send().await {
            Ok(response) => response,
            Err(e) => return Answer::Done(http::transport_failure(&e)),
        };
        let status = response.status().as_u16();
        if status == 200 {
            let provider_id = response
                .headers()
                .get("apns-id")
                .and_then(|v| v.to_str().ok())
                .map_or(id, str::to_string);
            return Answer::Done(Attempt::Accepted { provider_id });
        }

        let after = http::retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.reason)
            .unwrap_or_else(|_| format!("http {status}"));
        if reason == "ExpiredProviderToken" {
            return Answer::ExpiredProviderToken;
        }
        Answer::Done(classify(status, reason, after))
    }
}

fn reject(reason: String) -> Attempt {
    Attempt::Reject {
        reason,
        invalid_address: false,
    }
}

fn classify(status: u16, reason: String, after: Option<Duration>) -> Attempt {
    let gone = matches!(
        reason.as_str(),
        "BadDeviceToken" | "DeviceTokenNotForTopic" | "Unregistered" | "ExpiredToken"
    );
    if gone && (status == 400 || status == 410) {
        return Attempt::Reject {
            reason,
            invalid_address: true,
        };
    }
    if matches!(status, 429 | 500 | 503) {
        return Attempt::Retry { reason, after };
    }
    reject(reason)
}

impl Provider for ApnsProvider {
    fn name(&self) -> &'static str {
        "apns"
    }

    fn targets<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Vec<Target>, GatewayError>> {
        Box::pin(async move {
            let push = ApnsPush::from_message(message)?;
            let platform = push.platform();
            // The tokens the message was made with, else the ones stored.
            let given = message.to.as_ref().and_then(|to| to.tokens(platform));
            let tokens = match given {
                Some(tokens) => tokens.to_vec(),
                None => {
                    self.devices
                        .tokens(&message.workspace, &message.user_id, platform)
                        .await
                }
            };
            Ok(tokens
                .into_iter()
                .map(|t| Target::device(platform, t))
                .collect())
        })
    }

    fn attempt<'a>(
        &'a self,
        message: &'a OutboundMessage,
        target: &'a Target,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(self.push(message, &target.address))
    }

    fn forget<'a>(&'a self, message: &'a OutboundMessage, target: &'a Target) -> BoxFuture<'a, ()> {
        let platform = target.platform.as_deref().unwrap_or(platform::IOS);
        self.devices.remove(
            &message.workspace,
            &message.user_id,
            platform,
            &target.address,
        )
    }
}

pub type ApnsChannel = Adapter<ApnsProvider>;

/// Builds the APNs channel; fails when the signing key cannot be read.
pub fn channel(
    config: ApnsConfig,
    devices: Arc<dyn DeviceRegistry>,
    deps: Deps,
) -> Result<ApnsChannel, GatewayError> {
    let signer = Es256Signer::from_pem("apns.signing_key", config.signing_key.expose())?;
    let client = http::client("apns", config.timeout, true)?;
    let policy = config.policy.clone();
    let provider = ApnsProvider {
        config,
        signer,
        client,
        devices,
        clock: deps.clock.clone(),
        token: Mutex::new(None),
    };
    Ok(Adapter::new(provider, policy, deps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapse_ids_stay_within_64_bytes() {
        let mut message = OutboundMessage {
            idempotency_key: "k".into(),
            workspace: "w".into(),
            user_id: "u".into(),
            journey: "ж".repeat(40),
            version: 1,
            instance: None,
            step: "s".into(),
            channel: "push".into(),
            at: Ts(0),
            title: None,
            subject: None,
            body: "hello".into(),
            to: None,
        };
        let id = collapse_id(&message);
        assert!(id.len() <= 64);
        assert!(id.starts_with("жж"));

        message.journey = "j".into();
        assert_eq!(collapse_id(&message), "j.s");
    }

    #[test]
    fn statuses_sort_into_retry_and_final() {
        let gone = |s, r: &str| classify(s, r.into(), None);
        assert!(matches!(
            gone(400, "BadDeviceToken"),
            Attempt::Reject {
                invalid_address: true,
                ..
            }
        ));
        assert!(matches!(
            gone(400, "BadTopic"),
            Attempt::Reject {
                invalid_address: false,
                ..
            }
        ));
        assert!(matches!(
            gone(429, "TooManyRequests"),
            Attempt::Retry { .. }
        ));
        assert!(matches!(
            gone(503, "ServiceUnavailable"),
            Attempt::Retry { .. }
        ));
    }
}
