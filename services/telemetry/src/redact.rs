//! Keeping secrets and message bodies out of logs.
//!
//! The rule: **secrets (provider keys, tokens, passwords, signing keys, device tokens) and
//! message bodies (rendered templates, user-supplied properties) are never logged, at any
//! level, in any span field or error message.** Log identifiers instead: workspace, user id,
//! journey and step, message id, provider, status code.
//!
//! Wrap such values in [`Redacted`] where they are stored (config structs, message types), so
//! an accidental `?value` in a log call, a `{:?}` of a whole struct, or a printed config shows
//! `[redacted]` rather than the value. Code that really needs the value asks for it by name
//! with [`Redacted::expose`], which is easy to find in review.

use std::fmt;

/// `redis://user:secret@host:6379/0` becomes `redis://user:***@host:6379/0`, in each URL of
/// a comma-separated list.
pub fn hide_password(urls: &str) -> String {
    urls.split(',')
        .map(hide_one_password)
        .collect::<Vec<_>>()
        .join(",")
}

fn hide_one_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((auth, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    let user = auth.split_once(':').map_or("", |(u, _)| u);
    format!("{scheme}://{user}:***@{host}")
}

/// What [`Redacted`] prints instead of its content.
pub const REDACTED: &str = "[redacted]";

/// A value that must never appear in logs. `Debug` and `Display` print `[redacted]`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    pub fn new(value: T) -> Redacted<T> {
        Redacted(value)
    }

    /// The hidden value, for the code that must use it (an HTTP header, a signature).
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Redacted<T> {
        Redacted(value)
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}
