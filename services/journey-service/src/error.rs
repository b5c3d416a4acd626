//! Errors of the journey service and their gRPC mapping.

use beckon_journey::SpecError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DefinitionError {
    /// The definition store could not be reached; the caller may retry.
    #[error("the definition store is unavailable: {0}")]
    Unavailable(String),

    /// A request field is missing or malformed.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },

    /// The specs do not parse or do not check.
    #[error("{}", beckon_journey::error::list(.0))]
    Invalid(Vec<SpecError>),

    /// A version that was published already is being published with other content. Published
    /// versions never change: running users depend on them.
    #[error(
        "{file}: {kind} {id} version {version} is already published with other content; \
         publish it as a new version"
    )]
    Changed {
        file: String,
        kind: String,
        id: String,
        version: u32,
    },

    /// A release is, or would become, larger than followers read. Every version stays in the
    /// release, so only publishing fewer or smaller versions keeps it within the limit.
    #[error(
        "release {release} of workspace {workspace} is {bytes} bytes, above the limit of \
         {limit} bytes a follower reads; publish fewer or smaller versions (a message body \
         is part of every version of its journey)"
    )]
    ReleaseTooLarge {
        workspace: String,
        release: u64,
        bytes: usize,
        limit: usize,
    },

    /// A stored document cannot be read back; retrying will not help.
    #[error("stored definition {key} cannot be read: {reason}")]
    Corrupt { key: String, reason: String },
}

impl From<DefinitionError> for tonic::Status {
    fn from(e: DefinitionError) -> Self {
        match &e {
            DefinitionError::Unavailable(_) => tonic::Status::unavailable(e.to_string()),
            DefinitionError::InvalidArgument { .. } | DefinitionError::Invalid(_) => {
                tonic::Status::invalid_argument(e.to_string())
            }
            DefinitionError::Changed { .. } => tonic::Status::failed_precondition(e.to_string()),
            DefinitionError::Corrupt { .. } => tonic::Status::data_loss(e.to_string()),
            DefinitionError::ReleaseTooLarge { .. } => {
                tonic::Status::resource_exhausted(e.to_string())
            }
        }
    }
}

impl From<::redis::RedisError> for DefinitionError {
    fn from(e: ::redis::RedisError) -> Self {
        DefinitionError::Unavailable(e.to_string())
    }
}
