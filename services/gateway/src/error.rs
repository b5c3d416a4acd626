//! Errors of the gateway and their gRPC mapping.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GatewayError {
    #[error("no adapter is configured for channel {0}")]
    NoAdapter(String),

    /// The provider refused the message for good (bad token, invalid request).
    #[error("{provider} rejected the message: {reason}")]
    Rejected { provider: String, reason: String },

    /// The provider could not take the message now; a later retry may succeed.
    #[error("{provider} is unavailable: {reason}")]
    Unavailable { provider: String, reason: String },

    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
}

impl From<GatewayError> for tonic::Status {
    fn from(e: GatewayError) -> Self {
        match &e {
            GatewayError::NoAdapter(_) => tonic::Status::failed_precondition(e.to_string()),
            GatewayError::Rejected { .. } => tonic::Status::failed_precondition(e.to_string()),
            GatewayError::Unavailable { .. } => tonic::Status::unavailable(e.to_string()),
            GatewayError::InvalidArgument { .. } => tonic::Status::invalid_argument(e.to_string()),
        }
    }
}
