//! Telemetry for every Beckon service: structured logs, OpenTelemetry traces and metrics,
//! W3C trace context propagation, and a Prometheus scrape endpoint.
//!
//! Wiring a service takes four calls:
//!
//! ```ignore
//! let config = TelemetryConfig::from_env("beckon-ingest")?;
//! let guard = beckon_telemetry::init(config, Arc::new(SystemClock))?;
//! let metrics = guard.metrics();
//!
//! // gRPC: a server span per call, parented to the caller's context, plus RPC metrics.
//! Server::builder().layer(GrpcServerLayer::new().with_metrics(metrics.clone()))...;
//! // Clients send the current context along.
//! let client = UserStateClient::with_interceptor(channel, TraceInterceptor);
//! // The admin port.
//! tokio::spawn(serve_admin(admin_listener, guard.metrics_endpoint().router(), shutdown));
//! ```
//!
//! What leaves the process is decided by the standard `OTEL_*` variables (see [`config`]).
//! Without an OTLP endpoint nothing is exported and no connection is attempted; spans still
//! get ids, so log lines and downstream calls carry trace context.
//!
//! Logging rules: `info` is for lifecycle events (started, partition acquired, draining),
//! per-event detail is `debug`; fields, not formatted strings; repeated errors go through a
//! [`LogRateLimiter`]; secrets and message bodies are never logged (see [`redact`]).

pub mod admin;
pub mod config;
pub mod error;
mod grpc;
mod guard;
mod logging;
pub mod metrics;
pub mod propagation;
pub mod ratelimit;
pub mod redact;
#[cfg(feature = "testing")]
pub mod testing;

pub use admin::{MetricsEndpoint, serve_admin};
pub use config::{LogFormat, SamplerConfig, TelemetryConfig};
pub use error::{Result, TelemetryError};
pub use grpc::{GrpcServerLayer, GrpcServerService};
pub use guard::{TelemetryGuard, build, build_with_writer, init, user_ids_exported};
pub use metrics::{CircuitState, Metrics};
pub use propagation::{
    TraceInterceptor, current_trace_string, extract_metadata, from_trace_string, inject_metadata,
    link_to_trace_string, linked_span, set_parent_from_trace_string, to_trace_string,
};
pub use ratelimit::{Admit, LogRateLimiter};
pub use redact::Redacted;
