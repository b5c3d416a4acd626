//! Webhooks: a message as a signed JSON POST to an endpoint the workspace configured.
//!
//! # Signature
//!
//! Every request carries
//!
//! ```text
//! Beckon-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>
//! Idempotency-Key: <the message's idempotency key>
//! ```
//!
//! where the HMAC is computed with the shared secret over the bytes
//! `<t> "." <request body>`. A receiver recomputes it (see [`verify`]), compares in constant
//! time, and refuses a timestamp outside its replay window (five minutes is usual), so a
//! captured request cannot be replayed later. During a secret rotation a header may carry
//! several `v1=` entries; one match is enough.
//!
//! Receivers are asked to treat a repeated `Idempotency-Key` as the same delivery. That is
//! what lets a send whose earlier attempt is in doubt be repeated safely. Keys name the user,
//! whose id may be any text: the header carries the key percent-encoded (`%`, control bytes
//! and each UTF-8 byte of a non-ASCII character as `%XX`), so it is always printable ASCII;
//! the body's `id` is the key itself.
//!
//! # Answers
//!
//! 2xx is delivered. 408, 429 and 5xx (and no answer at all) are retried. Any other status is
//! final, and redirects are not followed.

use std::fmt;
use std::time::Duration;

use beckon_core::{OutboundMessage, Ts};
use futures::future::BoxFuture;
use serde::Serialize;
use url::Url;

use crate::adapter::{Adapter, Attempt, Deps, Provider, Target};
use crate::crypto;
use crate::error::GatewayError;
use crate::http;
use crate::policy::DeliveryPolicy;
use crate::secret::Secret;

/// The header that carries the timestamp and signature.
pub const SIGNATURE_HEADER: &str = "Beckon-Signature";
/// The header that carries the message's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

#[derive(Clone)]
pub struct WebhookConfig {
    /// The receiver's endpoint. Required: there is no default.
    pub url: Url,
    /// The HMAC key shared with the receiver.
    pub secret: Secret,
    pub timeout: Duration,
    pub policy: DeliveryPolicy,
}

impl WebhookConfig {
    pub fn new(url: Url, secret: Secret) -> WebhookConfig {
        WebhookConfig {
            url,
            secret,
            timeout: Duration::from_secs(10),
            policy: DeliveryPolicy::default(),
        }
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url.as_str())
            .field("secret", &"***")
            .field("timeout", &self.timeout)
            .field("policy", &self.policy)
            .finish()
    }
}

/// The JSON a receiver gets.
#[derive(Serialize)]
struct Payload<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    workspace: &'a str,
    user_id: &'a str,
    journey: &'a str,
    version: u32,
    step: &'a str,
    channel: &'a str,
    at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    body: &'a str,
}

/// The request body for `message`.
pub fn payload(message: &OutboundMessage) -> Result<Vec<u8>, GatewayError> {
    let payload = Payload {
        id: &message.idempotency_key,
        kind: "message",
        workspace: &message.workspace,
        user_id: &message.user_id,
        journey: &message.journey,
        version: message.version,
        step: &message.step,
        channel: &message.channel,
        at: message.at.to_string(),
        title: message.title.as_deref(),
        subject: message.subject.as_deref(),
        body: &message.body,
    };
    serde_json::to_vec(&payload).map_err(|e| GatewayError::InvalidArgument {
        field: "message".into(),
        reason: e.to_string(),
    })
}

/// The `Beckon-Signature` value for `body` sent at `unix_seconds`.
pub fn sign(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    let tag = crypto::hmac_sha256(secret, &signed_bytes(unix_seconds, body));
    format!("t={unix_seconds},v1={}", crypto::hex(&tag))
}

fn signed_bytes(unix_seconds: i64, body: &[u8]) -> Vec<u8> {
    let mut data = unix_seconds.to_string().into_bytes();
    data.push(b'.');
    data.extend_from_slice(body);
    data
}

/// Why a receiver refused a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header is malformed")]
    Malformed,
    #[error("timestamp is outside the replay window")]
    OutsideWindow,
    #[error("no signature matches")]
    Mismatch,
}

/// Checks a `Beckon-Signature` header as a receiver would: the timestamp must lie within
/// `window` of `now` (either side, to allow for clock skew), and one `v1` must match.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: Ts,
    window: Duration,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key {
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            "v1" => tags.push(crypto::unhex(value).ok_or(SignatureError::Malformed)?),
            // Unknown schemes are skipped, so a later scheme can be added beside v1.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if tags.is_empty() {
        return Err(SignatureError::Malformed);
    }

    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let skew = now
        .0
        .saturating_sub(timestamp.saturating_mul(1_000))
        .saturating_abs();
    if skew > window_ms {
        return Err(SignatureError::OutsideWindow);
    }

    let data = signed_bytes(timestamp, body);
    if tags
        .iter()
        .any(|tag| crypto::hmac_sha256_verify(secret, &data, tag))
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The webhook protocol.
pub struct WebhookProvider {
    config: WebhookConfig,
    client: reqwest::Client,
    clock: std::sync::Arc<dyn beckon_core::Clock>,
}

impl WebhookProvider {
    async fn post(&self, message: &OutboundMessage) -> Attempt {
        let body = match payload(message) {
            Ok(body) => body,
            Err(e) => {
                return Attempt::Reject {
                    reason: e.to_string(),
                    invalid_address: false,
                };
            }
        };
        let unix_seconds = self.clock.now().0.div_euclid(1_000);
        let signature = sign(self.config.secret.expose().as_bytes(), unix_seconds, &body);

        let sent = self
            .client
            .post(self.config.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(
                IDEMPOTENCY_HEADER,
                http::header_value(&message.idempotency_key),
            )
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return http::transport_failure(&e),
        };

        let status = response.status();
        if status.is_success() {
            return Attempt::Accepted {
                provider_id: message.idempotency_key.clone(),
            };
        }
        let after = http::retry_after(response.headers());
        let reason = format!("http {}", status.as_u16());
        if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
            return Attempt::Retry { reason, after };
        }
        Attempt::Reject {
            reason,
            invalid_address: false,
        }
    }
}

impl Provider for WebhookProvider {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn dedupes_by_key(&self) -> bool {
        true
    }

    fn targets<'a>(
        &'a self,
        _message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Vec<Target>, GatewayError>> {
        let target = Target::address(self.config.url.as_str());
        Box::pin(async move { Ok(vec![target]) })
    }

    fn attempt<'a>(
        &'a self,
        message: &'a OutboundMessage,
        _target: &'a Target,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(self.post(message))
    }
}

/// The webhook channel.
pub type WebhookChannel = Adapter<WebhookProvider>;

/// Builds the webhook channel from its config.
pub fn channel(config: WebhookConfig, deps: Deps) -> Result<WebhookChannel, GatewayError> {
    if config.secret.is_empty() {
        return Err(GatewayError::Config {
            field: "webhook.secret".into(),
            reason: "must not be empty".into(),
        });
    }
    let client = http::client("webhook", config.timeout, false)?;
    let policy = config.policy.clone();
    let provider = WebhookProvider {
        config,
        client,
        clock: deps.clock.clone(),
    };
    Ok(Adapter::new(provider, policy, deps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trips_within_the_window() {
        let body = br#"{"a":1}"#;
        let header = sign(b"s3cret", 1_700_000_000, body);
        let now = Ts(1_700_000_100_000);
        let window = Duration::from_secs(300);
        assert_eq!(verify(b"s3cret", &header, body, now, window), Ok(()));
        assert_eq!(
            verify(b"other", &header, body, now, window),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", &header, b"{\"a\":2}", now, window),
            Err(SignatureError::Mismatch)
        );
        let late = Ts(1_700_000_301_000);
        assert_eq!(
            verify(b"s3cret", &header, body, late, window),
            Err(SignatureError::OutsideWindow)
        );
        assert_eq!(
            verify(b"s3cret", "v1=zz", body, now, window),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn rotated_secrets_verify_with_either_tag() {
        let body = b"x";
        let old = sign(b"old", 10, body);
        let new = sign(b"new", 10, body);
        let both = format!("{new},{}", old.split(',').nth(1).unwrap_or_default());
        assert_eq!(
            verify(b"old", &both, body, Ts(10_000), Duration::from_secs(1)),
            Ok(())
        );
    }
}
