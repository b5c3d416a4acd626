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

/// `text` as a header value any receiver or proxy takes: printable ASCII as it is, and `%`
/// and every other byte (control bytes, each byte of a non-ASCII character in UTF-8) as
/// `%XX` in uppercase hex, so percent-decoding gives the text back exactly.
pub(crate) fn header_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_printable_ascii_and_decode_back() {
        assert_eq!(
            header_value("default:ada:welcome:1:a:1"),
            "default:ada:welcome:1:a:1"
        );
        assert_eq!(header_value("default:éé"), "default:%C3%A9%C3%A9");
        assert_eq!(header_value("a%b\tc\u{7f}"), "a%25b%09c%7F");
        assert_eq!(header_value(""), "");

        let key = "w:Zoë 😀:j:1:s:1";
        let encoded = header_value(key);
        assert!(
            encoded.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "{encoded}"
        );
        assert!(reqwest::header::HeaderValue::from_str(&encoded).is_ok());
        let decoded: Vec<u8> = {
            let bytes = encoded.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            out
        };
        assert_eq!(decoded, key.as_bytes());
    }
}
