//! `beckon serve`: each service alone, or all of them in one process.

pub mod config;
pub mod gateway;
pub mod redis_target;
pub mod userstate;

use std::sync::Arc;

use anyhow::Context as _;
use beckon_core::Clock;
use beckon_gateway::grpc::GatewayService;
use beckon_gateway::inbox::InboxStore;
use beckon_gateway::{DeviceRegistry, EventSink, Recipients};
use beckon_ingest::endpoint::IngestEndpoint;
use beckon_ingest::grpc::IngestService;
use beckon_ingest::log::{EventLog, LogConfig, MemoryLog, RedisLog};
use beckon_journey::{CurrentEngine, Engine};
use beckon_journey_service::{
    DefinitionError, DefinitionStore, JourneysService, MemoryDefinitions, RedisDefinitions,
};
use beckon_proto::v1::scheduler_server::SchedulerServer;
use beckon_scheduler::firing::{self, FiredSink, FiringConfig};
use beckon_scheduler::grpc::SchedulerService;
use beckon_scheduler::{AsyncTimerStore, MemoryAsyncTimers, SchedulerError};
use beckon_user_state::grpc::UserStateService;
use beckon_user_state::{MemoryStore, Outlet, StateStore, TimerSink};
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tonic::service::Routes;

pub use config::{ServeArgs, Settings};
use redis_target::{RedisConn, RedisTarget};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    /// Every service in one process, on one port.
    All,
    Ingest,
    UserState,
    /// Journey, segment and policy definitions, published to Redis.
    Journey,
    Scheduler,
    Gateway,
}

impl Service {
    /// The name used for the process in telemetry.
    pub fn name(self) -> &'static str {
        match self {
            Service::All => "all",
            Service::Ingest => "ingest",
            Service::UserState => "user-state",
            Service::Journey => "journey",
            Service::Scheduler => "scheduler",
            Service::Gateway => "gateway",
        }
    }
}

/// How long a stopping gateway keeps forwarding queued delivery events to ingest.
const FORWARD_DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Appends in flight per ingest process before it answers RESOURCE_EXHAUSTED.
const MAX_INFLIGHT: usize = 4096;

/// How often the gateway looks for deferred sends that are due. Their waits start at two
/// seconds, so a finer tick would only add Redis calls.
const RETRY_PASS_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Message ids the embedded log remembers for deduplication.
const MEMORY_DEDUP_IDS: usize = 1_000_000;

/// Runs a service until SIGTERM (or `shutdown`), then drains.
pub async fn run(
    service: Service,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Refuse a configuration that cannot work before taking the port: whoever waits for the
    // `listening` line must be able to trust it.
    preflight(service, &settings)?;
    warn_open_internal_calls(service, &settings);

    let listener = TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;

    // The port is taken now; `listening` is announced once the service is ready to answer
    // (stores connected, definitions in force), by the gRPC server itself.
    match service {
        Service::All => run_all(settings, listener, shutdown).await,
        Service::Ingest => run_ingest(settings, listener, shutdown).await,
        Service::Scheduler => run_scheduler(settings, listener, shutdown).await,
        Service::UserState => run_user_state(settings, listener, shutdown).await,
        Service::Journey => run_journey(settings, listener, shutdown).await,
        Service::Gateway => run_gateway(settings, listener, shutdown).await,
    }
}

/// Says once, at start, that a process serving an internal call over the network takes it
/// from anyone who reaches its port, when no internal token is set. `serve all` makes those
/// calls within the process, so it says nothing.
fn warn_open_internal_calls(service: Service, settings: &Settings) {
    let calls = match service {
        Service::Ingest => "Ingest.AppendOutcome",
        Service::Gateway => "Gateway.Send",
        Service::Scheduler => "the Scheduler service",
        Service::All | Service::UserState | Service::Journey => return,
    };
    if settings.internal_token_file.is_none() {
        tracing::warn!(
            "no --internal-token-file (BECKON_INTERNAL_TOKEN_FILE): {calls}, meant only for \
             Beckon's own services, is open to any client that reaches this port"
        );
    }
}

/// Every check of the settings that needs no server: what the start refuses before taking
/// the port, and what `--print-config` refuses, so that a configuration it prints starts.
pub fn preflight(service: Service, settings: &Settings) -> anyhow::Result<()> {
    match service {
        Service::Ingest | Service::Scheduler | Service::UserState | Service::Journey => {
            require_redis(settings, service.name())?;
        }
        Service::All | Service::Gateway => {}
    }
    if let Some(target) = RedisTarget::from_settings(settings) {
        target.check()?;
    }
    check_listen(&settings.origins.name("listen"), &settings.listen)?;
    if let Some(admin) = &settings.admin_listen {
        check_listen(&settings.origins.name("admin_listen"), admin)?;
    }
    if service == Service::UserState && settings.scheduler_url.is_none() {
        anyhow::bail!("user-state needs --scheduler-url (BECKON_SCHEDULER_URL)");
    }
    if service == Service::UserState
        && settings.journeys_url.is_none()
        && settings.journeys.is_none()
    {
        anyhow::bail!(
            "user-state needs --journeys-url (BECKON_JOURNEYS_URL), or --journeys for a \
             single instance evaluating a local folder"
        );
    }

    // The messages file is opened as the recorder opens it, so a path it cannot append to is
    // refused before the port is taken. It records for a served gateway, and for user-state
    // when no gateway is named.
    let records = match service {
        Service::All | Service::Gateway => true,
        Service::UserState => settings.gateway_url.is_none(),
        Service::Ingest | Service::Scheduler | Service::Journey => false,
    };
    if let (true, Some(path)) = (records, &settings.messages_out) {
        gateway::check_messages_out(path)?;
    }

    // The certificate files are read now, so a missing one is named before the port is taken.
    served_tls(settings)?;
    check_providers(service, settings)
}

/// A listen address binding could use: an IP address or a host name, and a port number.
/// Binding resolves a host name; this does not, so it never waits on DNS.
fn check_listen(setting: &str, addr: &str) -> anyhow::Result<()> {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let problem = match addr.rsplit_once(':') {
        None => "no port; give HOST:PORT".to_string(),
        Some(("", _)) => "no host; give HOST:PORT".to_string(),
        Some((_, port)) if port.parse::<u16>().is_err() => {
            format!("port {port:?} is not a number from 0 to 65535")
        }
        Some(_) => return Ok(()),
    };
    anyhow::bail!("{setting}: {addr:?} is not an address to listen on: {problem}")
}

/// Checks the providers a service would build (the gateway's, in `serve gateway` and `serve
/// all`) as the start builds them: secrets read, URLs parsed, keys loaded. The start runs it
/// before taking the port, and `--print-config` runs it too, so a configuration it prints
/// is one the service starts with.
pub fn check_providers(service: Service, settings: &Settings) -> anyhow::Result<()> {
    match service {
        Service::All | Service::Gateway => settings
            .providers
            .check()
            .map_err(|e| settings.origins.providers_error(e)),
        Service::Ingest | Service::UserState | Service::Journey | Service::Scheduler => Ok(()),
    }
}

/// An engine over a local folder of specs, for a user-state instance running without a
/// journey service.
/// Refuses a journeys folder that holds no spec: the service would start with no journeys, as
/// if a mistyped path were an empty set of specs. Checked at start, not by `--print-config`,
/// which also runs where the folder is not mounted (checking a deployment's manifests).
fn check_spec_folder(settings: &Settings, dir: &std::path::Path) -> anyhow::Result<()> {
    let name = settings.origins.name("journeys");
    let specs = beckon_journey::spec_paths(dir).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    if specs.is_empty() {
        anyhow::bail!(
            "{name}: {}: a folder with no .yaml or .yml files",
            dir.display()
        );
    }
    Ok(())
}

fn local_engine(settings: &Settings, dir: &std::path::Path) -> anyhow::Result<CurrentEngine> {
    check_spec_folder(settings, dir)?;
    let defs = beckon_journey::load_definitions(dir)
        .with_context(|| format!("loading journeys from {}", dir.display()))?
        .for_workspace(&settings.workspace);
    tracing::warn!(
        journeys = defs.journeys.len(),
        workspace = %settings.workspace,
        "evaluating a local folder of specs; other instances do not share it"
    );
    let engine = Engine::from_definitions(defs).with_state_limits(state_limits(settings));
    Ok(CurrentEngine::new(Arc::new(engine)))
}

/// Publishes the `--journeys` folder, when given, so a fresh deployment starts with its specs.
/// Versions published before stay; a changed version is refused, with the reason.
async fn publish_folder(settings: &Settings, store: &dyn DefinitionStore) -> anyhow::Result<()> {
    let Some(dir) = &settings.journeys else {
        return Ok(());
    };
    check_spec_folder(settings, dir)?;
    let files = beckon_journey::read_spec_files(dir)
        .with_context(|| format!("reading specs from {}", dir.display()))?;
    match beckon_journey_service::publish_files(store, &settings.workspace, &files).await {
        Ok(p) => {
            tracing::info!(
                release = p.release,
                added = p.added.len(),
                dir = %dir.display(),
                "specs published at start"
            );
            Ok(())
        }
        Err(DefinitionError::Invalid(errors)) => {
            let list = beckon_journey::error::list(&errors);
            anyhow::bail!("publishing {}: {list}", dir.display())
        }
        Err(e) => Err(e.into()),
    }
}

/// An engine with nothing in it yet; the definitions follower fills it before any partition
/// is taken, and the engines it puts in force keep these limits.
fn empty_engine(settings: &Settings) -> CurrentEngine {
    let engine = Engine::new(Vec::new()).with_state_limits(state_limits(settings));
    CurrentEngine::new(Arc::new(engine))
}

/// The Ingest service as the settings ask for it, holding event times against `clock`.
fn ingest_service(
    settings: &Settings,
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
) -> IngestService {
    IngestService::new(log, MAX_INFLIGHT)
        .with_workspaces(vec![settings.workspace.clone()])
        .with_clock(clock)
        .with_max_future_skew(beckon_core::Duration(settings.max_future_skew_ms as i64))
        .with_max_lateness(
            settings
                .max_event_lateness_ms
                .map(|ms| beckon_core::Duration(ms as i64)),
        )
}

/// The bounds on each user's state the settings ask for.
fn state_limits(settings: &Settings) -> beckon_core::StateLimits {
    beckon_core::StateLimits {
        event_names: settings.max_event_names,
        trait_bytes: settings.max_trait_bytes,
    }
}

/// The first process of a deployment records its partition count in Redis; every other
/// process must use the same one. A process with another count would read, lease and key a
/// different set of partitions, and the events of the partitions nobody reads would be
/// acknowledged to clients and never applied.
async fn same_partitions(mut conn: RedisConn, settings: &Settings) -> anyhow::Result<()> {
    let key = format!("bk:{{{}}}:partitions", settings.workspace);
    let (_, stored): (Option<String>, u32) = redis::pipe()
        .cmd("SET")
        .arg(&key)
        .arg(settings.partitions)
        .arg("NX")
        .get(&key)
        .query_async(&mut conn)
        .await
        .context("reading the deployment's partition count")?;
    if stored != settings.partitions {
        anyhow::bail!(
            "partitions: this deployment of workspace `{}` uses {stored} partitions, not {}; \
             every service must be started with the same count",
            settings.workspace,
            settings.partitions
        );
    }
    Ok(())
}

fn require_redis(settings: &Settings, service: &str) -> anyhow::Result<RedisTarget> {
    RedisTarget::from_settings(settings)
        .with_context(|| format!("{service} needs --redis-url (BECKON_REDIS_URL)"))
}

/// Shares one shutdown signal between the gRPC server and the background work. A watch
/// channel keeps the value, so work that starts waiting late still sees it.
fn fan_out(
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (
    watch::Receiver<bool>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let mut server = rx.clone();
    let fut = async move {
        let _ = server.wait_for(|stop| *stop).await;
    };
    (rx, fut)
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The stores behind `serve all`: log, timers, state.
type Backends = (
    Arc<dyn EventLog>,
    Arc<dyn AsyncTimerStore>,
    Arc<dyn StateStore>,
);

/// Fired timers go into their user's partition log, to reach the actor like an event.
pub struct FiredToLog(pub Arc<dyn EventLog>);

impl FiredSink for FiredToLog {
    fn deliver<'a>(
        &'a self,
        timer: &'a beckon_core::Timer,
    ) -> BoxFuture<'a, Result<(), SchedulerError>> {
        Box::pin(async move {
            // Delivery runs in the firing's span: the entry carries its context.
            let tp = beckon_telemetry::current_trace_string();
            self.0
                .append_fired(timer, tp.as_deref())
                .await
                .map(|_| ())
                .map_err(|e| SchedulerError::Unavailable(e.to_string()))
        })
    }

    fn deliver_many<'a>(
        &'a self,
        timers: &'a [beckon_core::Timer],
        spans: &'a [tracing::Span],
    ) -> BoxFuture<'a, Vec<Result<(), SchedulerError>>> {
        Box::pin(async move {
            // Each entry carries the context of its own firing's span.
            let traceparents: Vec<Option<String>> = spans
                .iter()
                .map(|span| span.in_scope(beckon_telemetry::current_trace_string))
                .collect();
            self.0
                .append_fired_many(timers, &traceparents)
                .await
                .into_iter()
                .map(|r| {
                    r.map(|_| ())
                        .map_err(|e| SchedulerError::Unavailable(e.to_string()))
                })
                .collect()
        })
    }
}

/// The partition log on Redis, each partition's blocking reads on a connection of its own.
/// Every process that appends must remember ids for the same window. On a single server one
/// script call appends to several partitions at once.
fn redis_log(target: &RedisTarget, conn: RedisConn, settings: &Settings) -> Arc<dyn EventLog> {
    let config = LogConfig {
        partitions: settings.partitions,
        // Markers expire in whole seconds; a window is never shortened by the rounding.
        dedup_ttl_secs: settings.dedup_window_ms.div_ceil(1_000),
        ..LogConfig::default()
    };
    let log = RedisLog::new(conn, config).with_readers(target.reader_connector());
    if target.is_cluster() {
        Arc::new(log)
    } else {
        Arc::new(log.spanning_partitions())
    }
}

async fn run_all(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(beckon_core::SystemClock);

    // On Redis the log and the users share one server and key layout.
    let log_in_store = RedisTarget::from_settings(&settings).is_some();
    let (log, timers, store): Backends = match RedisTarget::from_settings(&settings) {
        None => (
            Arc::new(MemoryLog::new(
                clock.clone(),
                settings.partitions,
                MEMORY_DEDUP_IDS,
            )),
            Arc::new(MemoryAsyncTimers::new(settings.partitions)),
            Arc::new(MemoryStore::new()),
        ),
        Some(target) => {
            let conn = target.connect().await?;
            same_partitions(conn.clone(), &settings).await?;
            let log = redis_log(&target, conn.clone(), &settings);
            let (timers, store) = redis_stores(conn, &settings);
            (log, timers, store)
        }
    };

    // Delivery outcomes go straight into the log, as ingest would append them.
    let sink = Arc::new(gateway::AppendSink::new(log.clone()));
    let (gateway, gateway_service) = served_gateway(&settings, Some(store.clone()), sink).await?;
    let inbox_drain = gateway_service.drain_handle();

    let definitions: Arc<dyn DefinitionStore> = match RedisTarget::from_settings(&settings) {
        None => Arc::new(MemoryDefinitions::new()),
        Some(target) => Arc::new(RedisDefinitions::new(target.connect().await?, "bk")),
    };
    publish_folder(&settings, definitions.as_ref()).await?;

    let (stop, server_stop) = fan_out(shutdown);
    let retrying = spawn_retries(&gateway, stop.clone());
    let engine = empty_engine(&settings);
    let follower = beckon_journey_service::follow_store(
        definitions.clone(),
        &settings.workspace,
        engine.clone(),
        stop.clone(),
    )
    .await?;

    let wake = Arc::new(Notify::new());
    let firing = tokio::spawn(firing::run(
        timers.clone(),
        Arc::new(FiredToLog(log.clone())),
        clock.clone(),
        FiringConfig {
            workspaces: vec![settings.workspace.clone()],
            partitions: settings.partitions,
            ..FiringConfig::default()
        },
        wake.clone(),
        stop.clone(),
        |_| {},
    ));

    let user_store = store.clone();
    let definitions_in_force = engine.clone();
    let parts = userstate::Parts {
        engine,
        store,
        log: log.clone(),
        log_in_store,
        timers: Arc::new(timers.clone()) as Arc<dyn TimerSink>,
        outlet: Arc::new(gateway) as Arc<dyn Outlet>,
        workspace: settings.workspace.clone(),
        consumer: settings.instance.clone(),
        hibernate_after: millis(settings.hibernate_after_ms),
        evict_after: millis(settings.evict_after_ms),
        clock: clock.clone(),
    };
    let instance = userstate::Instance::start(parts, settings.threads)?;
    let user_state = {
        let stop = stop.clone();
        let partitions = settings.partitions;
        tokio::spawn(async move {
            userstate::run_all_partitions(instance, partitions, stopped(stop)).await
        })
    };

    let ingest = ingest_service(&settings, log.clone(), clock.clone());
    let users = UserStateService::new(user_store, log, clock)
        .with_workspaces(vec![settings.workspace.clone()])
        .with_definitions(definitions_in_force);
    let routes = Routes::new(IngestEndpoint::new(ingest))
        .add_service(users.into_server())
        .add_service(
            JourneysService::new(definitions)
                .with_workspaces(vec![settings.workspace.clone()])
                .into_server(),
        )
        .add_service(SchedulerServer::new(
            SchedulerService::new(timers, settings.partitions, wake)
                .with_workspaces(vec![settings.workspace.clone()]),
        ))
        .add_service(gateway_service.into_server());
    let server_stop = ending_inbox_streams(server_stop, inbox_drain);
    let names = [
        "beckon.v1.Ingest",
        "beckon.v1.UserState",
        "beckon.v1.Journeys",
        "beckon.v1.Scheduler",
        "beckon.v1.Gateway",
    ];
    crate::grpc::serve(
        listener,
        routes,
        &names,
        served_tls(&settings)?,
        RedisTarget::from_settings(&settings).map(|t| t.watch_reachable()),
        settings.internal_token()?,
        server_stop,
    )
    .await?;

    // The server stopped taking calls; let the partitions write what they hold.
    let _ = user_state.await;
    let _ = firing.await;
    let _ = retrying.await;
    let _ = follower.await;
    Ok(())
}

fn redis_stores(
    conn: RedisConn,
    settings: &Settings,
) -> (Arc<dyn AsyncTimerStore>, Arc<dyn StateStore>) {
    let partitions = settings.partitions;
    let claim = beckon_core::Duration(settings.timer_claim_ms.max(1) as i64);
    let timers =
        beckon_scheduler::RedisTimers::new(conn.clone(), "bk", partitions).with_claim_lease(claim);
    let store = beckon_user_state::redis::RedisStateStore::new(conn, "bk", partitions);
    (Arc::new(timers), Arc::new(store))
}

async fn run_journey(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let target = require_redis(&settings, "journey")?;
    let store = Arc::new(RedisDefinitions::new(target.connect().await?, "bk"));
    publish_folder(&settings, store.as_ref()).await?;

    // Releases published through other journey instances reach this one's followers too.
    let (stop, server_stop) = fan_out(shutdown);
    let listener_task = {
        let store = store.clone();
        let client = target.pubsub_client()?;
        let workspaces = vec![settings.workspace.clone()];
        tokio::spawn(async move { store.listen(client, workspaces, stopped(stop)).await })
    };
    let service = JourneysService::new(store).with_workspaces(vec![settings.workspace.clone()]);
    let routes = Routes::new(service.into_server());
    crate::grpc::serve(
        listener,
        routes,
        &["beckon.v1.Journeys"],
        served_tls(&settings)?,
        Some(target.watch_reachable()),
        settings.internal_token()?,
        server_stop,
    )
    .await?;
    let _ = listener_task.await;
    Ok(())
}

async fn run_ingest(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let target = require_redis(&settings, "ingest")?;
    let conn = target.connect().await?;
    same_partitions(conn.clone(), &settings).await?;
    let log = redis_log(&target, conn, &settings);
    let clock: Arc<dyn Clock> = Arc::new(beckon_core::SystemClock);
    let routes = Routes::new(IngestEndpoint::new(ingest_service(&settings, log, clock)));
    crate::grpc::serve(
        listener,
        routes,
        &["beckon.v1.Ingest"],
        served_tls(&settings)?,
        Some(target.watch_reachable()),
        settings.internal_token()?,
        shutdown,
    )
    .await
}

async fn run_scheduler(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let target = require_redis(&settings, "scheduler")?;
    let conn = target.connect().await?;
    same_partitions(conn.clone(), &settings).await?;
    let log = redis_log(&target, conn.clone(), &settings);
    let (timers, _) = redis_stores(conn, &settings);
    let clock: Arc<dyn Clock> = Arc::new(beckon_core::SystemClock);

    let (stop, server_stop) = fan_out(shutdown);
    let wake = Arc::new(Notify::new());
    let firing = tokio::spawn(firing::run(
        timers.clone(),
        Arc::new(FiredToLog(log)),
        clock,
        FiringConfig {
            workspaces: vec![settings.workspace.clone()],
            partitions: settings.partitions,
            ..FiringConfig::default()
        },
        wake.clone(),
        stop,
        |_| {},
    ));
    let routes = Routes::new(SchedulerServer::new(
        SchedulerService::new(timers, settings.partitions, wake)
            .with_workspaces(vec![settings.workspace.clone()]),
    ));
    crate::grpc::serve(
        listener,
        routes,
        &["beckon.v1.Scheduler"],
        served_tls(&settings)?,
        Some(target.watch_reachable()),
        settings.internal_token()?,
        server_stop,
    )
    .await?;
    let _ = firing.await;
    Ok(())
}

async fn run_user_state(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let target = require_redis(&settings, "user-state")?;
    let (stop, server_stop) = fan_out(shutdown);

    // Definitions first: taking partitions with an engine that lacks the published journeys
    // would let events pass without entering them.
    let (engine, follower) = match (&settings.journeys_url, &settings.journeys) {
        (Some(journeys_url), _) => {
            let channel = peer(&settings, "journeys_url", journeys_url)?
                .connect_timeout(std::time::Duration::from_secs(5))
                .connect_lazy();
            let engine = empty_engine(&settings);
            let follower = beckon_journey_service::follow_service(
                channel,
                &settings.workspace,
                engine.clone(),
                stop.clone(),
            )
            .await?;
            (engine, Some(follower))
        }
        (None, Some(dir)) => (local_engine(&settings, dir)?, None),
        (None, None) => anyhow::bail!("user-state needs --journeys-url or --journeys"),
    };
    let conn = target.connect().await?;
    same_partitions(conn.clone(), &settings).await?;
    let log = redis_log(&target, conn.clone(), &settings);
    let (_, store) = redis_stores(conn.clone(), &settings);

    let scheduler_url = settings
        .scheduler_url
        .clone()
        .context("user-state needs --scheduler-url (BECKON_SCHEDULER_URL)")?;
    let scheduler = peer(&settings, "scheduler_url", &scheduler_url)?.connect_lazy();
    let token = settings.internal_token()?;
    let timers: Arc<dyn TimerSink> = Arc::new(
        beckon_user_state::remote::RemoteScheduler::with_token(scheduler, token.clone()),
    );
    let outlet: Arc<dyn Outlet> = match &settings.gateway_url {
        Some(u) => {
            let channel = peer(&settings, "gateway_url", u)?.connect_lazy();
            Arc::new(beckon_user_state::remote::RemoteGateway::with_token(
                channel, token,
            ))
        }
        None => {
            let gateway = gateway::recording_gateway(settings.messages_out.clone())?;
            gateway::warn_no_gateway(settings.messages_out.as_deref());
            Arc::new(gateway)
        }
    };

    let definitions_in_force = engine.clone();
    let parts = userstate::Parts {
        engine,
        store: store.clone(),
        log: log.clone(),
        log_in_store: true,
        timers,
        outlet,
        workspace: settings.workspace.clone(),
        consumer: settings.instance.clone(),
        hibernate_after: millis(settings.hibernate_after_ms),
        evict_after: millis(settings.evict_after_ms),
        clock: userstate::system_clock(),
    };
    let instance = userstate::Instance::start(parts, settings.threads)?;
    // The leases have a connection of their own. On a shared one, a reconnect begun by a
    // partition loop belongs to that loop's thread, whose runtime ends with the drain: giving
    // the leases back afterwards would then wait on a timer of a runtime that is gone.
    let lease_conn = target.connect().await?;
    let leases = beckon_user_state::lease::Leases::new(
        lease_conn,
        beckon_user_state::lease::LeaseConfig {
            workspace: settings.workspace.clone(),
            partitions: settings.partitions,
            instance: settings.instance.clone(),
            ttl_ms: settings.lease_ttl_ms,
        },
        userstate::system_clock(),
    );

    let ttl = settings.lease_ttl_ms;
    let owner = tokio::spawn(async move {
        userstate::run_with_leases(instance, leases, ttl, stopped(stop)).await
    });
    let clock: Arc<dyn Clock> = Arc::new(beckon_core::SystemClock);
    let users = UserStateService::new(store, log, clock)
        .with_workspaces(vec![settings.workspace.clone()])
        .with_definitions(definitions_in_force);
    let routes = Routes::new(users.into_server());
    crate::grpc::serve(
        listener,
        routes,
        &["beckon.v1.UserState"],
        served_tls(&settings)?,
        Some(target.watch_reachable()),
        settings.internal_token()?,
        server_stop,
    )
    .await?;
    let drained = owner.await;
    if let Some(f) = follower {
        let _ = f.await;
    }
    match drained {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow::anyhow!(
            "draining user-state: {e}; the leases expire on their own within {ttl} ms"
        )),
        Err(e) => Err(anyhow::anyhow!(
            "draining user-state: the lease loop failed: {e}"
        )),
    }
}

async fn run_gateway(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // With Redis, contacts and devices come from the users' state there.
    let store = match RedisTarget::from_settings(&settings) {
        Some(target) => {
            let conn = target.connect().await?;
            same_partitions(conn.clone(), &settings).await?;
            Some(redis_stores(conn, &settings).1)
        }
        None => None,
    };

    // Delivery outcomes go to the Ingest service, through a queue that never holds up a send.
    let (sink, forwarder): (Arc<dyn EventSink>, _) = match &settings.ingest_url {
        Some(url) => {
            let config = beckon_gateway::IngestSinkConfig {
                internal_token: settings.internal_token()?,
                ..beckon_gateway::IngestSinkConfig::default()
            };
            let endpoint = peer(&settings, "ingest_url", url)?;
            let client = beckon_gateway::ingest_sink::lazy_client(endpoint, config.timeout);
            let sleeper = Arc::new(beckon_gateway::TokioSleeper);
            let (sink, forwarder) = beckon_gateway::IngestSink::start(client, config, sleeper);
            (Arc::new(sink), Some(forwarder))
        }
        None => {
            tracing::warn!("no --ingest-url: delivery outcomes are not forwarded");
            (Arc::new(gateway::NoSink), None)
        }
    };

    let (gateway, service) = served_gateway(&settings, store, sink).await?;
    let (stop, shutdown) = fan_out(shutdown);
    let retrying = spawn_retries(&gateway, stop);
    let shutdown = ending_inbox_streams(shutdown, service.drain_handle());
    let routes = Routes::new(service.into_server());
    crate::grpc::serve(
        listener,
        routes,
        &["beckon.v1.Gateway"],
        served_tls(&settings)?,
        RedisTarget::from_settings(&settings).map(|t| t.watch_reachable()),
        settings.internal_token()?,
        shutdown,
    )
    .await?;

    let _ = retrying.await;

    // Give the queue a moment to reach ingest. The gateway's channels still hold the sink, so
    // the forwarder itself does not end: what is waited for is the events taken so far.
    if let Some(forwarder) = forwarder {
        let queued = forwarder.flush(FORWARD_DRAIN).await;
        if queued > 0 {
            tracing::warn!(
                queued,
                "delivery events still queued at exit were not forwarded"
            );
        }
    }
    Ok(())
}

/// Works the gateway's retry queue until `stop`.
fn spawn_retries(
    gateway: &beckon_gateway::Gateway,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(beckon_gateway::retry_queue::work(
        gateway.clone(),
        RETRY_PASS_EVERY,
        beckon_telemetry::Metrics::global(),
        stopped(stop),
    ))
}

/// `shutdown`, which also ends the open `SubscribeInbox` streams: an app would otherwise
/// hold its stream open through the whole drain.
async fn ending_inbox_streams(
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain: beckon_gateway::grpc::DrainHandle,
) {
    shutdown.await;
    drain.drain();
}

/// The gateway of a served process and its gRPC service: recorder channels, then the
/// configured providers, the in-app inbox, and idempotency keys in Redis when there is one.
async fn served_gateway(
    settings: &Settings,
    store: Option<Arc<dyn StateStore>>,
    sink: Arc<dyn EventSink>,
) -> anyhow::Result<(beckon_gateway::Gateway, GatewayService)> {
    let clock: Arc<dyn Clock> = Arc::new(beckon_core::SystemClock);
    let record = gateway::recorder(settings.messages_out.clone())?;
    gateway::warn_recorded_in_memory_only(settings.messages_out.as_deref(), &settings.providers);
    let mut base = gateway::CHANNELS
        .iter()
        .fold(beckon_gateway::Gateway::new(), |g, c| {
            g.with(c, record.clone())
        });

    // Idempotency keys in Redis make a send repeated by any instance, before or after a
    // crash, go out once; the inbox there is shared by every replica.
    let ttl = beckon_core::Duration::hours(30 * 24);
    let mut retries: Arc<dyn beckon_gateway::RetryQueue> =
        Arc::new(beckon_gateway::MemoryRetryQueue::new());
    let inbox: Arc<dyn InboxStore> = match RedisTarget::from_settings(settings) {
        Some(target) => {
            let conn = target.connect().await?;
            let keys = beckon_gateway::RedisKeyStore::new(
                conn.clone(),
                beckon_gateway::RedisKeysConfig {
                    partitions: settings.partitions,
                    ..beckon_gateway::RedisKeysConfig::default()
                },
            );
            base = base.with_key_store(Arc::new(keys));
            retries = Arc::new(beckon_gateway::RedisRetryQueue::new(conn.clone(), "bk"));

            let config = beckon_gateway::RedisInboxConfig {
                partitions: settings.partitions,
                ttl,
                ..beckon_gateway::RedisInboxConfig::default()
            };
            let pubsub = target.pubsub_client()?;
            let inbox = beckon_gateway::RedisInbox::start(conn, pubsub, config, clock.clone())
                .await
                .context("inbox pub/sub")?;
            Arc::new(inbox)
        }
        None => Arc::new(beckon_gateway::inbox::Inbox::new(clock.clone(), ttl, 200)),
    };
    // A send the provider cannot take now waits in the retry queue, so the partition that
    // made it goes on with its other users.
    base = base.with_retry_queue(
        retries,
        beckon_gateway::RetryQueuePolicy::default(),
        clock.clone(),
        sink.clone(),
    );
    let (recipients, devices): (Arc<dyn Recipients>, Arc<dyn DeviceRegistry>) = match store {
        Some(store) => {
            let contacts = Arc::new(gateway::StateContacts::new(store));
            // The users' state also tells which deferred sends their journeys ended since.
            base = base.with_relevance(contacts.clone());
            (contacts.clone(), contacts)
        }
        None => (
            Arc::new(beckon_gateway::MemoryRecipients::new()),
            Arc::new(beckon_gateway::MemoryDevices::new()),
        ),
    };
    let wiring = beckon_gateway::Wiring {
        recipients,
        devices,
        inbox: inbox.clone(),
        record,
        deps: beckon_gateway::Deps::live(sink.clone()),
    };
    let gateway = settings
        .providers
        .apply(base, &wiring)
        .map_err(|e| settings.origins.providers_error(e))?;
    let service = GatewayService::new(gateway.clone(), inbox)
        .with_outcomes(sink)
        .with_workspaces(vec![settings.workspace.clone()]);
    Ok((gateway, service))
}

/// TLS for this process's gRPC port, when a certificate and key are set.
fn served_tls(settings: &Settings) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
    crate::grpc::server_tls(settings.tls_cert.as_deref(), settings.tls_key.as_deref())
}

/// An endpoint for the peer service at `url`, with TLS when it is an `https://` URL.
fn peer(
    settings: &Settings,
    setting: &str,
    url: &str,
) -> anyhow::Result<tonic::transport::Endpoint> {
    crate::grpc::peer_endpoint(setting, url, settings.tls_ca.as_deref())
}

/// A duration setting in milliseconds, saturating rather than wrapping.
fn millis(ms: u64) -> beckon_core::Duration {
    beckon_core::Duration(i64::try_from(ms).unwrap_or(i64::MAX))
}
