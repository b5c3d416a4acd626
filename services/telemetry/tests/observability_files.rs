//! The dashboard and alert rules in `deploy/observability/` parse, use only metrics the
//! services really export, and every alert has a runbook.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use beckon_core::{Ts, VirtualClock};
use beckon_telemetry::TelemetryConfig;
use serde_json::Value;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Metric names (`beckon_*`, `rpc_server_*`) mentioned in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.starts_with("beckon_") || t.starts_with("rpc_server_"))
        .map(str::to_owned)
        .collect()
}

/// Every sample name on the `/metrics` page after each instrument recorded once.
fn exported_names() -> BTreeSet<String> {
    let clock = Arc::new(VirtualClock::new(Ts(0)));
    let guard =
        beckon_telemetry::build(TelemetryConfig::new("beckon-files"), clock).expect("telemetry");
    support::record_everything(&guard.metrics());
    let text = guard.metrics_endpoint().render().expect("render");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn dashboard_exprs() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&read("deploy/observability/beckon-dashboard.json")).expect("json");
    assert_eq!(dashboard["uid"], "beckon-overview");
    let panels = dashboard["panels"].as_array().expect("panels");
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("expr").to_owned())
        .collect();
    assert!(exprs.len() >= 12, "{exprs:#?}");
    exprs
}

/// `(alert name, expression, runbook_url)` of every rule.
fn alert_rules() -> Vec<(String, String, String)> {
    let rules: Value =
        serde_norway::from_str(&read("deploy/observability/beckon-alerts.yaml")).expect("yaml");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            let field = |v: &Value| v.as_str().expect("string field").to_owned();
            (
                field(&r["alert"]),
                field(&r["expr"]),
                field(&r["annotations"]["runbook_url"]),
            )
        })
        .collect()
}

#[test]
fn dashboard_and_alerts_use_exported_metrics() {
    let exported = exported_names();
    let mut used = BTreeSet::new();
    for expr in dashboard_exprs() {
        used.extend(metric_names(&expr));
    }
    for (_, expr, _) in alert_rules() {
        used.extend(metric_names(&expr));
    }
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "not exported: {unknown:?}\nexported: {exported:#?}"
    );
    for must in [
        "rpc_server_duration_milliseconds_bucket",
        "beckon_log_lag",
        "beckon_timers_pending",
        "beckon_timer_lateness_milliseconds_bucket",
        "beckon_deliveries_total",
        "beckon_circuit_state",
        "beckon_partitions_unowned",
        "beckon_events_applied_total",
        "beckon_events_rejected_total",
        "beckon_events_duplicates_total",
        "beckon_actors_live",
        "beckon_users_hibernated",
        "beckon_segment_entries_total",
        "beckon_segment_exits_total",
        "beckon_journey_entries_total",
        "beckon_journey_exits_total",
        "beckon_journey_conversions_total",
        "beckon_provider_duration_milliseconds_bucket",
    ] {
        assert!(used.contains(must), "{must} is on no panel or rule");
    }
}

#[test]
fn every_alert_has_a_runbook() {
    let runbooks = read("docs/runbooks.md");
    let alerts = alert_rules();
    let names: Vec<&str> = alerts.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "BeckonLogLagGrowing",
            "BeckonTimerLatenessHigh",
            "BeckonDeliveryFailureRatioHigh",
            "BeckonPartitionsUnowned",
            "BeckonUserStateAbsent",
            "BeckonCircuitOpen",
            "BeckonEventsRejectedHigh",
        ]
    );
    for (name, _, url) in &alerts {
        assert!(
            runbooks.contains(&format!("\n## {name}\n")),
            "no runbook for {name}"
        );
        assert_eq!(url, &format!("docs/runbooks.md#{}", name.to_lowercase()));
    }
}

/// Prometheus's own checker, where installed (`apt-get install prometheus`).
#[test]
fn promtool_accepts_the_rules() {
    let path = repo_file("deploy/observability/beckon-alerts.yaml");
    let Ok(out) = std::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
    else {
        eprintln!("promtool not installed; the rules were only parsed as YAML");
        return;
    };
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert!(report.contains("SUCCESS: 6 rules found"), "{report}");
}
