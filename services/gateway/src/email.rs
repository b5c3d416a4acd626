//! Email over SMTP, with lettre.
//!
//! A message goes out as `multipart/alternative` with a plain-text and an HTML part, built
//! from the rendered body: journeys render HTML, which is sent as it is and stripped of its
//! tags for the text part; a body without any markup is plain text, escaped for the HTML
//! part ([`crate::email_text`] states the rule). Every email carries
//! one-click unsubscribe headers (RFC 8058), which large mailbox providers require of bulk
//! senders:
//!
//! ```text
//! List-Unsubscribe: <https://unsubscribe.example/u?token=...>
//! List-Unsubscribe-Post: List-Unsubscribe=One-Click
//! ```
//!
//! The token names the workspace and user and is signed with HMAC-SHA256, so the unsubscribe
//! endpoint can trust it without a lookup ([`verify_unsubscribe_token`]).
//!
//! SMTP answers: 4xx is transient and retried, 5xx is permanent and final; a connection that
//! fails is retried. The `Message-ID` is derived from the idempotency key, so a receiving
//! system that deduplicates by it sees one message.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use beckon_core::{Clock, OutboundMessage, Ts};
use futures::future::BoxFuture;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, header::Header};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::adapter::{Adapter, Attempt, Deps, Provider, Target};
use crate::crypto;
use crate::email_text;
use crate::error::GatewayError;
use crate::policy::DeliveryPolicy;
use crate::recipients::Recipients;
use crate::secret::Secret;

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain TCP: only for a relay on the same host or a test server.
    None,
    /// Plain TCP upgraded with STARTTLS, which is required (submission port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[derive(Clone)]
pub struct SmtpConfig {
    /// The relay. Required: there is no default.
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The sender, `Name <address>`.
    pub from: String,
    /// Where the unsubscribe link points; the signed token is added as `token=`.
    pub unsubscribe_url: Url,
    pub unsubscribe_secret: Secret,
    pub timeout: Duration,
    pub pool_size: u32,
    pub policy: DeliveryPolicy,
}

impl SmtpConfig {
    pub fn new(
        host: impl Into<String>,
        port: u16,
        from: impl Into<String>,
        unsubscribe_url: Url,
        unsubscribe_secret: Secret,
    ) -> SmtpConfig {
        SmtpConfig {
            host: host.into(),
            port,
            security: SmtpSecurity::StartTls,
            username: None,
            password: None,
            from: from.into(),
            unsubscribe_url,
            unsubscribe_secret,
            timeout: Duration::from_secs(30),
            pool_size: 4,
            policy: DeliveryPolicy::default(),
        }
    }
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("from", &self.from)
            .field("unsubscribe_url", &self.unsubscribe_url.as_str())
            .field("unsubscribe_secret", &"***")
            .field("timeout", &self.timeout)
            .field("pool_size", &self.pool_size)
            .field("policy", &self.policy)
            .finish()
    }
}

const TOKEN_CONTEXT: &[u8] = b"beckon.unsubscribe.v1.";

/// A token saying "this user of this workspace asked to unsubscribe from email".
pub fn unsubscribe_token(secret: &Secret, workspace: &str, user: &str) -> String {
    let payload = format!(
        "{}.{}",
        crypto::b64url(workspace.as_bytes()),
        crypto::b64url(user.as_bytes())
    );
    let tag = crypto::hmac_sha256(secret.expose().as_bytes(), &token_input(&payload));
    format!("{payload}.{}", crypto::b64url(&tag))
}

fn token_input(payload: &str) -> Vec<u8> {
    [TOKEN_CONTEXT, payload.as_bytes()].concat()
}

/// The (workspace, user) of a token, when its signature holds.
pub fn verify_unsubscribe_token(secret: &Secret, token: &str) -> Option<(String, String)> {
    let (payload, tag) = token.rsplit_once('.')?;
    let tag = crypto::b64url_decode(tag)?;
    if !crypto::hmac_sha256_verify(secret.expose().as_bytes(), &token_input(payload), &tag) {
        return None;
    }

    let (workspace, user) = payload.split_once('.')?;
    let workspace = String::from_utf8(crypto::b64url_decode(workspace)?).ok()?;
    let user = String::from_utf8(crypto::b64url_decode(user)?).ok()?;
    Some((workspace, user))
}

/// The unsubscribe link for a user.
pub fn unsubscribe_link(config: &SmtpConfig, workspace: &str, user: &str) -> Url {
    let token = unsubscribe_token(&config.unsubscribe_secret, workspace, user);
    let mut url = config.unsubscribe_url.clone();
    url.query_pairs_mut().append_pair("token", &token);
    url
}

#[derive(Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribe(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[derive(Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribePost)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_string())
    }
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("<br>\n"),
            c => out.push(c),
        }
    }
    out
}

/// The text and HTML parts of an email with `body`, each ending with the unsubscribe link.
fn bodies(body: &str, link: &Url) -> (String, String) {
    let footer = format!(
        "<p style=\"font-size:12px\"><a href=\"{}\">Unsubscribe</a></p>\n",
        html_escape(link.as_str())
    );
    let (text, content) = if email_text::is_html(body) {
        (email_text::html_to_text(body), body.to_string())
    } else {
        (body.to_string(), format!("<p>{}</p>", html_escape(body)))
    };
    let text = format!("{text}\n\n--\nUnsubscribe: {link}\n");

    // A whole document keeps its own head; the link goes just before it closes.
    let closing = content.to_ascii_lowercase().rfind("</body>");
    let html = match closing {
        Some(at) => format!("{}{footer}{}", &content[..at], &content[at..]),
        None => format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n\
             {content}\n{footer}</body></html>\n"
        ),
    };
    (text, html)
}

/// lettre wants a `SystemTime`; it is built from the injected clock's reading.
fn date(now: Ts) -> SystemTime {
    let ms = u64::try_from(now.0).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn invalid(field: &str, reason: impl fmt::Display) -> GatewayError {
    GatewayError::InvalidArgument {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

/// What a valid sender looks like, for the error that refuses one.
const FROM_SHAPE: &str = "is not an email address; expected an address such as \
                          `shop@example.com`, or a name and address such as \
                          `Shop <shop@example.com>`";

/// `text` with every control character replaced by a space, for a header value made from a
/// user's data: a subject rendered from their traits, their address.
///
/// lettre puts CR and LF inside RFC 2047 encoded words, so they cannot start a header line of
/// their own; but the subject a mail client decodes still breaks where they were, and a relay
/// or filter that decodes the header and writes it out again may split it there. The other
/// control characters (BEL, ESC, DEL, ...) lettre writes as they are, which RFC 5322 does not
/// allow in a header: some servers refuse such a message, and a terminal showing it acts on
/// them. A space, rather than nothing, keeps apart the words the character stood between.
fn header_text(text: &str) -> Cow<'_, str> {
    if text.contains(char::is_control) {
        Cow::Owned(text.replace(char::is_control, " "))
    } else {
        Cow::Borrowed(text)
    }
}

/// The email for `message` to `to`, dated `now`.
pub fn build_email(
    config: &SmtpConfig,
    message: &OutboundMessage,
    to: &str,
    now: Ts,
) -> Result<lettre::Message, GatewayError> {
    let from: Mailbox = config.from.parse().map_err(|e| invalid("smtp.from", e))?;

    // An address whose control characters stand inside it does not parse, and is refused as
    // before; a name holding some, or a line break stored after the address, goes out clean.
    let to: Mailbox = header_text(to)
        .parse()
        .map_err(|e| invalid("recipient email", e))?;
    let subject = message
        .subject
        .as_deref()
        .or(message.title.as_deref())
        .unwrap_or_default();
    let subject = header_text(subject).into_owned();
    let link = unsubscribe_link(config, &message.workspace, &message.user_id);

    let domain = from.email.domain().to_string();
    let message_id = format!(
        "<{}@{domain}>",
        crypto::sha256_hex(message.idempotency_key.as_bytes(), 16)
    );

    let (text, html) = bodies(&message.body, &link);

    lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .date(date(now))
        .message_id(Some(message_id))
        .header(ListUnsubscribe(format!("<{link}>")))
        .header(ListUnsubscribePost)
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| invalid("email", e))
}

/// The SMTP protocol.
pub struct SmtpProvider {
    config: SmtpConfig,
    recipients: std::sync::Arc<dyn Recipients>,
    clock: std::sync::Arc<dyn Clock>,
    // Built on first use: lettre's pool starts a task, which needs a running tokio runtime.
    transport: OnceLock<AsyncSmtpTransport<Tokio1Executor>>,
}

impl SmtpProvider {
    fn transport(&self) -> Result<&AsyncSmtpTransport<Tokio1Executor>, GatewayError> {
        if let Some(transport) = self.transport.get() {
            return Ok(transport);
        }

        let built = build_transport(&self.config)?;
        Ok(self.transport.get_or_init(|| built))
    }

    async fn send_to(&self, message: &OutboundMessage, to: &str) -> Attempt {
        let now = self.clock.now();
        let email = match build_email(&self.config, message, to, now) {
            Ok(email) => email,
            Err(e) => {
                return Attempt::Reject {
                    reason: e.to_string(),
                    invalid_address: false,
                };
            }
        };
        let transport = match self.transport() {
            Ok(transport) => transport,
            Err(e) => {
                return Attempt::Reject {
                    reason: e.to_string(),
                    invalid_address: false,
                };
            }
        };
        let message_id = email
            .headers()
            .get_raw("Message-ID")
            .unwrap_or_default()
            .to_string();

        match transport.send(email).await {
            Ok(_) => Attempt::Accepted {
                provider_id: message_id,
            },
            Err(e) => classify(&e),
        }
    }
}

fn classify(e: &lettre::transport::smtp::Error) -> Attempt {
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    if e.is_permanent() {
        return Attempt::Reject {
            reason: format!("smtp {code}"),
            invalid_address: false,
        };
    }
    if e.is_transient() {
        return Attempt::Retry {
            reason: format!("smtp {code}"),
            after: None,
        };
    }
    if e.is_client() {
        return Attempt::Reject {
            reason: "smtp client error".into(),
            invalid_address: false,
        };
    }
    let reason = if e.is_timeout() {
        "smtp timeout"
    } else if e.is_tls() {
        "smtp tls failure"
    } else {
        "smtp connection failure"
    };
    Attempt::Retry {
        reason: reason.into(),
        after: None,
    }
}

fn build_transport(
    config: &SmtpConfig,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, GatewayError> {
    let bad = |e: lettre::transport::smtp::Error| GatewayError::Config {
        field: "smtp.host".into(),
        reason: e.to_string(),
    };
    let builder = match config.security {
        SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
        SmtpSecurity::StartTls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host).map_err(bad)?
        }
        SmtpSecurity::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host).map_err(bad)?
        }
    };
    let mut builder = builder
        .port(config.port)
        .timeout(Some(config.timeout))
        .pool_config(PoolConfig::new().max_size(config.pool_size.max(1)));
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose().to_string(),
        ));
    }
    Ok(builder.build())
}

impl Provider for SmtpProvider {
    fn name(&self) -> &'static str {
        "smtp"
    }

    fn targets<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Vec<Target>, GatewayError>> {
        Box::pin(async move {
            // The address the message was made with, else the one stored.
            let given = message.to.as_ref().and_then(|to| to.email.clone());
            let email = match given {
                Some(email) => Some(email),
                None => {
                    self.recipients
                        .email(&message.workspace, &message.user_id)
                        .await
                }
            };
            Ok(email.map(Target::address).into_iter().collect())
        })
    }

    fn attempt<'a>(
        &'a self,
        message: &'a OutboundMessage,
        target: &'a Target,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(self.send_to(message, &target.address))
    }
}

pub type EmailChannel = Adapter<SmtpProvider>;

/// Builds the email channel. The SMTP connection pool is opened on the first send.
pub fn channel(
    config: SmtpConfig,
    recipients: std::sync::Arc<dyn Recipients>,
    deps: Deps,
) -> Result<EmailChannel, GatewayError> {
    if config.unsubscribe_secret.is_empty() {
        return Err(GatewayError::Config {
            field: "smtp.unsubscribe_secret".into(),
            reason: "must not be empty".into(),
        });
    }
    config
        .from
        .parse::<Mailbox>()
        .map_err(|_| GatewayError::Config {
            field: "smtp.from".into(),
            reason: format!("{:?} {FROM_SHAPE}", config.from),
        })?;
    crate::http::ensure_crypto_provider();

    let policy = config.policy.clone();
    let provider = SmtpProvider {
        config,
        recipients,
        clock: deps.clock.clone(),
        transport: OnceLock::new(),
    };
    Ok(Adapter::new(provider, policy, deps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsubscribe_tokens_verify_and_resist_tampering() {
        let secret = Secret::new("unsub-key");
        let token = unsubscribe_token(&secret, "acme", "user-Ω");
        assert_eq!(
            verify_unsubscribe_token(&secret, &token),
            Some(("acme".to_string(), "user-Ω".to_string()))
        );
        assert_eq!(verify_unsubscribe_token(&Secret::new("x"), &token), None);

        let forged = format!("{}.{}", crypto::b64url(b"acme"), crypto::b64url(b"victim"));
        let tag = token.rsplit_once('.').map(|(_, t)| t).unwrap_or_default();
        assert_eq!(
            verify_unsubscribe_token(&secret, &format!("{forged}.{tag}")),
            None
        );
        assert_eq!(verify_unsubscribe_token(&secret, "garbage"), None);
    }

    fn config() -> SmtpConfig {
        let link = Url::parse("https://unsubscribe.example/u").expect("url");
        SmtpConfig::new(
            "127.0.0.1",
            2525,
            "Shop <shop@example.com>",
            link,
            Secret::new("unsub-key"),
        )
    }

    fn message(subject: &str) -> OutboundMessage {
        OutboundMessage {
            idempotency_key: "k".into(),
            workspace: "acme".into(),
            user_id: "ann".into(),
            journey: "welcome".into(),
            version: 1,
            instance: None,
            step: "hello".into(),
            channel: "email".into(),
            at: Ts(0),
            title: None,
            subject: Some(subject.into()),
            body: "Hello".into(),
            to: None,
        }
    }

    /// The header lines of an email as sent, each folded line joined to the one it continues.
    fn header_lines(email: &lettre::Message) -> Vec<String> {
        let bytes = email.formatted();
        let text = String::from_utf8(bytes).expect("headers are text");
        let (head, _) = text
            .split_once("\r\n\r\n")
            .expect("a blank line ends the headers");
        let mut lines: Vec<String> = Vec::new();
        for line in head.split("\r\n") {
            match lines.last_mut() {
                Some(last) if line.starts_with([' ', '\t']) => last.push_str(line),
                _ => lines.push(line.to_string()),
            }
        }
        lines
    }

    #[test]
    fn control_characters_of_a_subject_become_spaces_and_inject_no_header() {
        let subject = "Hi Ann\r\nBcc: evil@attacker.example\u{7}\u{1b}[31m\u{7f}!";
        let email = build_email(&config(), &message(subject), "ann@example.com", Ts(0))
            .expect("email builds");
        let lines = header_lines(&email);

        assert!(
            !lines
                .iter()
                .any(|l| l.to_ascii_lowercase().starts_with("bcc")),
            "{lines:#?}"
        );
        let subject: Vec<&String> = lines.iter().filter(|l| l.starts_with("Subject:")).collect();
        assert_eq!(
            subject,
            ["Subject: Hi Ann  Bcc: evil@attacker.example  [31m !"],
            "{lines:#?}"
        );
        for line in &lines {
            assert!(!line.contains(char::is_control), "{line:?}");
        }
    }

    #[test]
    fn a_recipient_name_or_a_line_break_after_the_address_is_cleaned() {
        let to = "Ann\u{7}Lee <ann@example.com>\r\n";
        let email = build_email(&config(), &message("Hi"), to, Ts(0)).expect("the address is kept");
        let lines = header_lines(&email);
        let to_line = "To: \"Ann Lee\" <ann@example.com>".to_string();
        assert!(lines.contains(&to_line), "{lines:#?}");

        // A control character inside the address leaves no address to send to.
        let broken = "ann@example.com\r\nBcc: evil@attacker.example";
        let refused = build_email(&config(), &message("Hi"), broken, Ts(0));
        assert!(refused.is_err());
    }
}
