//! A small OTLP/gRPC collector for tests: it accepts traces and metrics on a loopback port
//! and keeps them in memory for assertions.
//!
//! It runs on a thread and runtime of its own, so a test may block on
//! [`crate::TelemetryGuard::force_flush`] (which waits for the collector's answer) from any
//! context without deadlocking.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use tokio::sync::oneshot;

use crate::error::Result;

/// One received span, with ids in lower-case hex as W3C writes them.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectedSpan {
    pub service_name: Option<String>,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    /// OTLP span kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    pub attributes: BTreeMap<String, String>,
    /// `(trace_id, span_id)` of each linked span.
    pub links: Vec<(String, String)>,
}

/// One received metric with the attribute sets of its data points.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectedMetric {
    pub service_name: Option<String>,
    pub name: String,
    pub unit: String,
    pub points: Vec<BTreeMap<String, String>>,
}

#[derive(Default)]
struct Received {
    spans: Vec<CollectedSpan>,
    metrics: Vec<CollectedMetric>,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Received>,
    arrived: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running collector; it stops when dropped.
pub struct Collector {
    endpoint: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    /// Starts a collector on `127.0.0.1` and a free port.
    pub fn start() -> Result<Collector> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel::<()>();

        let service = Sink(shared.clone());
        let thread = std::thread::Builder::new()
            .name("otlp-collector".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let incoming = tonic::transport::server::TcpIncoming::from(listener);
                    let serve = tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(service.clone()))
                        .add_service(MetricsServiceServer::new(service))
                        .serve_with_incoming(incoming);
                    // No graceful drain: exporters keep their connections open, and a test
                    // must be able to drop the collector before the pipelines that feed it.
                    // Leaving `block_on` drops the runtime, which ends every connection task.
                    tokio::select! {
                        _ = serve => {}
                        _ = stopped => {}
                    }
                });
            })?;

        Ok(Collector {
            endpoint,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`, for `TelemetryConfig::traces_endpoint`/`metrics_endpoint`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.shared.lock().spans.clone()
    }

    /// Every metric received so far (one entry per metric per export).
    pub fn metrics(&self) -> Vec<CollectedMetric> {
        self.shared.lock().metrics.clone()
    }

    /// Waits until `done` holds for the spans received, checking after each arrival, and
    /// returns them; gives up after about `patience` and returns what arrived.
    pub fn wait_for_spans(
        &self,
        patience: Duration,
        done: impl Fn(&[CollectedSpan]) -> bool,
    ) -> Vec<CollectedSpan> {
        self.wait(patience, |r| done(&r.spans)).spans
    }

    /// Like [`Collector::wait_for_spans`], for metrics.
    pub fn wait_for_metrics(
        &self,
        patience: Duration,
        done: impl Fn(&[CollectedMetric]) -> bool,
    ) -> Vec<CollectedMetric> {
        self.wait(patience, |r| done(&r.metrics)).metrics
    }

    fn wait(&self, patience: Duration, done: impl Fn(&Received) -> bool) -> Received {
        // Counted steps rather than a deadline: the crate keeps wall-clock reads out.
        let step = Duration::from_millis(20);
        let steps = (patience.as_millis() / step.as_millis()).max(1);
        let mut received = self.shared.lock();
        for _ in 0..steps {
            if done(&received) {
                break;
            }
            received = match self.shared.arrived.wait_timeout(received, step) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        Received {
            spans: received.spans.clone(),
            metrics: received.metrics.clone(),
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Clone)]
struct Sink(Arc<Shared>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> std::result::Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| attribute(&r.attributes, "service.name"));
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(CollectedSpan {
                        service_name: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: (!span.parent_span_id.is_empty())
                            .then(|| hex(&span.parent_span_id)),
                        kind: span.kind,
                        attributes: attributes(&span.attributes),
                        links: span
                            .links
                            .iter()
                            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                            .collect(),
                    });
                }
            }
        }
        self.0.lock().spans.extend(spans);
        self.0.arrived.notify_all();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> std::result::Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut metrics = Vec::new();
        for resource_metrics in request.into_inner().resource_metrics {
            let service = resource_metrics
                .resource
                .as_ref()
                .and_then(|r| attribute(&r.attributes, "service.name"));
            for scope in resource_metrics.scope_metrics {
                for metric in scope.metrics {
                    metrics.push(CollectedMetric {
                        service_name: service.clone(),
                        points: point_attributes(metric.data.as_ref()),
                        name: metric.name,
                        unit: metric.unit,
                    });
                }
            }
        }
        self.0.lock().metrics.extend(metrics);
        self.0.arrived.notify_all();
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn point_attributes(data: Option<&Data>) -> Vec<BTreeMap<String, String>> {
    match data {
        Some(Data::Sum(sum)) => sum
            .data_points
            .iter()
            .map(|p| attributes(&p.attributes))
            .collect(),
        Some(Data::Gauge(g)) => g
            .data_points
            .iter()
            .map(|p| attributes(&p.attributes))
            .collect(),
        Some(Data::Histogram(h)) => h
            .data_points
            .iter()
            .map(|p| attributes(&p.attributes))
            .collect(),
        Some(Data::ExponentialHistogram(h)) => h
            .data_points
            .iter()
            .map(|p| attributes(&p.attributes))
            .collect(),
        Some(Data::Summary(s)) => s
            .data_points
            .iter()
            .map(|p| attributes(&p.attributes))
            .collect(),
        None => Vec::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

fn attribute(kvs: &[KeyValue], key: &str) -> Option<String> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(text)
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
