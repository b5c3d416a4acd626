//! Errors of the scheduler crate and their gRPC mapping.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SchedulerError {
    /// Redis could not be reached or refused the command; the caller may retry.
    #[error("the timer store is unavailable: {0}")]
    Unavailable(String),

    /// A stored timer could not be decoded; retrying will not help.
    #[error("stored timer {member} cannot be read: {reason}")]
    Corrupt { member: String, reason: String },
}

impl From<SchedulerError> for tonic::Status {
    fn from(e: SchedulerError) -> Self {
        match &e {
            SchedulerError::Unavailable(_) => tonic::Status::unavailable(e.to_string()),
            SchedulerError::Corrupt { .. } => tonic::Status::data_loss(e.to_string()),
        }
    }
}

impl From<::redis::RedisError> for SchedulerError {
    fn from(e: ::redis::RedisError) -> Self {
        SchedulerError::Unavailable(e.to_string())
    }
}
