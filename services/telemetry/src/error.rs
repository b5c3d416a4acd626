//! The one error type of this crate.

use thiserror::Error;

/// What can go wrong while setting telemetry up or serving the admin endpoint.
///
/// Recording a metric or a span never fails: those paths swallow problems on purpose, since
/// telemetry must not take a request down with it.
#[derive(Debug, Error)]
pub enum TelemetryError {
    /// A setting (usually from an `OTEL_*` or `BECKON_*` variable) has a value we cannot use.
    #[error("invalid telemetry setting {name}: {reason}")]
    Config { name: &'static str, reason: String },

    /// The log filter did not parse.
    #[error("invalid log filter {filter:?}: {reason}")]
    LogFilter { filter: String, reason: String },

    /// An OTLP exporter could not be built (bad endpoint, unsupported scheme).
    #[error("cannot build the OTLP {signal} exporter: {reason}")]
    Exporter {
        signal: &'static str,
        reason: String,
    },

    /// The Prometheus bridge could not be built or encoded.
    #[error("prometheus: {0}")]
    Prometheus(String),

    /// A global (the subscriber) was already installed by someone else.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,

    /// Flushing or shutting an OpenTelemetry provider down failed.
    #[error("telemetry {action} failed: {reason}")]
    Sdk {
        action: &'static str,
        reason: String,
    },

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, TelemetryError>;
