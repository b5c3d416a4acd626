//! Serving gRPC: health, reflection, and a clean stop.
//!
//! Every Beckon service answers the gRPC health protocol and server reflection, so `grpcurl`
//! and Kubernetes probes work against each of them. A server stops taking new calls when its
//! shutdown future resolves, finishes the calls in flight, then returns.

use std::future::Future;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// RPC metrics of this process, once telemetry is set up: one pipeline per process, shared by
/// every server it runs.
static METRICS: std::sync::OnceLock<beckon_telemetry::Metrics> = std::sync::OnceLock::new();

/// Makes every server started afterwards record RPC metrics and server spans.
pub fn record_rpcs_with(metrics: beckon_telemetry::Metrics) {
    let _ = METRICS.set(metrics);
}

/// Serves `routes` (plus health and reflection) on `listener` until `shutdown` resolves.
///
/// `names` are the fully qualified service names reported as serving, e.g.
/// `beckon.v1.Ingest`; the overall health (empty name) follows them.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    names: &[&str],
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in names {
        reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(beckon_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let routes = routes.add_service(health).add_service(reflection);
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, services = ?names, "serving gRPC");

    // Scripts and tests that start a service wait for this line (port 0 picks the port), so
    // it comes only when everything the service needs is connected.
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {local}")?;
        out.flush()?;
    }

    // The shutdown signal is shared: one copy starts the drain, the other bounds it.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut started = rx.clone();
    let draining = drain_first(
        reporter,
        names.iter().map(|s| s.to_string()).collect(),
        async move {
            let _ = started.wait_for(|s| *s).await;
        },
    );
    // Without TCP_NODELAY small answers and stream items wait for delayed acknowledgements
    // (tens of milliseconds); set it on every accepted connection.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let layer = match METRICS.get() {
        Some(m) => beckon_telemetry::GrpcServerLayer::new().with_metrics(m.clone()),
        None => beckon_telemetry::GrpcServerLayer::new(),
    };
    let server = tonic::transport::Server::builder()
        .layer(layer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, draining);

    // Calls in flight get a bounded time to finish; a client that keeps an idle connection
    // open must not hold the process up forever.
    let deadline = async move {
        shutdown.await;
        let _ = tx.send(true);
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        r = server => r?,
        _ = deadline => tracing::warn!(addr = %local, "drain timed out; closing connections"),
    }
    tracing::info!(addr = %local, "gRPC server stopped");
    Ok(())
}

/// How long calls in flight may take to finish once shutdown began.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reports NOT_SERVING as soon as shutdown begins, so load balancers stop sending new calls
/// while the ones in flight finish.
async fn drain_first(
    reporter: HealthReporter,
    names: Vec<String>,
    shutdown: impl Future<Output = ()>,
) {
    shutdown.await;
    tracing::info!("draining: reporting not serving");
    for name in &names {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
