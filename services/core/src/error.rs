//! Errors of the domain model.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CoreError {
    #[error("timestamp {text:?} is not ISO 8601: {reason}")]
    BadTimestamp { text: String, reason: String },

    #[error("duration {text:?} is not valid: {reason}")]
    BadDuration { text: String, reason: String },
}
