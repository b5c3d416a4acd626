//! A tower layer for tonic servers: one server span per call, parented to the caller's W3C
//! context, plus the `rpc.server.*` metrics.
//!
//! ```ignore
//! tonic::transport::Server::builder()
//!     .layer(GrpcServerLayer::new().with_metrics(guard.metrics()))
//!     .add_service(IngestServer::new(handler))
//!     .serve_with_incoming_shutdown(incoming, shutdown)
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::metrics::Metrics;
use crate::propagation::extract_headers;

/// Adds a server span and RPC metrics to every call of the wrapped service.
#[derive(Clone, Debug, Default)]
pub struct GrpcServerLayer {
    /// Shared, as every call takes a handle: one count instead of one per instrument.
    metrics: Option<Arc<Metrics>>,
}

impl GrpcServerLayer {
    /// Spans only.
    pub fn new() -> GrpcServerLayer {
        GrpcServerLayer::default()
    }

    /// Spans, and `rpc.server.duration`, `rpc.server.requests` and `rpc.server.errors`.
    pub fn with_metrics(mut self, metrics: Metrics) -> GrpcServerLayer {
        self.metrics = Some(Arc::new(metrics));
        self
    }
}

impl<S> Layer<S> for GrpcServerLayer {
    type Service = GrpcServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`GrpcServerLayer`] wraps around a tonic router or service.
#[derive(Clone, Debug)]
pub struct GrpcServerService<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, R> Service<http::Request<B>> for GrpcServerService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        // The incoming context is the parent of record. This only fails without the
        // OpenTelemetry layer, where there is no trace to join anyway.
        let _ = span.set_parent(extract_headers(request.headers()));

        // The service that was made ready is the one to call; a fresh clone takes its place.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let metrics = self.metrics.clone();
        let recorded = span.clone();

        // RPC durations need sub-millisecond, monotonic time; the injected Clock has
        // millisecond wall (or virtual) time and is meant for domain time, not latency.
        #[allow(clippy::disallowed_methods)]
        let started = std::time::Instant::now();
        let call = span.in_scope(|| inner.call(request));

        Box::pin(
            async move {
                let result = call.await;
                let code = match &result {
                    Ok(response) => status_of(response.headers()),
                    Err(_) => tonic::Code::Unknown,
                };
                recorded.record("rpc.grpc.status_code", code as i64);
                if is_server_error(code) {
                    recorded.record("otel.status_code", "ERROR");
                }
                if let Some(metrics) = metrics {
                    let ms = started.elapsed().as_secs_f64() * 1_000.0;
                    // Unknown paths (scanners, typos) all answer Unimplemented; folding their
                    // names keeps one series instead of one per probe.
                    let (service, method) = if code == tonic::Code::Unimplemented {
                        ("_OTHER", "_OTHER")
                    } else {
                        (service.as_str(), method.as_str())
                    };
                    metrics.record_rpc(service, method, code, ms);
                }
                result
            }
            .instrument(span),
        )
    }
}

/// `/pkg.Service/Method` into its two parts; anything else is reported as it came.
fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => {
            (service.to_owned(), method.to_owned())
        }
        _ => (trimmed.to_owned(), String::new()),
    }
}

/// The status of a unary call. An error is sent "trailers-only", so its `grpc-status` is in
/// the response headers; a success puts it in trailers we do not wait for, and is `Ok` here.
/// A stream that fails after its headers were sent is therefore counted as `Ok`.
fn status_of(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .map_or(tonic::Code::Ok, |v| tonic::Code::from_bytes(v.as_bytes()))
}

/// Codes that mean the server failed, as OpenTelemetry's RPC conventions count them for
/// servers. A caller's mistake (`InvalidArgument`, `NotFound`, ...) is not a server error.
pub(crate) fn is_server_error(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            split_path("/beckon.v1.Ingest/Track"),
            ("beckon.v1.Ingest".to_owned(), "Track".to_owned())
        );
        assert_eq!(split_path("/weird"), ("weird".to_owned(), String::new()));
    }

    #[test]
    fn statuses() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_of(&headers), tonic::Code::Ok);
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(status_of(&headers), tonic::Code::Unavailable);
        assert!(is_server_error(tonic::Code::Unavailable));
        assert!(!is_server_error(tonic::Code::InvalidArgument));
    }
}
