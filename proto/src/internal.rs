//! The shared token that Beckon's services present to each other on the calls only they may
//! make: `Ingest.AppendOutcome`, `Gateway.Send` and the whole `Scheduler` service.
//!
//! A caller puts the token in the [`HEADER`] metadata entry; a server that has one checks it
//! with [`InternalToken::check`], in time that does not depend on where the two differ.

use tonic::Status;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// The request metadata entry that carries the token.
pub const HEADER: &str = "x-beckon-internal-token";

/// Fewest bytes a token may have: short enough to type, long enough not to guess.
pub const MIN_LEN: usize = 16;

/// The gRPC paths only Beckon's own services may call, as full paths or, ending in `/`, as a
/// whole service.
pub const INTERNAL_PATHS: &[&str] = &[
    "/beckon.v1.Ingest/AppendOutcome",
    "/beckon.v1.Gateway/Send",
    "/beckon.v1.Scheduler/",
];

/// Whether a call to `path` (`/package.Service/Method`) is one of the internal calls.
pub fn is_internal(path: &str) -> bool {
    INTERNAL_PATHS.iter().any(|p| {
        if p.ends_with('/') {
            path.starts_with(p)
        } else {
            path == *p
        }
    })
}

/// A checked token. Its `Debug` never shows the value, so it can sit in logged settings.
#[derive(Clone, PartialEq, Eq)]
pub struct InternalToken {
    value: AsciiMetadataValue,
}

impl std::fmt::Debug for InternalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalToken(***)")
    }
}

/// Why a text is not a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    Empty,
    TooShort(usize),
    /// The byte at this offset is not visible ASCII.
    NotPrintable(usize),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Empty => f.write_str("the token is empty"),
            TokenError::TooShort(n) => {
                write!(f, "the token has {n} bytes; it needs at least {MIN_LEN}")
            }
            TokenError::NotPrintable(at) => write!(
                f,
                "byte {at} of the token is not a visible ASCII character (33 to 126); a \
                 header cannot carry it"
            ),
        }
    }
}

impl std::error::Error for TokenError {}

impl InternalToken {
    /// The token in `text`, as a secret file holds it: a final line break, which most ways
    /// of writing such a file add, is not part of it.
    pub fn parse(text: &[u8]) -> Result<InternalToken, TokenError> {
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        // Spaces are refused too: HTTP drops them at either end of a header value, so a
        // token ending in one would never match.
        if let Some(at) = text.iter().position(|b| !(0x21..=0x7e).contains(b)) {
            return Err(TokenError::NotPrintable(at));
        }
        if text.len() < MIN_LEN {
            return Err(TokenError::TooShort(text.len()));
        }
        let value = AsciiMetadataValue::try_from(text).map_err(|_| TokenError::NotPrintable(0))?;
        Ok(InternalToken { value })
    }

    /// Puts the token in a request's metadata.
    pub fn attach(&self, metadata: &mut MetadataMap) {
        metadata.insert(HEADER, self.value.clone());
    }

    /// Whether `given` (a header's bytes) is this token. Every byte is compared whatever the
    /// earlier ones were, so the time taken tells nothing about how much of a guess was right.
    pub fn matches(&self, given: &[u8]) -> bool {
        let own = self.value.as_encoded_bytes();
        if own.len() != given.len() {
            return false;
        }
        let diff = own.iter().zip(given).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }

    /// The answer to a call that gave `given` in the [`HEADER`] entry: none when it is this
    /// token, else UNAUTHENTICATED when it is missing and PERMISSION_DENIED when it is wrong.
    pub fn check(&self, given: Option<&[u8]>) -> Result<(), Status> {
        match given {
            None => Err(Status::unauthenticated(format!(
                "this call is internal to Beckon: the request needs the `{HEADER}` metadata \
                 entry with the deployment's internal token"
            ))),
            Some(given) if self.matches(given) => Ok(()),
            Some(_) => Err(Status::permission_denied(format!(
                "this call is internal to Beckon: the `{HEADER}` metadata entry does not hold \
                 the deployment's internal token"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_internal_paths_are_exactly_the_listed_ones() {
        assert!(is_internal("/beckon.v1.Ingest/AppendOutcome"));
        assert!(is_internal("/beckon.v1.Gateway/Send"));
        assert!(is_internal("/beckon.v1.Scheduler/SetTimers"));
        assert!(is_internal("/beckon.v1.Scheduler/Pending"));
        assert!(!is_internal("/beckon.v1.Ingest/Track"));
        assert!(!is_internal("/beckon.v1.Gateway/SendMore"));
        assert!(!is_internal("/beckon.v1.Gateway/ReportOutcome"));
        assert!(!is_internal("/beckon.v1.SchedulerX/SetTimers"));
    }

    #[test]
    fn a_token_is_checked_as_read() {
        let t = InternalToken::parse(b"0123456789abcdef\n").expect("valid");
        assert!(t.matches(b"0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdeg"));
        assert!(!t.matches(b"0123456789abcde"));
        assert_eq!(InternalToken::parse(b"\n"), Err(TokenError::Empty));
        assert_eq!(InternalToken::parse(b"short"), Err(TokenError::TooShort(5)));
        assert_eq!(
            InternalToken::parse(b"0123456789 abcdef"),
            Err(TokenError::NotPrintable(10))
        );
        assert!(!format!("{t:?}").contains("0123"));
    }

    #[test]
    fn missing_and_wrong_tokens_get_different_codes() {
        let t = InternalToken::parse(b"0123456789abcdef").expect("valid");
        assert!(t.check(Some(b"0123456789abcdef")).is_ok());
        let missing = t.check(None).expect_err("missing");
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert!(missing.message().contains(HEADER));
        let wrong = t.check(Some(b"nope")).expect_err("wrong");
        assert_eq!(wrong.code(), tonic::Code::PermissionDenied);
    }
}
