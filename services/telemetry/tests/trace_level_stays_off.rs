//! Installing the pipeline leaves `trace` and `debug` callsites off when nothing asks for
//! them. The HTTP/2, gRPC and Redis crates open `trace` spans on every frame and command; if
//! those were enabled, each would be built, entered and closed in the span registry on every
//! poll, only to be dropped by every layer's filter.
//!
//! A test binary of its own: the maximum level is process-wide, set by `init` once.

use std::sync::Arc;

use beckon_core::SystemClock;
use beckon_telemetry::TelemetryConfig;
use tracing::level_filters::LevelFilter;

#[test]
fn init_keeps_the_maximum_level_at_what_the_layers_want() {
    let mut config = TelemetryConfig::new("beckon-level");
    config.log_filter = "warn".to_owned();
    let _guard = beckon_telemetry::init(config, Arc::new(SystemClock)).expect("telemetry");

    // Logs want `warn`, traces `info`: nothing wants more.
    assert_eq!(LevelFilter::current(), LevelFilter::INFO);
    assert!(tracing::trace_span!("h2.frame").is_disabled());
    assert!(tracing::debug_span!("redis.command").is_disabled());
    assert!(!tracing::enabled!(tracing::Level::TRACE));

    // Spans at `info` are still made: traces are exported whatever the log level.
    assert!(!tracing::info_span!("ingest.track").is_disabled());
}
