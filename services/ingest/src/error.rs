//! Why an event was refused, and the crate's error with its gRPC mapping.

use std::fmt;

use serde::Serialize;
use thiserror::Error;

/// The kinds of bad input, as counted in replay reports and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    MalformedJson,
    NotAnObject,
    UnknownType,
    MissingUserId,
    MissingEvent,
    BadTimestamp,
    BadField,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::UnknownType => "unknown_type",
            RejectReason::MissingUserId => "missing_user_id",
            RejectReason::MissingEvent => "missing_event",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::BadField => "bad_field",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused event: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub reason: RejectReason,
    pub field: String,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, field: &str, detail: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            field: field.to_string(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.reason, self.detail)
        } else {
            write!(f, "{}: {}: {}", self.reason, self.field, self.detail)
        }
    }
}

#[derive(Debug, Error)]
pub enum IngestError {
    #[error("invalid event: {0}")]
    Invalid(Rejection),

    #[error("the event log is unavailable: {0}")]
    LogUnavailable(String),

    #[error("too many events in flight; retry later")]
    Overloaded,
}

impl From<IngestError> for tonic::Status {
    fn from(e: IngestError) -> Self {
        match &e {
            IngestError::Invalid(_) => tonic::Status::invalid_argument(e.to_string()),
            IngestError::LogUnavailable(_) => tonic::Status::unavailable(e.to_string()),
            IngestError::Overloaded => tonic::Status::resource_exhausted(e.to_string()),
        }
    }
}
