//! The admin endpoint: Prometheus text exposition on `/metrics`.
//!
//! A service mounts [`MetricsEndpoint::router`] on its admin port, merged with whatever else it
//! serves there, and runs it with [`serve_admin`] on a listener it bound itself (tests bind
//! port 0).

use std::future::Future;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder as _, TextEncoder};

use crate::error::{Result, TelemetryError};

/// Renders the metrics of one [`crate::TelemetryGuard`] in the Prometheus text format.
#[derive(Clone, Debug)]
pub struct MetricsEndpoint {
    registry: prometheus::Registry,
}

impl MetricsEndpoint {
    pub(crate) fn new(registry: prometheus::Registry) -> MetricsEndpoint {
        MetricsEndpoint { registry }
    }

    /// The current values, in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> Result<String> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
        String::from_utf8(out).map_err(|e| TelemetryError::Prometheus(e.to_string()))
    }

    /// A router answering `GET /metrics`.
    pub fn router(&self) -> Router {
        let endpoint = self.clone();
        Router::new().route("/metrics", get(move || scrape(endpoint.clone())))
    }
}

async fn scrape(endpoint: MetricsEndpoint) -> Response {
    match endpoint.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                TextEncoder::new().format_type().to_owned(),
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics scrape failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n").into_response()
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
