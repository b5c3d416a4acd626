//! The HTTP client the HTTP-based adapters share, and reading provider answers.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::adapter::Attempt;
use crate::error::GatewayError;

/// Installs ring as the process's rustls crypto provider. reqwest is built without one (so
/// no second crypto library is linked) and would panic without it. Installing twice is
/// harmless: the first one stays.
pub(crate) fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client for one provider. `http2_only` speaks HTTP/2 from the first byte, as APNs
/// requires (over TLS it is negotiated; over plain TCP, h2c, it is the only way).
pub(crate) fn client(
    provider: &str,
    timeout: Duration,
    http2_only: bool,
) -> Result<reqwest::Client, GatewayError> {
    ensure_crypto_provider();

    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("beckon-gateway/", env!("CARGO_PKG_VERSION")))
        // A provider answer is final; following a redirect could aim a signed request
        // at a host nobody configured.
        .redirect(reqwest::redirect::Policy::none());
    if http2_only {
        builder = builder.http2_prior_knowledge();
    }
    builder.build().map_err(|e| GatewayError::Config {
        field: format!("{provider} http client"),
        reason: e.to_string(),
    })
}

/// The provider's `Retry-After` hint, when it gives one in seconds.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A request that never got an answer: the network, not the provider, failed, so it is
/// worth another try.
pub(crate) fn transport_failure(e: &reqwest::Error) -> Attempt {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect failed"
    } else {
        "transport error"
    };
    Attempt::Retry {
        reason: kind.to_string(),
        after: None,
    }
}
