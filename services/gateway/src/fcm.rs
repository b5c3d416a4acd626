//! Firebase Cloud Messaging, HTTP v1 API.
//!
//! Auth is OAuth 2.0 with a service account: a JWT (RS256, signed with the account's private
//! key, `kid` = its key id) is exchanged at the token endpoint for an access token
//! (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`). The access token is cached
//! until `refresh_margin` before it expires; an `UNAUTHENTICATED` answer drops it and resends
//! once with a new one. Both endpoints are required configuration.
//!
//! A message goes to `POST /v1/projects/<project>/messages:send`, one per registration
//! token. Like APNs, a message without a title whose body is a JSON object becomes a data
//! message (values as strings, as FCM requires); anything else is a notification.
//!
//! Answers: `UNREGISTERED` (404), `SENDER_ID_MISMATCH` (403) and `INVALID_ARGUMENT` (400)
//! about `message.token` remove the device; `QUOTA_EXCEEDED` (429), `UNAVAILABLE` (503) and
//! `INTERNAL` (500) are retried and remove nothing; anything else is final.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use beckon_core::{Clock, OutboundMessage, Ts};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::Url;

use crate::adapter::{Adapter, Attempt, Deps, Provider, Target};
use crate::error::GatewayError;
use crate::http;
use crate::jwt::Rs256Signer;
use crate::policy::DeliveryPolicy;
use crate::recipients::{DeviceRegistry, platform};
use crate::secret::Secret;

/// The OAuth scope for sending FCM messages.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The fields of a Google service-account key file that FCM needs.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub private_key_id: String,
    pub private_key: Secret,
}

impl ServiceAccount {
    pub fn from_json(text: &str) -> Result<ServiceAccount, GatewayError> {
        serde_json::from_str(text).map_err(|e| GatewayError::Config {
            field: "fcm.service_account".into(),
            reason: format!(
                "not a service-account key: line {} column {}",
                e.line(),
                e.column()
            ),
        })
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<ServiceAccount, GatewayError> {
        let text = Secret::from_file(path)?;
        ServiceAccount::from_json(text.expose())
    }
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("private_key", &"***")
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct FcmConfig {
    /// The FCM API base (`https://fcm.googleapis.com` in a deployment). Required.
    pub endpoint: Url,
    /// The OAuth token endpoint (the key file's `token_uri`). Required.
    pub token_endpoint: Url,
    pub service_account: ServiceAccount,
    pub refresh_margin: Duration,
    pub timeout: Duration,
    pub policy: DeliveryPolicy,
}

impl FcmConfig {
    pub fn new(endpoint: Url, token_endpoint: Url, service_account: ServiceAccount) -> FcmConfig {
        FcmConfig {
            endpoint,
            token_endpoint,
            service_account,
            refresh_margin: Duration::from_secs(5 * 60),
            timeout: Duration::from_secs(10),
            policy: DeliveryPolicy::default(),
        }
    }
}

struct AccessToken {
    token: Secret,
    expires: Ts,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Secret,
    expires_in: i64,
}

#[derive(Deserialize, Default)]
struct ErrorAnswer {
    #[serde(default)]
    error: ErrorBody,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<Value>,
}

impl ErrorBody {
    /// The FCM-specific error code, or the generic status when there is none.
    fn code(&self) -> String {
        self.details
            .iter()
            .find_map(|d| d.get("errorCode").and_then(Value::as_str))
            .unwrap_or(&self.status)
            .to_string()
    }

    /// True when a `BadRequest` detail blames the registration token.
    fn blames_token(&self) -> bool {
        self.details
            .iter()
            .filter_map(|d| d.get("fieldViolations").and_then(Value::as_array))
            .flatten()
            .any(|v| v.get("field").and_then(Value::as_str) == Some("message.token"))
    }
}

/// The FCM protocol.
pub struct FcmProvider {
    config: FcmConfig,
    signer: Rs256Signer,
    client: reqwest::Client,
    devices: Arc<dyn DeviceRegistry>,
    clock: Arc<dyn Clock>,
    // Held across a token fetch, so concurrent sends wait for one fetch instead of each
    // starting their own.
    token: tokio::sync::Mutex<Option<AccessToken>>,
}

enum Answer {
    Done(Attempt),
    Unauthenticated,
}

impl FcmProvider {
    async fn access_token(&self, fresh: bool) -> Result<Secret, Attempt> {
        let mut cached = self.token.lock().await;
        let now = self.clock.now();
        let margin = i64::try_from(self.config.refresh_margin.as_millis()).unwrap_or(0);
        if let Some(token) = cached.as_ref()
            && !fresh
            && now.0 + margin < token.expires.0
        {
            return Ok(token.token.clone());
        }

        let answer = self.fetch_token(now).await?;
        let expires = Ts(now.0 + answer.expires_in.saturating_mul(1_000));
        tracing::debug!(beckon.provider = "fcm", expires = %expires, "fetched access token");
        *cached = Some(AccessToken {
            token: answer.access_token.clone(),
            expires,
        });
        Ok(answer.access_token)
    }

    async fn fetch_token(&self, now: Ts) -> Result<TokenAnswer, Attempt> {
        let account = &self.config.service_account;
        let iat = now.0.div_euclid(1_000);
        let claims = json!({
            "iss": account.client_email,
            "scope": FCM_SCOPE,
            "aud": self.config.token_endpoint.as_str(),
            "iat": iat,
            "exp": iat + 3_600,
        });
        let assertion = self
            .signer
            .sign(&account.private_key_id, &claims)
            .map_err(|e| reject(e.to_string()))?;

        let sent = self
            .client
            .post(self.config.token_endpoint.clone())
            .form(&[
                ("grant_type", JWT_BEARER),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await;
        let response = sent.map_err(|e| http::transport_failure(&e))?;
        let status = response.status();
        if status.is_success() {
            return response
                .json::<TokenAnswer>()
                .await
                .map_err(|_| Attempt::Retry {
                    reason: "unreadable token answer".into(),
                    after: None,
                });
        }

        // A refused grant is a configuration problem: retrying will not fix the key.
        let reason = format!("token endpoint http {}", status.as_u16());
        if status.as_u16() == 429 || status.is_server_error() {
            let after = http::retry_after(response.headers());
            return Err(Attempt::Retry { reason, after });
        }
        Err(reject(reason))
    }

    async fn send(&self, message: &OutboundMessage, token: &str) -> Attempt {
        let body = json!({ "message": fcm_message(message, token) });
        for fresh in [false, true] {
            match self.post(&body, fresh).await {
                Answer::Done(attempt) => return attempt,
                Answer::Unauthenticated if !fresh => continue,
                Answer::Unauthenticated => break,
            }
        }
        reject("UNAUTHENTICATED".into())
    }

    async fn post(&self, body: &Value, fresh: bool) -> Answer {
        let access = match self.access_token(fresh).await {
            Ok(access) => access,
            Err(attempt) => return Answer::Done(attempt),
        };
        let mut url = self.config.endpoint.clone();
        url.set_path(&format!(
            "/v1/projects/{}/messages:send",
            self.config.service_account.project_id
        ));

        let sent = self
            .client
            .post(url)
            .bearer_auth(access.expose())
            .json(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return Answer::Done(http::transport_failure(&e)),
        };
        let status = response.status().as_u16();
        if status == 200 {
            let name = response
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            return Answer::Done(Attempt::Accepted { provider_id: name });
        }

        let after = http::retry_after(response.headers());
        let error = response
            .json::<ErrorAnswer>()
            .await
            .unwrap_or_default()
            .error;
        let code = error.code();
        if status == 401 && code != "THIRD_PARTY_AUTH_ERROR" {
            return Answer::Unauthenticated;
        }
        Answer::Done(classify(status, &code, error.blames_token(), after))
    }
}

fn classify(status: u16, code: &str, blames_token: bool, after: Option<Duration>) -> Attempt {
    let reason = if code.is_empty() {
        format!("http {status}")
    } else {
        code.to_string()
    };
    let invalid = match code {
        "UNREGISTERED" | "SENDER_ID_MISMATCH" => true,
        "INVALID_ARGUMENT" => blames_token,
        _ => false,
    };
    if invalid {
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

fn reject(reason: String) -> Attempt {
    Attempt::Reject {
        reason,
        invalid_address: false,
    }
}

/// The `message` object of a send request.
fn fcm_message(message: &OutboundMessage, token: &str) -> Value {
    let mut data = Map::new();
    data.insert(
        "beckon_journey".into(),
        Value::from(message.journey.clone()),
    );
    data.insert("beckon_step".into(), Value::from(message.step.clone()));
    data.insert(
        "beckon_key".into(),
        Value::from(message.idempotency_key.clone()),
    );

    let custom = match (&message.title, serde_json::from_str::<Value>(&message.body)) {
        (None, Ok(Value::Object(custom))) => Some(custom),
        _ => None,
    };
    if let Some(custom) = custom {
        // FCM data values must be strings.
        for (key, value) in custom {
            let text = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            data.insert(key, Value::from(text));
        }
        return json!({ "token": token, "data": data });
    }

    let mut notification = Map::new();
    if let Some(title) = &message.title {
        notification.insert("title".into(), Value::from(title.clone()));
    }
    notification.insert("body".into(), Value::from(message.body.clone()));
    json!({ "token": token, "notification": notification, "data": data })
}

impl Provider for FcmProvider {
    fn name(&self) -> &'static str {
        "fcm"
    }

    fn targets<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Vec<Target>, GatewayError>> {
        Box::pin(async move {
            // The tokens the message was made with, else the ones stored.
            let given = message.to.as_ref().and_then(|to| to.tokens(platform::FCM));
            let tokens = match given {
                Some(tokens) => tokens.to_vec(),
                None => {
                    self.devices
                        .tokens(&message.workspace, &message.user_id, platform::FCM)
                        .await
                }
            };
            Ok(tokens
                .into_iter()
                .map(|t| Target::device(platform::FCM, t))
                .collect())
        })
    }

    fn attempt<'a>(
        &'a self,
        message: &'a OutboundMessage,
        target: &'a Target,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(self.send(message, &target.address))
    }

    fn forget<'a>(&'a self, message: &'a OutboundMessage, target: &'a Target) -> BoxFuture<'a, ()> {
        self.devices.remove(
            &message.workspace,
            &message.user_id,
            platform::FCM,
            &target.address,
        )
    }
}

pub type FcmChannel = Adapter<FcmProvider>;

/// Builds the FCM channel; fails when the service account's key cannot be read.
pub fn channel(
    config: FcmConfig,
    devices: Arc<dyn DeviceRegistry>,
    deps: Deps,
) -> Result<FcmChannel, GatewayError> {
    let signer = Rs256Signer::from_pem(
        "fcm.service_account.private_key",
        config.service_account.private_key.expose(),
    )?;
    let client = http::client("fcm", config.timeout, false)?;
    let policy = config.policy.clone();
    let provider = FcmProvider {
        config,
        signer,
        client,
        devices,
        clock: deps.clock.clone(),
        token: tokio::sync::Mutex::new(None),
    };
    Ok(Adapter::new(provider, policy, deps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_token_errors_remove_the_device() {
        let removes = |status, code, blames| {
            matches!(
                classify(status, code, blames, None),
                Attempt::Reject {
                    invalid_address: true,
                    ..
                }
            )
        };
        assert!(removes(404, "UNREGISTERED", false));
        assert!(removes(400, "INVALID_ARGUMENT", true));
        assert!(!removes(400, "INVALID_ARGUMENT", false));
        assert!(!removes(429, "QUOTA_EXCEEDED", false));
        assert!(matches!(
            classify(503, "UNAVAILABLE", false, None),
            Attempt::Retry { .. }
        ));
    }
}
