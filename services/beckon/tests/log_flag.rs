//! `--log` sets the log filter of a service as `BECKON_LOG` does, and wins over it; at
//! `info`, a start says what telemetry is exported only when something is.

mod support;

use beckon_telemetry::testing::Collector;
use support::Served;

#[test]
fn the_log_flag_quiets_a_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quiet = dir.path().join("quiet.log");
    let chatty = dir.path().join("chatty.log");

    // Served sets BECKON_LOG=info; the flag overrides it.
    let mut served = Served::start_with("all", &["--log", "error"], &[], Some(&quiet));
    assert!(served.terminate().success());
    let mut served = Served::start_with("all", &[], &[], Some(&chatty));
    assert!(served.terminate().success());

    let quiet = std::fs::read_to_string(&quiet).expect("read log");
    let chatty = std::fs::read_to_string(&chatty).expect("read log");
    assert!(!quiet.contains("INFO"), "{quiet}");
    assert!(
        chatty.contains("INFO"),
        "without the flag the environment's info applies"
    );
}

/// The lines of a `serve all` run's log, the process stopped as an operator stops it.
fn log_of(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("serve.log");
    let mut served = Served::start_with("all", args, env, Some(&log));
    assert!(served.terminate().success());
    std::fs::read_to_string(&log).expect("read log")
}

#[test]
fn telemetry_is_announced_at_info_only_when_it_is_exported() {
    // Nothing exported: nothing said about OpenTelemetry at `info`, one line at `debug`.
    let quiet = log_of(&[], &[]);
    assert!(quiet.contains("INFO"), "{quiet}");
    let otel: Vec<&str> = quiet
        .lines()
        .filter(|l| l.to_lowercase().contains("opentelemetry") || l.contains("OTLP"))
        .collect();
    assert!(otel.is_empty(), "{otel:?}");
    let debug = log_of(&["--log", "debug"], &[]);
    let said: Vec<&str> = debug
        .lines()
        .filter(|l| l.contains("OpenTelemetry") || l.contains("opentelemetry:"))
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("DEBUG") && said[0].contains("nothing is exported"));

    // Exported to a collector: one `info` line naming where.
    let collector = Collector::start().expect("collector");
    let exported = log_of(
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())],
    );
    let said: Vec<&str> = exported
        .lines()
        .filter(|l| l.contains("OTLP") || l.contains("opentelemetry:"))
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    let endpoint = format!("traces.endpoint={}", collector.endpoint());
    assert!(
        said[0].contains(" INFO ") && said[0].contains(&endpoint),
        "{}",
        said[0]
    );
}
