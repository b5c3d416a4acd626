//! Metrics reach an OTLP collector under their OpenTelemetry names, units and labels.

mod support;

use std::time::Duration;

use beckon_telemetry::testing::Collector;

#[test]
fn metrics_arrive_over_otlp() {
    let collector = Collector::start().expect("collector");
    let guard = support::telemetry("beckon-gateway", collector.endpoint());
    let metrics = guard.metrics();

    metrics.delivery("push", "fcm", "token_invalid");
    metrics.record_rpc("beckon.v1.Gateway", "Send", tonic::Code::Ok, 4.5);
    metrics.set_log_lag(5, 9);

    guard.force_flush().expect("flush");
    let received = collector.wait_for_metrics(Duration::from_secs(5), |m| {
        m.iter().any(|m| m.name == "beckon.deliveries")
    });
    let find = |name: &str| {
        received
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no {name} in {received:#?}"))
    };

    let deliveries = find("beckon.deliveries");
    assert_eq!(deliveries.service_name.as_deref(), Some("beckon-gateway"));
    let point = &deliveries.points[0];
    assert_eq!(point.get("channel").map(String::as_str), Some("push"));
    assert_eq!(point.get("provider").map(String::as_str), Some("fcm"));
    assert_eq!(
        point.get("outcome").map(String::as_str),
        Some("token_invalid")
    );

    let duration = find("rpc.server.duration");
    assert_eq!(duration.unit, "ms");
    let point = &duration.points[0];
    assert_eq!(
        point.get("rpc.service").map(String::as_str),
        Some("beckon.v1.Gateway")
    );
    assert_eq!(point.get("rpc.method").map(String::as_str), Some("Send"));
    assert_eq!(
        point.get("rpc.grpc.status_code").map(String::as_str),
        Some("0")
    );

    let lag = find("beckon.log.lag");
    assert_eq!(
        lag.points[0].get("partition").map(String::as_str),
        Some("5")
    );
}
