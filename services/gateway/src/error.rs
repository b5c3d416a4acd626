//! Errors of the gateway and their gRPC mapping.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// A channel journeys send on, for which this gateway has no provider.
    #[error("no provider is configured for channel {0} in this gateway")]
    NoAdapter(String),

    /// The provider refused the message for good (bad token, invalid request).
    #[error("{provider} rejected the message: {reason}")]
    Rejected { provider: String, reason: String },

    /// The provider could not take the message now; a later retry may succeed.
    #[error("{provider} is unavailable: {reason}")]
    Unavailable { provider: String, reason: String },

    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },

    /// Nothing to send to: no device, address or number is known for the user.
    #[error("no {what} is known for user {user}")]
    NoRecipient { what: String, user: String },

    /// An earlier attempt with this idempotency key may have reached the provider, and the
    /// provider cannot drop a repeat: sending again could deliver twice, so nothing is sent.
    #[error("an earlier send of {key} is in doubt; not repeated on {provider}")]
    InDoubt { provider: String, key: String },

    /// The adapter's configuration is unusable (missing field, unreadable key).
    #[error("bad gateway configuration {field}: {reason}")]
    Config { field: String, reason: String },

    /// The idempotency key store could not be read or written.
    #[error("idempotency key store failed: {0}")]
    KeyStore(String),
}

impl GatewayError {
    /// True when the same send may succeed later, so the outbox should keep it.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GatewayError::Unavailable { .. } | GatewayError::KeyStore(_)
        )
    }
}

impl From<GatewayError> for tonic::Status {
    fn from(e: GatewayError) -> Self {
        match &e {
            GatewayError::NoAdapter(_) => tonic::Status::failed_precondition(e.to_string()),
            GatewayError::Rejected { .. } => tonic::Status::failed_precondition(e.to_string()),
            GatewayError::Unavailable { .. } => tonic::Status::unavailable(e.to_string()),
            GatewayError::InvalidArgument { .. } => tonic::Status::invalid_argument(e.to_string()),
            GatewayError::NoRecipient { .. } => tonic::Status::failed_precondition(e.to_string()),
            // Retrying cannot help until the key expires: the earlier attempt may have been
            // delivered, and this provider cannot drop a repeat.
            GatewayError::InDoubt { .. } => tonic::Status::failed_precondition(e.to_string()),
            GatewayError::Config { .. } => tonic::Status::failed_precondition(e.to_string()),
            GatewayError::KeyStore(_) => tonic::Status::unavailable(e.to_string()),
        }
    }
}
