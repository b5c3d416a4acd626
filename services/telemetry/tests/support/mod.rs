//! Shared by the integration tests: a gRPC service running on a thread of its own, with its
//! own telemetry pipeline installed as that thread's default, so that two "services" in one
//! test process keep their own `service.name`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use beckon_core::SystemClock;
use beckon_telemetry::{GrpcServerLayer, TelemetryConfig, TelemetryGuard};
use tokio::sync::oneshot;
use tonic::server::NamedService;

pub fn config(service: &str, collector: &str) -> TelemetryConfig {
    let mut config = TelemetryConfig::new(service);
    config.log_filter = "info".to_owned();
    config.traces_endpoint = Some(collector.to_owned());
    config.metrics_endpoint = Some(collector.to_owned());
    config
}

pub fn telemetry(service: &str, collector: &str) -> TelemetryGuard {
    beckon_telemetry::build(config(service, collector), Arc::new(SystemClock)).expect("telemetry")
}

/// A tonic server on 127.0.0.1 and a free port; it stops when dropped.
pub struct RunningService {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RunningService {
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `service` behind [`GrpcServerLayer`] under `guard`'s dispatcher.
pub fn serve<S>(guard: &TelemetryGuard, service: S) -> RunningService
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let dispatch = guard.dispatch().clone();
    let layer = GrpcServerLayer::new().with_metrics(guard.metrics());
    let (stop, stopped) = oneshot::channel::<()>();

    let thread = std::thread::spawn(move || {
        // A current-thread runtime runs every task on this thread, so all of them see this
        // thread's default dispatcher.
        let _default = tracing::dispatcher::set_default(&dispatch);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let serve = tonic::transport::Server::builder()
                .layer(layer)
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
            // Stopping drops the runtime and with it every open connection, so a client that
            // is still alive cannot hold the test up.
            tokio::select! {
                served = serve => served.expect("serve"),
                _ = stopped => {}
            }
        });
    });
    RunningService {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// Log output captured in memory.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        let bytes = self.0.lock().expect("log buffer").clone();
        String::from_utf8(bytes).expect("utf-8 logs")
    }
}

pub struct CapturedWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = CapturedWriter;

    fn make_writer(&'a self) -> CapturedWriter {
        CapturedWriter(self.0.clone())
    }
}

/// Records at least one value on every Beckon instrument.
pub fn record_everything(metrics: &beckon_telemetry::Metrics) {
    metrics.record_rpc("beckon.v1.Ingest", "Track", tonic::Code::Ok, 3.0);
    metrics.record_rpc("beckon.v1.Ingest", "Track", tonic::Code::Unavailable, 12.0);
    metrics.set_log_lag(3, 42);
    metrics.set_log_lag(7, 0);
    metrics.set_partitions_unowned(1);
    metrics.events_applied(1);
    metrics.event_rejected("invalid");
    metrics.event_duplicate();
    metrics.actor_started();
    metrics.actor_started();
    metrics.actor_stopped();
    metrics.actor_activated();
    metrics.set_users_hibernated(3, 1_200);
    metrics.segment_entered("cart_abandoners");
    metrics.segment_exited("cart_abandoners");
    metrics.journey_entered("cart_reminder");
    metrics.journey_exited("cart_reminder", "goal");
    metrics.journey_converted("cart_reminder");
    metrics.set_timers_pending(3, 17);
    metrics.record_timer_lateness(beckon_core::Ts(1_000), beckon_core::Ts(1_250));
    metrics.delivery("push", "apns", "delivered");
    metrics.delivery("email", "smtp", "failed");
    metrics.record_provider_call("push", "apns", 80.0);
    metrics.set_circuit_state("push", "apns", beckon_telemetry::CircuitState::Open);
}
