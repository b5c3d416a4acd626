//! Log lines written inside a span carry its trace and span ids, in both formats; their
//! timestamps come from the injected clock.

mod support;

use std::sync::Arc;

use beckon_core::{Ts, VirtualClock};
use beckon_telemetry::{LogFormat, TelemetryConfig, build_with_writer};
use opentelemetry::trace::TraceContextExt as _;
use serde_json::Value;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// 2023-11-14T22:13:20Z.
const NOW: Ts = Ts(1_700_000_000_000);

fn capture(format: LogFormat) -> (beckon_telemetry::TelemetryGuard, support::Captured) {
    let mut config = TelemetryConfig::new("beckon-logs");
    config.log_format = format;
    config.log_filter = "debug".to_owned();
    let out = support::Captured::default();
    let clock = Arc::new(VirtualClock::new(NOW));
    let guard = build_with_writer(config, clock, out.clone()).expect("telemetry");
    (guard, out)
}

fn lines(out: &support::Captured) -> Vec<String> {
    out.text().lines().map(str::to_owned).collect()
}

/// Logs one line inside a span and one outside; returns the span's (trace id, span id).
fn log_in_and_out_of_span() -> (String, String) {
    let span = tracing::info_span!("apply", user_id = "u-1");
    let ids = {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        (sc.trace_id().to_string(), sc.span_id().to_string())
    };
    span.in_scope(|| tracing::info!(count = 3, ok = true, "applied"));
    tracing::debug!("outside any span");
    ids
}

#[test]
fn json_lines_carry_ids_fields_and_clock_time() {
    let (guard, out) = capture(LogFormat::Json);
    let (trace_id, span_id) =
        tracing::dispatcher::with_default(guard.dispatch(), log_in_and_out_of_span);

    let lines = lines(&out);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let inside: Value = serde_json::from_str(&lines[0]).expect("json line");
    assert_eq!(inside["message"], "applied");
    assert_eq!(inside["level"], "INFO");
    assert_eq!(inside["timestamp"], "2023-11-14T22:13:20.000Z");
    assert_eq!(inside["fields"]["count"], 3);
    assert_eq!(inside["fields"]["ok"], true);
    assert_eq!(inside["span"]["name"], "apply");
    assert_eq!(inside["span"]["user_id"], "u-1");
    assert_eq!(inside["trace_id"], trace_id.as_str());
    assert_eq!(inside["span_id"], span_id.as_str());
    assert_eq!(trace_id.len(), 32);

    let outside: Value = serde_json::from_str(&lines[1]).expect("json line");
    assert_eq!(outside["message"], "outside any span");
    assert!(outside.get("trace_id").is_none(), "{outside}");
}

#[test]
fn text_lines_end_with_ids() {
    let (guard, out) = capture(LogFormat::Text);
    let (trace_id, span_id) =
        tracing::dispatcher::with_default(guard.dispatch(), log_in_and_out_of_span);

    let lines = lines(&out);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].starts_with("2023-11-14T22:13:20.000Z  INFO"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("count=3"), "{}", lines[0]);
    assert!(
        lines[0].ends_with(&format!(" trace_id={trace_id} span_id={span_id}")),
        "{}",
        lines[0]
    );
    assert!(!lines[1].contains("trace_id="), "{}", lines[1]);
}
