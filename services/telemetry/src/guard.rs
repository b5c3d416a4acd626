//! Building the pipeline: subscriber, tracer and meter providers, exporters.

use std::sync::Arc;

use beckon_core::Clock;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Dispatch;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};

use crate::admin::MetricsEndpoint;
use crate::config::{LogFormat, SamplerConfig, TelemetryConfig};
use crate::error::{Result, TelemetryError};
use crate::logging::{ClockTime, JsonFormat, TextFormat, TraceIds};
use crate::metrics::{METER_NAME, Metrics};
use crate::redact::hide_password;

/// Owns the telemetry pipeline of a process. Dropping it flushes pending spans and metrics
/// and shuts the exporters down; keep it alive in `main` until the service has drained.
///
/// In async code prefer [`TelemetryGuard::shutdown`], which does the same without blocking
/// a runtime worker.
pub struct TelemetryGuard {
    dispatch: Dispatch,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    metrics: Metrics,
    endpoint: MetricsEndpoint,
    /// Exporters run on a runtime of their own, so that flushing works from any context:
    /// from a synchronous `main`, from inside a single-threaded runtime, or from `Drop`.
    runtime: Option<tokio::runtime::Runtime>,
    shut_down: bool,
    export_user_ids: bool,
}

/// Set by [`init`] from [`TelemetryConfig::export_user_ids`].
static EXPORT_USER_IDS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans may carry user ids (`beckon.user.id`): only when the process's telemetry was
/// configured so (`BECKON_TRACE_USER_IDS=true`).
pub fn user_ids_exported() -> bool {
    EXPORT_USER_IDS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Builds the pipeline and installs it for the whole process: the global `tracing`
/// subscriber, the global W3C propagator, and the global tracer and meter providers (so
/// [`Metrics::global`] records into it). Fails if a subscriber was already installed.
pub fn init(config: TelemetryConfig, clock: Arc<dyn Clock>) -> Result<TelemetryGuard> {
    let traces = config.traces_endpoint.as_deref().map(hide_password);
    let metrics = config.metrics_endpoint.as_deref().map(hide_password);
    let guard = build(config, clock)?;
    tracing::dispatcher::set_global_default(guard.dispatch.clone())
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    global::set_text_map_propagator(TraceContextPropagator::new());

    // The SDK announces each global provider at `info`, on every start, whether anything is
    // exported or not: noise an operator learns to skip. What is exported is said below once.
    // The subscriber that swallows it must say it wants nothing (`OFF`): one with no level
    // hint, such as `NoSubscriber`, lifts the process's maximum level to `TRACE` for good,
    // and every `trace!` span in the HTTP/2, gRPC and Redis crates is then built, entered
    // and closed in the registry only to be filtered out by each layer.
    let quiet = tracing_subscriber::registry().with(LevelFilter::OFF);
    tracing::subscriber::with_default(quiet, || {
        global::set_tracer_provider(guard.tracer_provider.clone());
        global::set_meter_provider(guard.meter_provider.clone());
    });
    tracing::callsite::rebuild_interest_cache();
    if traces.is_none() && metrics.is_none() {
        tracing::debug!("OpenTelemetry set up; no OTLP endpoint, so nothing is exported");
    } else {
        let none = || "none".to_string();
        tracing::info!(
            traces.endpoint = %traces.unwrap_or_else(none),
            metrics.endpoint = %metrics.unwrap_or_else(none),
            "exporting traces and metrics over OTLP"
        );
    }
    EXPORT_USER_IDS.store(guard.export_user_ids, std::sync::atomic::Ordering::Relaxed);
    Ok(guard)
}

/// Builds the pipeline without installing anything global; logs go to stderr. Use
/// [`TelemetryGuard::dispatch`] with `tracing::dispatcher::set_default` or
/// `tracing::instrument::WithSubscriber`: this is how a test runs two "services" in one
/// process, each with its own `service.name`.
pub fn build(config: TelemetryConfig, clock: Arc<dyn Clock>) -> Result<TelemetryGuard> {
    build_with_writer(config, clock, std::io::stderr)
}

/// Like [`build`], with log lines going to `writer` (a test captures them this way).
pub fn build_with_writer<W>(
    config: TelemetryConfig,
    clock: Arc<dyn Clock>,
    writer: W,
) -> Result<TelemetryGuard>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = config.env_filter()?;
    let resource = resource(&config);

    let runtime = if config.traces_endpoint.is_some() || config.metrics_endpoint.is_some() {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("beckon-otlp")
                .enable_all()
                .build()?,
        )
    } else {
        None
    };

    let tracer_provider = tracer_provider(&config, resource.clone(), runtime.as_ref())?;
    let registry = prometheus::Registry::new();
    let meter_provider = meter_provider(&config, resource, registry.clone(), runtime.as_ref())?;

    let ids = TraceIds::default();
    // Spans are exported whatever the log level: an operator who quiets the logs to `warn`
    // must not lose traces. Each layer therefore filters on its own.
    // A span is entered and left at every poll of the future it instruments. Timing each
    // entry (busy and idle time) and attaching the span's OpenTelemetry context each time cost
    // a clock read and a context copy per poll, and nothing here reads either: parents and
    // propagated contexts come from the `tracing` span itself.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer_provider.tracer("beckon"))
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_filter(LevelFilter::INFO);
    // One boxed layer rather than an `Option` for each format: a `None` layer declares an
    // interest in every callsite, which keeps spans of every level alive.
    let logs = match config.log_format {
        LogFormat::Text => {
            let format = tracing_subscriber::fmt::format()
                .with_ansi(false)
                .with_timer(ClockTime(clock.clone()));
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(writer)
                .event_format(TextFormat {
                    inner: format,
                    ids: ids.clone(),
                });
            layer.with_filter(filter).boxed()
        }
        LogFormat::Json => {
            let layer = tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields::new())
                .with_writer(writer)
                .event_format(JsonFormat {
                    clock: clock.clone(),
                    ids: ids.clone(),
                });
            layer.with_filter(filter).boxed()
        }
    };
    let subscriber = tracing_subscriber::registry().with(otel).with(logs);
    let dispatch = Dispatch::new(subscriber);
    ids.bind(&dispatch);

    let metrics = Metrics::new(&meter_provider.meter(METER_NAME));
    Ok(TelemetryGuard {
        dispatch,
        tracer_provider,
        meter_provider,
        metrics,
        endpoint: MetricsEndpoint::new(registry),
        runtime,
        shut_down: false,
        export_user_ids: config.export_user_ids,
    })
}

impl TelemetryGuard {
    /// The `tracing` dispatcher of this pipeline ([`init`] also installs it globally).
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    /// Beckon's instruments, recording into this pipeline.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// The Prometheus scrape endpoint of this pipeline's metrics.
    pub fn metrics_endpoint(&self) -> MetricsEndpoint {
        self.endpoint.clone()
    }

    /// The tracer provider, for code that creates OpenTelemetry spans directly.
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.tracer_provider
    }

    /// The meter provider, for instruments outside [`Metrics`] (avoid: add them there).
    pub fn meter_provider(&self) -> &SdkMeterProvider {
        &self.meter_provider
    }

    /// Exports everything recorded so far and waits for the exporters to finish. Blocks; from
    /// async code call it through `tokio::task::spawn_blocking`.
    pub fn force_flush(&self) -> Result<()> {
        let traces = self.tracer_provider.force_flush();
        let metrics = self.meter_provider.force_flush();
        traces.map_err(|e| sdk_error("trace flush", e))?;
        metrics.map_err(|e| sdk_error("metric flush", e))
    }

    /// Flushes and shuts the exporters down without blocking the calling runtime.
    pub async fn shutdown(mut self) -> Result<()> {
        let providers = (self.tracer_provider.clone(), self.meter_provider.clone());
        let runtime = self.runtime.take();
        self.shut_down = true;
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = shutdown_providers(&providers.0, &providers.1);
            if let Some(runtime) = runtime {
                runtime.shutdown_background();
            }
            outcome
        })
        .await;
        outcome.map_err(|e| sdk_error("shutdown", e))?
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if self.shut_down {
            return;
        }
        // Nowhere to report a failure from Drop: the subscriber may be going away too.
        let _ = shutdown_providers(&self.tracer_provider, &self.meter_provider);
        if let Some(runtime) = self.runtime.take() {
            // A plain drop of a runtime panics inside another runtime; this does not.
            runtime.shutdown_background();
        }
    }
}

fn shutdown_providers(traces: &SdkTracerProvider, metrics: &SdkMeterProvider) -> Result<()> {
    let t = traces.shutdown();
    let m = metrics.shutdown();
    t.map_err(|e| sdk_error("trace shutdown", e))?;
    m.map_err(|e| sdk_error("metric shutdown", e))
}

fn sdk_error(action: &'static str, e: impl std::fmt::Display) -> TelemetryError {
    TelemetryError::Sdk {
        action,
        reason: e.to_string(),
    }
}

fn resource(config: &TelemetryConfig) -> Resource {
    Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build()
}

fn sampler(config: SamplerConfig) -> Sampler {
    match config {
        SamplerConfig::AlwaysOn => Sampler::AlwaysOn,
        SamplerConfig::AlwaysOff => Sampler::AlwaysOff,
        SamplerConfig::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
        SamplerConfig::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerConfig::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerConfig::ParentBasedTraceIdRatio(r) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
        }
    }
}

/// Without an endpoint the provider has no processor: spans still get ids (for log lines and
/// propagation to the next service), but nothing is exported.
fn tracer_provider(
    config: &TelemetryConfig,
    resource: Resource,
    runtime: Option<&tokio::runtime::Runtime>,
) -> Result<SdkTracerProvider> {
    let builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler(config.sampler));
    let (Some(endpoint), Some(runtime)) = (&config.traces_endpoint, runtime) else {
        return Ok(builder.build());
    };
    // The tonic channel starts its connection task on the runtime entered here.
    let _entered = runtime.enter();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|e| TelemetryError::Exporter {
            signal: "trace",
            reason: e.to_string(),
        })?;
    Ok(builder.with_batch_exporter(exporter).build())
}

fn meter_provider(
    config: &TelemetryConfig,
    resource: Resource,
    registry: prometheus::Registry,
    runtime: Option<&tokio::runtime::Runtime>,
) -> Result<SdkMeterProvider> {
    let prometheus = opentelemetry_prometheus::exporter()
        .with_registry(registry)
        .scope_info_enabled(false)
        .build()
        .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
    let builder = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(prometheus);
    let (Some(endpoint), Some(runtime)) = (&config.metrics_endpoint, runtime) else {
        return Ok(builder.build());
    };
    let _entered = runtime.enter();
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|e| TelemetryError::Exporter {
            signal: "metric",
            reason: e.to_string(),
        })?;
    let reader = PeriodicReader::builder(exporter)
        .with_interval(config.metrics_interval)
        .build();
    Ok(builder.with_reader(reader).build())
}
