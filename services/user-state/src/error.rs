//! Errors of the user-state crate and their gRPC mapping.

use thiserror::Error;

#[derive(Clone, Debug, Error)]
pub enum StateError {
    /// Another writer stored a newer version first (a partition moved mid-write).
    #[error("user {user} was written by someone else: expected version {expected}")]
    Conflict { user: String, expected: u64 },

    #[error("stored state of user {user} cannot be read: {reason}")]
    Corrupt { user: String, reason: String },

    #[error("the state store is unavailable: {0}")]
    Unavailable(String),

    /// A service the effects of a batch are handed to (the gateway, the scheduler, the event
    /// log) did not take them. Told apart from the state store so an operator looks at the
    /// right process; the partition retries the batch until the service is back.
    #[error("the {service} is unavailable: {reason}")]
    Downstream {
        service: &'static str,
        reason: String,
    },

    /// The partition's lease was taken over since this writer acquired it (its fencing token
    /// is older than the current one): the write is refused and this writer must stop.
    #[error("partition lease moved on: token {held} is stale (current {current})")]
    Fenced { held: u64, current: String },

    /// The actor system is shutting down.
    #[error("user-state is stopping")]
    Stopping,

    #[error("user {0} not found")]
    NotFound(String),
}

impl From<StateError> for tonic::Status {
    fn from(e: StateError) -> Self {
        match &e {
            StateError::Conflict { .. } => tonic::Status::aborted(e.to_string()),
            StateError::Fenced { .. } => tonic::Status::failed_precondition(e.to_string()),
            StateError::Corrupt { .. } => tonic::Status::data_loss(e.to_string()),
            // The caller may retry once the other service is back, as after a store outage.
            StateError::Unavailable(_) | StateError::Downstream { .. } | StateError::Stopping => {
                tonic::Status::unavailable(e.to_string())
            }
            StateError::NotFound(_) => tonic::Status::not_found(e.to_string()),
        }
    }
}

impl From<actix::MailboxError> for StateError {
    fn from(_: actix::MailboxError) -> Self {
        StateError::Stopping
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_downstream_outage_names_the_service_not_the_store() {
        let e = StateError::Downstream {
            service: "gateway",
            reason: "Send: tcp connect error".into(),
        };
        assert_eq!(
            e.to_string(),
            "the gateway is unavailable: Send: tcp connect error"
        );

        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "the gateway is unavailable: Send: tcp connect error"
        );
    }
}
