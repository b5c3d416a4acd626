//! Credentials held in memory: never printed, never logged.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::error::GatewayError;

/// A credential (signing key, API token, password).
///
/// Its `Debug` output is a fixed placeholder, so a config struct that derives or writes `Debug`
/// can be printed with the effective settings and no secret leaks into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Reads a credential from a file, the usual way to mount it from a Kubernetes secret.
    /// Surrounding whitespace (a trailing newline) is dropped.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Secret, GatewayError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| GatewayError::Config {
            field: path.display().to_string(),
            reason: format!("cannot read secret file: {}", e.kind()),
        })?;
        Ok(Secret(text.trim().to_string()))
    }

    /// The credential itself, for the one place that needs it (a signer, an auth header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), "hunter2");
    }
}
