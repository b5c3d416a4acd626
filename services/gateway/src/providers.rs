//! Which provider each channel of a served gateway uses, and the settings of each provider.
//!
//! The settings are plain data (a YAML section of the service's configuration). Credentials
//! are never written in them: a [`SecretRef`] names a file (a mounted Kubernetes secret) or an
//! environment variable, and the value is read once, when the gateway is built. Printing the
//! settings therefore shows where a secret comes from, never the secret.
//!
//! ```yaml
//! channels: { push: apns, live_activity: apns, email: smtp, webhook: webhook, in_app: inbox }
//! apns:
//!   endpoint: https://api.push.apple.com
//!   team_id: TEAM123456
//!   key_id: KEYID78901
//!   topic: com.example.shop
//!   signing_key: { file: /run/secrets/apns.p8 }
//!   policy: { rate_limit: { per_second: 500, burst: 100 } }
//! webhook:
//!   url: https://hooks.example.com/beckon
//!   secret: { env: BECKON_WEBHOOK_SECRET }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::adapter::Deps;
use crate::channel::{Channel, Gateway};
use crate::email::{SmtpConfig, SmtpSecurity};
use crate::error::GatewayError;
use crate::fcm::{FcmConfig, ServiceAccount};
use crate::policy::{DeliveryPolicy, range};
use crate::recipients::{DeviceRegistry, Recipients};
use crate::secret::Secret;
use crate::sms::TwilioConfig;
use crate::webhook::WebhookConfig;
use crate::{apns, email, fcm, sms, webhook};

/// The channels a journey can send on, and so the only ones a gateway routes.
pub const CHANNELS: [&str; 6] = ["push", "in_app", "email", "sms", "webhook", "live_activity"];

/// Why `name` is no channel, naming the ones there are.
fn unknown_channel(name: &str) -> String {
    format!(
        "unknown channel `{name}`; known channels: {}",
        CHANNELS.join(", ")
    )
}

/// Reads the `channels` mapping, refusing a channel no journey can send on while the reader
/// still stands on its name, so a file's error carries the name's line and column: a
/// misspelt channel would otherwise route nothing, and its messages would go to the recorder.
fn read_channels<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, ProviderKind>, D::Error> {
    struct Routes;

    impl<'de> serde::de::Visitor<'de> for Routes {
        type Value = BTreeMap<String, ProviderKind>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "a mapping from channel ({}) to provider",
                CHANNELS.join(", ")
            )
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut routes = BTreeMap::new();
            while let Some(KnownChannel(channel)) = map.next_key()? {
                let kind = map.next_value()?;
                routes.insert(channel, kind);
            }
            Ok(routes)
        }
    }

    deserializer.deserialize_map(Routes)
}

/// A channel name from [`CHANNELS`].
struct KnownChannel(String);

impl<'de> Deserialize<'de> for KnownChannel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;

        impl serde::de::Visitor<'_> for Name {
            type Value = KnownChannel;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a channel: {}", CHANNELS.join(", "))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KnownChannel, E> {
                if CHANNELS.contains(&v) {
                    Ok(KnownChannel(v.to_string()))
                } else {
                    Err(E::custom(unknown_channel(v)))
                }
            }
        }

        deserializer.deserialize_str(Name)
    }
}

/// The providers a channel can be routed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Apns,
    Fcm,
    Smtp,
    Twilio,
    Webhook,
    /// The in-app inbox of the gateway itself.
    Inbox,
    /// The development recorder (`--messages-out`), which is also what an unrouted channel
    /// uses.
    Record,
}

/// Where a credential is read from: a file, or an environment variable. Exactly one.
///
/// Written `{ file: PATH }` or `{ env: NAME }`; anything else (a secret written inline, most
/// of all) is refused while the settings are read, saying so.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SecretRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// The two keys a [`SecretRef`] may have, read once the value is known to be a mapping.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretKeys {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    env: Option<String>,
}

/// How a secret is written, for the errors that refuse another shape.
const SECRET_SHAPE: &str = "`{ file: PATH }` or `{ env: NAME }`";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<SecretRef, D::Error> {
        struct Shape;

        impl Shape {
            fn refuse<E: serde::de::Error>(what: &str) -> E {
                E::custom(format!(
                    "{what} is not a secret reference; write {SECRET_SHAPE}: secrets are read \
                     from a file or an environment variable, never written in the settings"
                ))
            }
        }

        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = SecretRef;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{SECRET_SHAPE}")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SecretRef, A::Error> {
                let keys =
                    SecretKeys::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(SecretRef {
                    file: keys.file,
                    env: keys.env,
                })
            }

            // The value is not echoed: it may be the secret itself.
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(Shape::refuse("a string"))
            }

            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretRef, E> {
                Err(Shape::refuse("a boolean"))
            }

            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretRef, E> {
                Err(Shape::refuse("a number"))
            }

            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretRef, E> {
                Err(Shape::refuse("a number"))
            }

            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretRef, E> {
                Err(Shape::refuse("a number"))
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<SecretRef, E> {
                Err(Shape::refuse("nothing"))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<SecretRef, A::Error> {
                Err(Shape::refuse("a list"))
            }
        }

        deserializer.deserialize_any(Shape)
    }
}

impl SecretRef {
    /// Reads the credential; `field` names the setting in errors.
    pub fn load(&self, field: &str) -> Result<Secret, GatewayError> {
        let config = |reason: String| GatewayError::Config {
            field: field.to_string(),
            reason,
        };
        let secret = match (&self.file, &self.env) {
            (Some(path), None) => Secret::from_file(path).map_err(|e| match e {
                GatewayError::Config { reason, .. } => {
                    config(format!("{}: {reason}", path.display()))
                }
                other => other,
            })?,
            (None, Some(name)) => match std::env::var(name) {
                Ok(value) => Secret::new(value.trim()),
                Err(_) => return Err(config(format!("environment variable {name} is not set"))),
            },
            _ => return Err(config("give exactly one of `file` or `env`".into())),
        };
        if secret.is_empty() {
            return Err(config("the secret is empty".into()));
        }
        Ok(secret)
    }
}

fn ten_seconds() -> u64 {
    10_000
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsSettings {
    pub endpoint: String,
    pub team_id: String,
    pub key_id: String,
    /// The bundle id.
    pub topic: String,
    /// The `.p8` signing key.
    pub signing_key: SecretRef,
    /// How long APNs keeps trying an offline device; 0 sends once.
    #[serde(default = "one_hour")]
    pub expiration_secs: u64,
    #[serde(default = "ten_seconds", deserialize_with = "range::read_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub policy: DeliveryPolicy,
}

fn one_hour() -> u64 {
    3_600
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmSettings {
    pub endpoint: String,
    pub token_endpoint: String,
    /// The service-account key file (JSON).
    pub service_account: SecretRef,
    #[serde(default = "ten_seconds", deserialize_with = "range::read_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub policy: DeliveryPolicy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    #[serde(deserialize_with = "range::read_port")]
    pub port: u16,
    pub security: SmtpSecurity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// The sender, `Name <address>`.
    pub from: String,
    pub unsubscribe_url: String,
    pub unsubscribe_secret: SecretRef,
    #[serde(
        default = "thirty_seconds",
        deserialize_with = "range::read_timeout_ms"
    )]
    pub timeout_ms: u64,
    #[serde(default = "four", deserialize_with = "range::read_pool_size")]
    pub pool_size: u32,
    #[serde(default)]
    pub policy: DeliveryPolicy,
}

fn thirty_seconds() -> u64 {
    30_000
}

fn four() -> u32 {
    4
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioSettings {
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: SecretRef,
    /// The sending number, E.164.
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_callback: Option<String>,
    #[serde(default = "ten_seconds", deserialize_with = "range::read_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub policy: DeliveryPolicy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub url: String,
    /// The HMAC key shared with the receiver.
    pub secret: SecretRef,
    #[serde(default = "ten_seconds", deserialize_with = "range::read_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub policy: DeliveryPolicy,
}

/// The providers of a served gateway: which provider each channel uses, and their settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersConfig {
    /// Channel (one of [`CHANNELS`]) to provider. A channel not named here goes to the
    /// recorder.
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "read_channels"
    )]
    pub channels: BTreeMap<String, ProviderKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns: Option<ApnsSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fcm: Option<FcmSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub twilio: Option<TwilioSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSettings>,
}

/// A channel and the provider it is routed to.
type Route = (String, Arc<dyn Channel>);

/// What the adapters are built with besides their settings.
#[derive(Clone)]
pub struct Wiring {
    pub recipients: Arc<dyn Recipients>,
    pub devices: Arc<dyn DeviceRegistry>,
    /// The in-app inbox, for channels routed to `inbox`.
    pub inbox: Arc<dyn Channel>,
    /// The recorder, for channels routed to `record`.
    pub record: Arc<dyn Channel>,
    pub deps: Deps,
}

/// Reads a provider URL. Every adapter speaks HTTP (APNs over HTTP/2, `http` meaning h2c
/// for a local fake), and an unsubscribe link is opened by a browser, so any other scheme is
/// refused here rather than at the first send.
fn parse_url(field: &str, text: &str) -> Result<Url, GatewayError> {
    let config = |reason: String| GatewayError::Config {
        field: field.to_string(),
        reason,
    };
    let url = Url::parse(text).map_err(|e| config(format!("not a URL: {e}")))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(config(format!(
            "the scheme `{other}` cannot be used; expected http or https"
        ))),
    }
}

fn missing(channel: &str, kind: &str) -> GatewayError {
    GatewayError::Config {
        field: format!("channels.{channel}"),
        reason: format!("routed to {kind}, but there is no `{kind}` section"),
    }
}

/// What every provider's settings have: a call timeout and a delivery policy.
fn common_settings(config: &ProvidersConfig) -> Vec<(&'static str, u64, &DeliveryPolicy)> {
    let mut all = Vec::new();
    if let Some(s) = &config.apns {
        all.push(("apns", s.timeout_ms, &s.policy));
    }
    if let Some(s) = &config.fcm {
        all.push(("fcm", s.timeout_ms, &s.policy));
    }
    if let Some(s) = &config.smtp {
        all.push(("smtp", s.timeout_ms, &s.policy));
    }
    if let Some(s) = &config.twilio {
        all.push(("twilio", s.timeout_ms, &s.policy));
    }
    if let Some(s) = &config.webhook {
        all.push(("webhook", s.timeout_ms, &s.policy));
    }
    all
}

impl ProvidersConfig {
    /// Checks every provider's numeric settings against their ranges, naming the first one
    /// outside its range by its path (`webhook.policy.retry.max_attempts`). Reading a YAML
    /// file checks the same as it goes; this covers settings from anywhere else.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let config = |field: String, reason: String| GatewayError::Config { field, reason };
        if let Some(name) = self
            .channels
            .keys()
            .find(|c| !CHANNELS.contains(&c.as_str()))
        {
            return Err(config("channels".into(), unknown_channel(name)));
        }
        for (provider, timeout_ms, policy) in common_settings(self) {
            range::TIMEOUT_MS
                .check(timeout_ms)
                .map_err(|reason| config(format!("{provider}.timeout_ms"), reason))?;
            policy
                .check()
                .map_err(|(field, reason)| config(format!("{provider}.policy.{field}"), reason))?;
        }
        if let Some(smtp) = &self.smtp {
            range::POOL_SIZE
                .check(u64::from(smtp.pool_size))
                .map_err(|reason| config("smtp.pool_size".into(), reason))?;
            range::PORT
                .check(u64::from(smtp.port))
                .map_err(|reason| config("smtp.port".into(), reason))?;
        }
        Ok(())
    }

    /// Routes each configured channel of `gateway` to its provider, building every provider
    /// once (push and live_activity may share one APNs connection). Fails on the first
    /// unusable setting, naming it.
    pub fn apply(&self, mut gateway: Gateway, wiring: &Wiring) -> Result<Gateway, GatewayError> {
        for (channel, adapter) in self.routes(wiring)? {
            tracing::info!(
                beckon.channel = %channel,
                beckon.provider = adapter.provider(),
                "channel routed"
            );
            gateway = gateway.with(&channel, adapter);
        }
        Ok(gateway)
    }

    /// Runs every check [`ProvidersConfig::apply`] runs, building the routed providers and
    /// dropping them: ranges, routes, secrets read from their files or variables, URLs and
    /// their schemes, signing keys. Nothing is sent and nothing connects, so a configuration
    /// can be checked before a port is taken, or by `--print-config`.
    pub fn check(&self) -> Result<(), GatewayError> {
        let record: Arc<dyn Channel> = Arc::new(crate::RecordingChannel::new());
        let wiring = Wiring {
            recipients: Arc::new(crate::MemoryRecipients::new()),
            devices: Arc::new(crate::MemoryDevices::new()),
            inbox: record.clone(),
            record,
            deps: Deps::live(Arc::new(crate::MemorySink::new())),
        };
        self.routes(&wiring).map(|_| ())
    }

    /// Each configured channel with its provider, built.
    fn routes(&self, wiring: &Wiring) -> Result<Vec<Route>, GatewayError> {
        self.validate()?;
        let mut built: BTreeMap<ProviderKind, Arc<dyn Channel>> = BTreeMap::new();
        let mut routes = Vec::with_capacity(self.channels.len());
        for (channel, kind) in &self.channels {
            let adapter = match built.get(kind) {
                Some(adapter) => adapter.clone(),
                None => {
                    let adapter = self.build(channel, *kind, wiring)?;
                    built.insert(*kind, adapter.clone());
                    adapter
                }
            };
            routes.push((channel.clone(), adapter));
        }
        Ok(routes)
    }

    fn build(
        &self,
        channel: &str,
        kind: ProviderKind,
        wiring: &Wiring,
    ) -> Result<Arc<dyn Channel>, GatewayError> {
        let deps = wiring.deps.clone();
        let adapter: Arc<dyn Channel> = match kind {
            ProviderKind::Inbox => wiring.inbox.clone(),
            ProviderKind::Record => wiring.record.clone(),
            ProviderKind::Apns => {
                let s = self.apns.as_ref().ok_or_else(|| missing(channel, "apns"))?;
                let mut config = apns::ApnsConfig::new(
                    parse_url("apns.endpoint", &s.endpoint)?,
                    s.team_id.clone(),
                    s.key_id.clone(),
                    s.signing_key.load("apns.signing_key")?,
                    s.topic.clone(),
                );
                config.expiration =
                    (s.expiration_secs > 0).then(|| Duration::from_secs(s.expiration_secs));
                config.timeout = Duration::from_millis(s.timeout_ms);
                config.policy = s.policy.clone();
                Arc::new(apns::channel(config, wiring.devices.clone(), deps)?)
            }
            ProviderKind::Fcm => {
                let s = self.fcm.as_ref().ok_or_else(|| missing(channel, "fcm"))?;
                let account = s.service_account.load("fcm.service_account")?;
                let mut config = FcmConfig::new(
                    parse_url("fcm.endpoint", &s.endpoint)?,
                    parse_url("fcm.token_endpoint", &s.token_endpoint)?,
                    ServiceAccount::from_json(account.expose())?,
                );
                config.timeout = Duration::from_millis(s.timeout_ms);
                config.policy = s.policy.clone();
                Arc::new(fcm::channel(config, wiring.devices.clone(), deps)?)
            }
            ProviderKind::Smtp => {
                let s = self.smtp.as_ref().ok_or_else(|| missing(channel, "smtp"))?;
                let mut config = SmtpConfig::new(
                    s.host.clone(),
                    s.port,
                    s.from.clone(),
                    parse_url("smtp.unsubscribe_url", &s.unsubscribe_url)?,
                    s.unsubscribe_secret.load("smtp.unsubscribe_secret")?,
                );
                config.security = s.security;
                config.username = s.username.clone();
                config.password = match &s.password {
                    Some(p) => Some(p.load("smtp.password")?),
                    None => None,
                };
                config.timeout = Duration::from_millis(s.timeout_ms);
                config.pool_size = s.pool_size;
                config.policy = s.policy.clone();
                Arc::new(email::channel(config, wiring.recipients.clone(), deps)?)
            }
            ProviderKind::Twilio => {
                let s = self
                    .twilio
                    .as_ref()
                    .ok_or_else(|| missing(channel, "twilio"))?;
                let mut config = TwilioConfig::new(
                    parse_url("twilio.base_url", &s.base_url)?,
                    s.account_sid.clone(),
                    s.auth_token.load("twilio.auth_token")?,
                    s.from.clone(),
                );
                config.status_callback = match &s.status_callback {
                    Some(u) => Some(parse_url("twilio.status_callback", u)?),
                    None => None,
                };
                config.timeout = Duration::from_millis(s.timeout_ms);
                config.policy = s.policy.clone();
                Arc::new(sms::channel(config, wiring.recipients.clone(), deps)?)
            }
            ProviderKind::Webhook => {
                let s = self
                    .webhook
                    .as_ref()
                    .ok_or_else(|| missing(channel, "webhook"))?;
                let mut config = WebhookConfig::new(
                    parse_url("webhook.url", &s.url)?,
                    s.secret.load("webhook.secret")?,
                );
                config.timeout = Duration::from_millis(s.timeout_ms);
                config.policy = s.policy.clone();
                Arc::new(webhook::channel(config, deps)?)
            }
        };
        Ok(adapter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_comes_from_a_file_or_the_environment_never_both() {
        let dir = std::env::temp_dir().join(format!("beckon-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("hook");
        std::fs::write(&path, "s3cret\n").expect("write");

        let from_file = SecretRef {
            file: Some(path.clone()),
            env: None,
        };
        let secret = from_file.load("webhook.secret").expect("loads");
        assert_eq!(secret.expose(), "s3cret");

        let both = SecretRef {
            file: Some(path),
            env: Some("X".into()),
        };
        let err = both
            .load("webhook.secret")
            .expect_err("ambiguous")
            .to_string();
        assert!(err.contains("webhook.secret"), "{err}");

        let unset = SecretRef {
            file: None,
            env: Some("BECKON_TEST_SURELY_UNSET_VARIABLE".into()),
        };
        let err = unset.load("smtp.password").expect_err("unset").to_string();
        assert!(err.contains("BECKON_TEST_SURELY_UNSET_VARIABLE"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn settings_out_of_range_are_refused_by_path_when_built_in_code() {
        let config: ProvidersConfig = serde_json::from_str(
            r#"{"webhook": {"url": "http://127.0.0.1:9/h", "secret": {"env": "X"}}}"#,
        )
        .expect("parses");
        assert!(config.validate().is_ok());

        let refused = |edit: &dyn Fn(&mut ProvidersConfig)| {
            let mut c = config.clone();
            edit(&mut c);
            match c.validate() {
                Err(GatewayError::Config { field, reason }) => format!("{field}: {reason}"),
                other => panic!("not refused: {other:?}"),
            }
        };
        let err = refused(&|c| {
            if let Some(w) = c.webhook.as_mut() {
                w.policy.retry.max_attempts = 0;
            }
        });
        assert!(
            err.starts_with("webhook.policy.retry.max_attempts: 0 is out of range"),
            "{err}"
        );
        let err = refused(&|c| {
            if let Some(w) = c.webhook.as_mut() {
                w.policy.rate_limit.per_second = f64::NAN;
            }
        });
        assert!(
            err.starts_with("webhook.policy.rate_limit.per_second"),
            "{err}"
        );
        let err = refused(&|c| {
            if let Some(w) = c.webhook.as_mut() {
                w.timeout_ms = 0;
            }
        });
        assert!(
            err.starts_with("webhook.timeout_ms: 0 is out of range"),
            "{err}"
        );
        let err = refused(&|c| {
            if let Some(w) = c.webhook.as_mut() {
                w.policy.breaker.cool_down = Duration::ZERO;
            }
        });
        assert!(err.starts_with("webhook.policy.breaker.cool_down"), "{err}");
    }

    #[test]
    fn an_unknown_channel_is_refused_naming_the_known_ones() {
        let err = serde_json::from_str::<ProvidersConfig>(r#"{"channels": {"pigeon": "record"}}"#)
            .expect_err("pigeon is no channel")
            .to_string();
        assert!(err.contains("unknown channel `pigeon`"), "{err}");
        assert!(
            err.contains("push, in_app, email, sms, webhook, live_activity"),
            "{err}"
        );

        // Built in code, it is refused as well.
        let mut config = ProvidersConfig::default();
        config
            .channels
            .insert("pigeon".into(), ProviderKind::Record);
        let err = config.validate().expect_err("refused").to_string();
        assert!(err.contains("channels"), "{err}");
        assert!(err.contains("unknown channel `pigeon`"), "{err}");

        let every: ProvidersConfig = serde_json::from_str(
            r#"{"channels": {"push": "record", "in_app": "inbox", "email": "record",
                "sms": "record", "webhook": "record", "live_activity": "record"}}"#,
        )
        .expect("every known channel");
        assert_eq!(every.channels.len(), CHANNELS.len());
        assert!(every.validate().is_ok());
    }

    #[test]
    fn urls_must_parse_and_speak_http() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("hook");
        std::fs::write(&secret, "whsec-check\n").expect("write");
        let checked = |url: &str| {
            let config: ProvidersConfig = serde_json::from_value(serde_json::json!({
                "channels": {"webhook": "webhook"},
                "webhook": {"url": url, "secret": {"file": secret}},
            }))
            .expect("parses");
            config.check().map_err(|e| e.to_string())
        };
        assert_eq!(checked("https://hooks.example.com/beckon"), Ok(()));
        assert_eq!(checked("http://127.0.0.1:9/hooks"), Ok(()));

        let err = checked("hooks.example.com/beckon").expect_err("relative");
        assert!(err.contains("webhook.url: not a URL"), "{err}");
        let err = checked("ftp://hooks.example.com/beckon").expect_err("ftp");
        assert!(
            err.contains("webhook.url: the scheme `ftp` cannot be used"),
            "{err}"
        );
    }

    #[test]
    fn a_channel_routed_to_a_provider_without_settings_is_named() {
        let config: ProvidersConfig =
            serde_json::from_str(r#"{"channels": {"push": "apns"}}"#).expect("parses");
        let record: Arc<dyn Channel> = Arc::new(crate::RecordingChannel::new());
        let wiring = Wiring {
            recipients: Arc::new(crate::MemoryRecipients::new()),
            devices: Arc::new(crate::MemoryDevices::new()),
            inbox: record.clone(),
            record,
            deps: Deps::live(Arc::new(crate::MemorySink::new())),
        };
        let err = config
            .apply(Gateway::new(), &wiring)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("channels.push"), "{err}");
    }
}
