//! SMS through a Twilio-compatible REST API.
//!
//! `POST <base>/2010-04-01/Accounts/<sid>/Messages.json`, form-encoded `From`, `To`, `Body`
//! and (when configured) `StatusCallback`, with HTTP basic auth (account sid, auth token).
//! The base URL is required configuration.
//!
//! Answers: 201 is accepted (the message `sid` is the provider id). 429 and 5xx are retried.
//! Other 4xx are final; Twilio's codes for a number that cannot receive SMS (21211 invalid
//! `To`, 21614 not a mobile number) mark the address invalid.
//!
//! The API has no idempotency header, so a send whose earlier attempt is in doubt is not
//! repeated by the [`crate::Gateway`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use beckon_core::OutboundMessage;
use futures::future::BoxFuture;
use serde::Deserialize;
use url::Url;

use crate::adapter::{Adapter, Attempt, Deps, Provider, Target};
use crate::error::GatewayError;
use crate::http;
use crate::policy::DeliveryPolicy;
use crate::recipients::Recipients;
use crate::secret::Secret;

#[derive(Clone)]
pub struct TwilioConfig {
    /// The API base (`https://api.twilio.com` for Twilio itself). Required.
    pub base_url: Url,
    pub account_sid: String,
    pub auth_token: Secret,
    /// The sending number, E.164.
    pub from: String,
    /// Where the provider reports delivery status changes.
    pub status_callback: Option<Url>,
    pub timeout: Duration,
    pub policy: DeliveryPolicy,
}

impl TwilioConfig {
    pub fn new(
        base_url: Url,
        account_sid: impl Into<String>,
        auth_token: Secret,
        from: impl Into<String>,
    ) -> TwilioConfig {
        TwilioConfig {
            base_url,
            account_sid: account_sid.into(),
            auth_token,
            from: from.into(),
            status_callback: None,
            timeout: Duration::from_secs(10),
            policy: DeliveryPolicy::default(),
        }
    }
}

impl fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("base_url", &self.base_url.as_str())
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"***")
            .field("from", &self.from)
            .field(
                "status_callback",
                &self.status_callback.as_ref().map(Url::as_str),
            )
            .field("timeout", &self.timeout)
            .field("policy", &self.policy)
            .finish()
    }
}

#[derive(Deserialize)]
struct Created {
    sid: String,
}

#[derive(Deserialize, Default)]
struct ErrorAnswer {
    #[serde(default)]
    code: Option<i64>,
}

/// Twilio error codes that mean the number itself cannot get SMS.
const INVALID_NUMBER_CODES: [i64; 2] = [21211, 21614];

pub struct TwilioProvider {
    config: TwilioConfig,
    client: reqwest::Client,
    recipients: Arc<dyn Recipients>,
}

impl TwilioProvider {
    async fn send(&self, message: &OutboundMessage, to: &str) -> Attempt {
        let mut url = self.config.base_url.clone();
        url.set_path(&format!(
            "/2010-04-01/Accounts/{}/Messages.json",
            self.config.account_sid
        ));
        let mut form = vec![
            ("From", self.config.from.as_str()),
            ("To", to),
            ("Body", message.body.as_str()),
        ];
        if let Some(callback) = &self.config.status_callback {
            form.push(("StatusCallback", callback.as_str()));
        }

        let sent = self
            .client
            .post(url)
            .basic_auth(
                &self.config.account_sid,
                Some(self.config.auth_token.expose()),
            )
            .form(&form)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return http::transport_failure(&e),
        };

        let status = response.status();
        if status.is_success() {
            let sid = response.json::<Created>().await.map(|c| c.sid);
            return Attempt::Accepted {
                provider_id: sid.unwrap_or_default(),
            };
        }
        let after = http::retry_after(response.headers());
        let code = response
            .json::<ErrorAnswer>()
            .await
            .unwrap_or_default()
            .code;
        let reason = match code {
            Some(code) => format!("http {} code {code}", status.as_u16()),
            None => format!("http {}", status.as_u16()),
        };
        if status.as_u16() == 429 || status.is_server_error() {
            return Attempt::Retry { reason, after };
        }
        Attempt::Reject {
            reason,
            invalid_address: code.is_some_and(|c| INVALID_NUMBER_CODES.contains(&c)),
        }
    }
}

impl Provider for TwilioProvider {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn targets<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Vec<Target>, GatewayError>> {
        Box::pin(async move {
            // The number the message was made with, else the one stored.
            let given = message.to.as_ref().and_then(|to| to.phone.clone());
            let phone = match given {
                Some(phone) => Some(phone),
                None => {
                    self.recipients
                        .phone(&message.workspace, &message.user_id)
                        .await
                }
            };
            Ok(phone.map(Target::address).into_iter().collect())
        })
    }

    fn attempt<'a>(
        &'a self,
        message: &'a OutboundMessage,
        target: &'a Target,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(self.send(message, &target.address))
    }
}

pub type SmsChannel = Adapter<TwilioProvider>;

pub fn channel(
    config: TwilioConfig,
    recipients: Arc<dyn Recipients>,
    deps: Deps,
) -> Result<SmsChannel, GatewayError> {
    if config.auth_token.is_empty() || config.account_sid.is_empty() {
        return Err(GatewayError::Config {
            field: "twilio.account_sid/auth_token".into(),
            reason: "must not be empty".into(),
        });
    }
    let client = http::client("twilio", config.timeout, false)?;
    let policy = config.policy.clone();
    let provider = TwilioProvider {
        config,
        client,
        recipients,
    };
    Ok(Adapter::new(provider, policy, deps))
}
