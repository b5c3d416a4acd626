//! Serving gRPC: health, reflection, and a clean stop.
//!
//! Every Beckon service answers the gRPC health protocol and server reflection, so `grpcurl`
//! and Kubernetes probes work against each of them. A server stops taking new calls when its
//! shutdown future resolves, finishes the calls in flight, then returns.
//!
//! Health has three kinds of name. Each service's own name (`beckon.v1.Ingest`) and the empty
//! name say whether the process can take calls now: SERVING unless it is draining or the
//! store its services need does not answer. `liveness` says whether the process answers at
//! all, for a probe that restarts it: a Redis outage is no reason to restart anything.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use beckon_proto::internal::InternalToken;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::service::Routes;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic::{Code, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The health name that stays SERVING for as long as the process answers.
pub const LIVENESS: &str = "liveness";

/// RPC metrics of this process, once telemetry is set up: one pipeline per process, shared by
/// every server it runs.
static METRICS: std::sync::OnceLock<beckon_telemetry::Metrics> = std::sync::OnceLock::new();

/// Makes every server started afterwards record RPC metrics and server spans.
pub fn record_rpcs_with(metrics: beckon_telemetry::Metrics) {
    let _ = METRICS.set(metrics);
}

/// Serves `routes` (plus health and reflection) on `listener` until `shutdown` resolves.
///
/// `names` are the fully qualified service names whose health is reported, e.g.
/// `beckon.v1.Ingest`; the overall health (empty name) follows them. `store`, when the
/// services need one, says whether it answers: while it says no, they report NOT_SERVING.
/// With `internal`, the calls only Beckon's services may make answer only requests that
/// carry that token (see [`InternalCalls`]).
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    names: &[&str],
    tls: Option<ServerTlsConfig>,
    store: Option<watch::Receiver<bool>>,
    internal: Option<InternalToken>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    // A certificate that does not load stops the process before it says it is listening.
    let builder = match tls {
        Some(tls) => tonic::transport::Server::builder()
            .tls_config(tls)
            .context("tls_cert, tls_key: not a usable certificate and key")?,
        None => tonic::transport::Server::builder(),
    };

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    let readiness = Arc::new(Readiness {
        reporter,
        names: names.iter().map(|s| s.to_string()).collect(),
        state: Mutex::new(ReadyState {
            store_answers: true,
            draining: false,
        }),
    });
    readiness.update(|_| {}).await;
    let following = store.map(|store| tokio::spawn(follow_store(readiness.clone(), store)));

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
    let draining = drain_first(readiness, async move {
        let _ = started.wait_for(|s| *s).await;
    });
    // Without TCP_NODELAY small answers and stream items wait for delayed acknowledgements
    // (tens of milliseconds); set it on every accepted connection.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let layer = match METRICS.get() {
        Some(m) => beckon_telemetry::GrpcServerLayer::new().with_metrics(m.clone()),
        None => beckon_telemetry::GrpcServerLayer::new(),
    };
    let server = builder
        .layer(layer)
        .layer(tower::util::MapResponseLayer::new(cut_short_is_invalid))
        .layer(InternalCallsLayer { token: internal })
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, draining);

    // Calls in flight get a bounded time to finish; a client that keeps an idle connection
    // open must not hold the process up forever.
    let deadline = async move {
        shutdown.await;
        let _ = tx.send(true);
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    let served = tokio::select! {
        r = server => r.map_err(anyhow::Error::from),
        _ = deadline => {
            tracing::warn!(addr = %local, "drain timed out; closing connections");
            Ok(())
        }
    };
    if let Some(following) = following {
        following.abort();
    }
    served?;
    tracing::info!(addr = %local, "gRPC server stopped");
    Ok(())
}

/// Makes the calls of [`beckon_proto::internal::INTERNAL_PATHS`] ask for the token.
#[derive(Clone)]
struct InternalCallsLayer {
    token: Option<InternalToken>,
}

impl<S> tower::Layer<S> for InternalCallsLayer {
    type Service = InternalCalls<S>;

    fn layer(&self, inner: S) -> InternalCalls<S> {
        InternalCalls {
            inner,
            token: self.token.clone(),
        }
    }
}

/// Answers an internal call that lacks the token (UNAUTHENTICATED) or carries another one
/// (PERMISSION_DENIED) itself, before any service reads the request; every other call goes
/// through untouched. The check sits in front of the routes rather than in each service, so
/// the same services run in `serve all` with no token between them, where their callers are
/// in the process and nothing crosses the network.
#[derive(Clone)]
pub struct InternalCalls<S> {
    inner: S,
    token: Option<InternalToken>,
}

impl<S, B> tower::Service<http::Request<B>> for InternalCalls<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = futures::future::Either<
        std::future::Ready<Result<http::Response<Body>, S::Error>>,
        S::Future,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(token) = &self.token
            && beckon_proto::internal::is_internal(request.uri().path())
        {
            let given = request
                .headers()
                .get(beckon_proto::internal::HEADER)
                .map(|v| v.as_bytes());
            if let Err(status) = token.check(given) {
                tracing::debug!(path = request.uri().path(), code = ?status.code(),
                    "internal call refused");
                return futures::future::Either::Left(std::future::ready(Ok(status.into_http())));
            }
        }
        futures::future::Either::Right(self.inner.call(request))
    }
}

/// What the health service says for the services' names and the empty name.
struct Readiness {
    reporter: HealthReporter,
    names: Vec<String>,
    state: Mutex<ReadyState>,
}

struct ReadyState {
    store_answers: bool,
    draining: bool,
}

impl Readiness {
    /// Applies `change` and reports the result. The lock is held while reporting, so a store
    /// that answers again right as the drain begins cannot put SERVING back after it.
    async fn update(&self, change: impl FnOnce(&mut ReadyState)) {
        let mut state = self.state.lock().await;
        change(&mut state);
        let status = if state.store_answers && !state.draining {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in self.names.iter().map(String::as_str).chain([""]) {
            self.reporter.set_service_status(name, status).await;
        }
    }
}

/// Reports each change of whether the store answers, until the sender goes.
async fn follow_store(readiness: Arc<Readiness>, mut store: watch::Receiver<bool>) {
    loop {
        let answers = *store.borrow_and_update();
        readiness.update(|s| s.store_answers = answers).await;
        if store.changed().await.is_err() {
            return;
        }
    }
}

/// tonic's words for a request whose last frame ended before the length its header gave.
const TONIC_CUT_SHORT: &str = "Unexpected EOF decoding stream.";

/// tonic's words for a unary request whose body held no message at all.
const TONIC_NO_MESSAGE: &str = "Missing request message.";

/// How prost's codec, which the health and reflection services keep, starts a decode error.
const PROST_UNDECODABLE: &str = "failed to decode Protobuf message";

/// The response, or, when tonic answered `INTERNAL` for bytes the client sent, the same
/// refusal as `INVALID_ARGUMENT`: a body that ended inside a message, a unary request with no
/// message, or (on the services whose codec is tonic's own, such as health) a message that
/// does not decode, whose answer keeps prost's words naming the field. The client is at fault,
/// not the server, and a client that retries `INTERNAL` would only send the same bytes again.
/// Beckon's own services answer undecodable messages so through their codec
/// (`beckon_proto::codec`).
fn cut_short_is_invalid(response: http::Response<Body>) -> http::Response<Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != Code::Internal {
        return response;
    }
    match status.message() {
        TONIC_CUT_SHORT => Status::invalid_argument(
            "the request ended inside a message: its body is shorter than the length its gRPC \
             frame header gives",
        )
        .into_http(),
        TONIC_NO_MESSAGE => {
            Status::invalid_argument("the request carried no message: its body is empty")
                .into_http()
        }
        words if words.starts_with(PROST_UNDECODABLE) => {
            Status::invalid_argument(words.to_string()).into_http()
        }
        _ => response,
    }
}

/// The server side of TLS, from a PEM certificate chain and key, when both are set. The files
/// are read here, at start, so a missing one is reported with the setting's name.
pub fn server_tls(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let cert = read_pem("tls_cert", cert, "CERTIFICATE")?;
    let key = read_pem("tls_key", key, "PRIVATE KEY")?;
    Ok(Some(
        ServerTlsConfig::new().identity(Identity::from_pem(cert, key)),
    ))
}

/// Reads the PEM file of `setting` and checks that it holds a block of the kind it is for
/// (`CERTIFICATE`, `PRIVATE KEY`): an empty, garbled or swapped file is named at start, not
/// found out at the first handshake as the peer's fault.
pub fn read_pem(setting: &str, path: &Path, kind: &str) -> anyhow::Result<Vec<u8>> {
    let pem =
        std::fs::read(path).with_context(|| format!("{setting}: reading {}", path.display()))?;
    let end = format!("{kind}-----");
    let holds = String::from_utf8_lossy(&pem)
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&end));
    if !holds {
        anyhow::bail!("{setting}: {} holds no PEM {kind}", path.display());
    }
    Ok(pem)
}

/// Refuses a peer URL that is not `http://` or `https://`: anything else would be taken as
/// plaintext, or fail only at the first call.
pub fn check_peer_url(url: &str) -> anyhow::Result<()> {
    let endpoint =
        Endpoint::from_shared(url.to_string()).map_err(|e| anyhow::anyhow!("`{url}`: {e}"))?;
    match endpoint.uri().scheme_str() {
        Some("http" | "https") => Ok(()),
        Some(other) => anyhow::bail!("`{url}`: the scheme must be http or https, not {other}"),
        None => anyhow::bail!("`{url}`: no scheme; write http://HOST:PORT or https://HOST:PORT"),
    }
}

/// An endpoint for a peer service. `https://` speaks TLS, and the peer's certificate must
/// chain to a public web root or to one of the authorities in the PEM file `ca`; `http://`
/// speaks plaintext. `setting` names the URL's setting in errors.
pub fn peer_endpoint(setting: &str, url: &str, ca: Option<&Path>) -> anyhow::Result<Endpoint> {
    check_peer_url(url).with_context(|| setting.to_string())?;
    let endpoint = Endpoint::from_shared(url.to_string())?;
    if endpoint.uri().scheme_str() != Some("https") {
        return Ok(endpoint);
    }

    let mut tls = ClientTlsConfig::new().with_webpki_roots();
    if let Some(ca) = ca {
        let pem = read_pem("tls_ca", ca, "CERTIFICATE")?;
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    endpoint
        .tls_config(tls)
        .with_context(|| format!("{setting}: TLS for `{url}`"))
}

/// How long a client command waits for its connection, and for the answer of each call (the
/// first message of a stream): a peer that accepts and never answers, or an address whose
/// packets are dropped, must end the command with an error rather than hang it.
pub const CLIENT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
pub const CLIENT_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The endpoint of a client command (`beckon user`, `beckon journeys`): a peer's, with the
/// command's timeouts. Services keep their own deadlines per call instead.
pub fn client_endpoint(setting: &str, url: &str, ca: Option<&Path>) -> anyhow::Result<Endpoint> {
    Ok(peer_endpoint(setting, url, ca)?
        .connect_timeout(CLIENT_CONNECT_TIMEOUT)
        .timeout(CLIENT_CALL_TIMEOUT))
}

/// How long calls in flight may take to finish once shutdown began.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reports NOT_SERVING as soon as shutdown begins, so load balancers stop sending new calls
/// while the ones in flight finish.
async fn drain_first(readiness: Arc<Readiness>, shutdown: impl Future<Output = ()>) {
    shutdown.await;
    tracing::info!("draining: reporting not serving");
    readiness.update(|s| s.draining = true).await;
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// the future is first polled: a service says `listening` before its server polls this, and a
/// SIGTERM sent right after that line must start a drain, not kill the process by default.
/// Call it within the runtime.
pub fn termination() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            // A handler that could not be installed leaves that signal's default in place.
            let terminated = async {
                match term {
                    Some(mut term) => {
                        term.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let interrupted = async {
                match interrupt {
                    Some(mut interrupt) => {
                        interrupt.recv().await;
                    }
                    None => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            };
            tokio::select! {
                _ = terminated => {},
                _ = interrupted => {},
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
