//! Errors of the journey crate and their gRPC mapping.

use std::fmt;

use thiserror::Error;

/// A problem in a spec, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// Path of the offending field, e.g. `steps[1].wait_for.timeout`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every error, one a line after their count: what `beckon lint` prints, so each way of
/// loading specs reports the same problems.
pub fn list(errors: &[SpecError]) -> String {
    let mut text = format!("{} error(s) in specs:", errors.len());
    for e in errors {
        text.push('\n');
        text.push_str(&e.to_string());
    }
    text
}

#[derive(Debug, Error)]
pub enum JourneyError {
    #[error("{}", list(.0))]
    Invalid(Vec<SpecError>),

    #[error("cannot read {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("journey {0} is not defined")]
    NotFound(String),
}

impl From<JourneyError> for tonic::Status {
    fn from(e: JourneyError) -> Self {
        match &e {
            JourneyError::Invalid(_) => tonic::Status::invalid_argument(e.to_string()),
            JourneyError::Io { .. } => tonic::Status::internal(e.to_string()),
            JourneyError::NotFound(_) => tonic::Status::not_found(e.to_string()),
        }
    }
}
