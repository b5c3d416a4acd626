//! A call that enters service A and goes on to service B arrives at the collector as one
//! trace: A's server span is the child of the caller's `traceparent`, and B's server span is
//! a child of the span in A that made the call.

mod support;

use std::time::Duration;

use beckon_telemetry::TraceInterceptor;
use beckon_telemetry::testing::{CollectedSpan, Collector};
use tonic::codegen::BoxStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tracing::Instrument as _;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Service A: answers a health check by asking service B.
struct Relay {
    next: String,
}

#[tonic::async_trait]
impl Health for Relay {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let next = self.next.clone();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(next)
                .map_err(|e| Status::internal(e.to_string()))?
                .connect()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let mut client = HealthClient::with_interceptor(channel, TraceInterceptor);
            client.check(HealthCheckRequest::default()).await
        }
        .instrument(tracing::info_span!("relay.forward"))
        .await
    }

    type WatchStream = BoxStream<HealthCheckResponse>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not needed here"))
    }
}

fn find<'a>(spans: &'a [CollectedSpan], service: &str, name: &str) -> &'a CollectedSpan {
    spans
        .iter()
        .find(|s| s.service_name.as_deref() == Some(service) && s.name == name)
        .unwrap_or_else(|| panic!("no span {name} from {service} in {spans:#?}"))
}

#[tokio::test]
async fn one_trace_spans_two_services() {
    let collector = Collector::start().expect("collector");
    let telemetry_a = support::telemetry("beckon-a", collector.endpoint());
    let telemetry_b = support::telemetry("beckon-b", collector.endpoint());

    let (_reporter, health) = tonic_health::server::health_reporter();
    let b = support::serve(&telemetry_b, health);
    let a = support::serve(&telemetry_a, HealthServer::new(Relay { next: b.uri() }));

    let channel = tonic::transport::Endpoint::from_shared(a.uri())
        .expect("uri")
        .connect()
        .await
        .expect("connect to A");
    let mut client = HealthClient::new(channel);
    let mut request = Request::new(HealthCheckRequest::default());
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(traceparent.as_str()).expect("metadata"),
    );
    let answer = client.check(request).await.expect("check through A");
    assert_eq!(answer.into_inner().status, 1, "B answers SERVING");

    // Spans end as the servers finish their responses; flush until all three are exported.
    let spans = tokio::task::spawn_blocking(move || {
        let complete = |spans: &[CollectedSpan]| {
            let names = ["Check", "relay.forward"];
            spans
                .iter()
                .filter(|s| names.iter().any(|n| s.name.ends_with(n)))
                .count()
                >= 3
        };
        for _ in 0..50 {
            telemetry_a.force_flush().expect("flush A");
            telemetry_b.force_flush().expect("flush B");
            if complete(&collector.spans()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        collector.wait_for_spans(Duration::from_secs(1), complete)
    })
    .await
    .expect("flush task");

    let server_a = find(&spans, "beckon-a", "grpc.health.v1.Health/Check");
    let relay = find(&spans, "beckon-a", "relay.forward");
    let server_b = find(&spans, "beckon-b", "grpc.health.v1.Health/Check");

    for span in [server_a, relay, server_b] {
        assert_eq!(span.trace_id, TRACE_ID, "{span:#?}");
    }
    assert_eq!(server_a.parent_span_id.as_deref(), Some(CALLER_SPAN));
    assert_eq!(
        relay.parent_span_id.as_deref(),
        Some(server_a.span_id.as_str())
    );
    assert_eq!(
        server_b.parent_span_id.as_deref(),
        Some(relay.span_id.as_str())
    );

    for server in [server_a, server_b] {
        assert_eq!(server.kind, 2, "server kind");
        assert_eq!(
            server.attributes.get("rpc.system").map(String::as_str),
            Some("grpc")
        );
        assert_eq!(
            server.attributes.get("rpc.service").map(String::as_str),
            Some("grpc.health.v1.Health")
        );
        assert_eq!(
            server.attributes.get("rpc.method").map(String::as_str),
            Some("Check")
        );
        assert_eq!(
            server
                .attributes
                .get("rpc.grpc.status_code")
                .map(String::as_str),
            Some("0")
        );
    }

    drop((a, b));
}
