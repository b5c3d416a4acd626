//! Telemetry settings, read from the environment in one place.
//!
//! The standard OpenTelemetry variables are honoured so that a platform team can point every
//! Beckon pod at its collector without Beckon-specific knobs:
//!
//! | variable | meaning |
//! | --- | --- |
//! | `BECKON_LOG`, else `RUST_LOG` | log filter (`info`, `beckon_ingest=debug`, ...) |
//! | `BECKON_LOG_FORMAT` | `text` (default) or `json` |
//! | `BECKON_TRACE_USER_IDS` | `true` puts `beckon.user.id` on spans (default `false`) |
//! | `OTEL_SDK_DISABLED` | `true` turns every exporter off |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | OTLP/gRPC endpoint for traces and metrics |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `..._METRICS_ENDPOINT` | per-signal override |
//! | `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER` | `none` turns one signal's export off |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` | must be `grpc` when set; HTTP is not built in |
//! | `OTEL_SERVICE_NAME` | `service.name` resource attribute |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `key=value,key=value`, values percent-encoded |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | sampler, as in the specification |
//! | `OTEL_METRIC_EXPORT_INTERVAL` | milliseconds between metric exports (default 60000) |
//!
//! There is deliberately no default endpoint: with none configured, no exporter is created and
//! nothing leaves the process. Headers, timeouts and compression (`OTEL_EXPORTER_OTLP_HEADERS`
//! and friends) are read by the OTLP exporter itself when one is built.

use std::time::Duration;

use crate::error::{Result, TelemetryError};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Which traces are recorded, following the `OTEL_TRACES_SAMPLER` values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerConfig {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

impl Default for SamplerConfig {
    /// Follow the caller's decision, record every new trace: the specification's default.
    fn default() -> Self {
        SamplerConfig::ParentBasedAlwaysOn
    }
}

/// Everything [`crate::init`] needs. Build it with [`TelemetryConfig::from_env`] in a service,
/// or fill the fields directly in a test.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// `service.name` of traces and metrics.
    pub service_name: String,
    /// Extra resource attributes (`deployment.environment`, `k8s.pod.name`, ...).
    pub resource_attributes: Vec<(String, String)>,
    /// An `EnvFilter` directive string.
    pub log_filter: String,
    pub log_format: LogFormat,
    /// Where traces go over OTLP/gRPC; `None` means no trace exporter at all.
    pub traces_endpoint: Option<String>,
    /// Where metrics go over OTLP/gRPC; `None` means no metric exporter at all.
    pub metrics_endpoint: Option<String>,
    pub sampler: SamplerConfig,
    /// Time between two OTLP metric exports.
    pub metrics_interval: Duration,
    /// Whether spans carry `beckon.user.id`. Off by default: a user id is personal data,
    /// and traces often go to a vendor outside the data's home.
    pub export_user_ids: bool,
}

impl TelemetryConfig {
    /// Settings with nothing exported, `info` logs as text, for `service_name`.
    pub fn new(service_name: impl Into<String>) -> TelemetryConfig {
        TelemetryConfig {
            service_name: service_name.into(),
            resource_attributes: Vec::new(),
            log_filter: "info".to_owned(),
            log_format: LogFormat::Text,
            traces_endpoint: None,
            metrics_endpoint: None,
            sampler: SamplerConfig::default(),
            metrics_interval: Duration::from_secs(60),
            export_user_ids: false,
        }
    }

    /// The log filter, parsed; an error names the filter and what is wrong with it. Building
    /// the pipeline parses it the same way, so a caller can refuse a bad one up front.
    ///
    /// The OpenTelemetry SDK and exporter report through `tracing`, under targets that start
    /// with `opentelemetry`: an export that fails (a wrong collector address, a collector that
    /// is down) is an error line, where nothing at all was said before. Their lifecycle
    /// chatter is `info` and `debug`, so unless the filter names them they are held to `warn`,
    /// whatever the filter's level.
    pub fn env_filter(&self) -> Result<tracing_subscriber::EnvFilter> {
        let filter = tracing_subscriber::EnvFilter::try_new(&self.log_filter).map_err(|e| {
            TelemetryError::LogFilter {
                filter: self.log_filter.clone(),
                reason: e.to_string(),
            }
        })?;
        if self.log_filter.contains("opentelemetry") {
            return Ok(filter);
        }
        Ok(match "opentelemetry=warn".parse() {
            Ok(directive) => filter.add_directive(directive),
            Err(_) => filter,
        })
    }

    /// Reads the process environment; `default_service` names the service when
    /// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` do not.
    pub fn from_env(default_service: &str) -> Result<TelemetryConfig> {
        Self::from_lookup(default_service, |name| std::env::var(name).ok())
    }

    /// Like [`TelemetryConfig::from_env`], with variables coming from `lookup`, so tests need
    /// not change the process environment.
    pub fn from_lookup(
        default_service: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<TelemetryConfig> {
        // An empty variable counts as unset, as the specification asks.
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = TelemetryConfig::new(default_service);

        if let Some(filter) = var("BECKON_LOG").or_else(|| var("RUST_LOG")) {
            config.log_filter = filter;
        }
        if let Some(on) = var("BECKON_TRACE_USER_IDS") {
            config.export_user_ids = match on.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    return Err(config_error(
                        "BECKON_TRACE_USER_IDS",
                        format!("expected true or false, got {other:?}"),
                    ));
                }
            };
        }
        if let Some(format) = var("BECKON_LOG_FORMAT") {
            config.log_format = parse_log_format(&format)?;
        }

        let attributes = var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
        for (key, value) in parse_resource_attributes(&attributes)? {
            if key == "service.name" {
                config.service_name = value;
            } else {
                config.resource_attributes.push((key, value));
            }
        }
        if let Some(name) = var("OTEL_SERVICE_NAME") {
            config.service_name = name;
        }

        if let Some(protocol) = var("OTEL_EXPORTER_OTLP_PROTOCOL")
            && protocol.trim() != "grpc"
        {
            return Err(config_error(
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                format!("{protocol:?} is not supported; Beckon exports over grpc only"),
            ));
        }

        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true");
        let endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT");
        let signal_on = |name: &str| var(name).is_none_or(|v| v.trim() != "none");
        if !disabled && signal_on("OTEL_TRACES_EXPORTER") {
            config.traces_endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or(endpoint.clone());
        }
        if !disabled && signal_on("OTEL_METRICS_EXPORTER") {
            config.metrics_endpoint = var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").or(endpoint);
        }

        if let Some(sampler) = var("OTEL_TRACES_SAMPLER") {
            config.sampler = parse_sampler(&sampler, var("OTEL_TRACES_SAMPLER_ARG").as_deref())?;
        }
        if let Some(interval) = var("OTEL_METRIC_EXPORT_INTERVAL") {
            let ms: u64 = interval.trim().parse().map_err(|_| {
                config_error(
                    "OTEL_METRIC_EXPORT_INTERVAL",
                    format!("{interval:?} is not ms"),
                )
            })?;
            config.metrics_interval = Duration::from_millis(ms.max(1));
        }
        Ok(config)
    }
}

fn config_error(name: &'static str, reason: String) -> TelemetryError {
    TelemetryError::Config { name, reason }
}

fn parse_log_format(text: &str) -> Result<LogFormat> {
    match text.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(config_error(
            "BECKON_LOG_FORMAT",
            format!("{other:?}; expected text or json"),
        )),
    }
}

/// Parses `OTEL_TRACES_SAMPLER`. An unknown name is an error rather than a silent fallback:
/// a typo there would otherwise change how much is traced without anyone noticing.
pub(crate) fn parse_sampler(name: &str, arg: Option<&str>) -> Result<SamplerConfig> {
    let ratio = || -> Result<f64> {
        let Some(arg) = arg else {
            return Ok(1.0);
        };
        match arg.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(config_error(
                "OTEL_TRACES_SAMPLER_ARG",
                format!("{arg:?} is not a ratio between 0 and 1"),
            )),
        }
    };
    match name.trim() {
        "always_on" => Ok(SamplerConfig::AlwaysOn),
        "always_off" => Ok(SamplerConfig::AlwaysOff),
        "traceidratio" => Ok(SamplerConfig::TraceIdRatio(ratio()?)),
        "parentbased_always_on" => Ok(SamplerConfig::ParentBasedAlwaysOn),
        "parentbased_always_off" => Ok(SamplerConfig::ParentBasedAlwaysOff),
        "parentbased_traceidratio" => Ok(SamplerConfig::ParentBasedTraceIdRatio(ratio()?)),
        other => Err(config_error(
            "OTEL_TRACES_SAMPLER",
            format!("{other:?} is not a supported sampler"),
        )),
    }
}

/// Parses `key=value,key=value` with percent-encoded values, as `OTEL_RESOURCE_ATTRIBUTES`
/// is specified.
pub(crate) fn parse_resource_attributes(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(config_error(
                "OTEL_RESOURCE_ATTRIBUTES",
                format!("{pair:?} is not key=value"),
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(config_error(
                "OTEL_RESOURCE_ATTRIBUTES",
                "empty key".to_owned(),
            ));
        }
        out.push((key.to_owned(), percent_decode(value.trim())?));
    }
    Ok(out)
}

fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).unwrap_or("");
            let byte = u8::from_str_radix(hex, 16).map_err(|_| {
                config_error(
                    "OTEL_RESOURCE_ATTRIBUTES",
                    format!("bad escape in {text:?}"),
                )
            })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| config_error("OTEL_RESOURCE_ATTRIBUTES", format!("{text:?} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<TelemetryConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TelemetryConfig::from_lookup("beckon-test", |k| map.get(k).cloned())
    }

    #[test]
    fn nothing_set_means_nothing_exported() {
        let config = from(&[]).expect("config");
        assert_eq!(config.traces_endpoint, None);
        assert_eq!(config.metrics_endpoint, None);
        assert_eq!(config.service_name, "beckon-test");
        assert_eq!(config.log_filter, "info");
    }

    #[test]
    fn endpoints_follow_the_specification_precedence() {
        let config = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://127.0.0.1:9999",
            ),
        ])
        .expect("config");
        assert_eq!(
            config.traces_endpoint.as_deref(),
            Some("http://127.0.0.1:4317")
        );
        assert_eq!(
            config.metrics_endpoint.as_deref(),
            Some("http://127.0.0.1:9999")
        );

        let off = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ])
        .expect("config");
        assert!(off.traces_endpoint.is_some());
        assert_eq!(off.metrics_endpoint, None);

        let disabled = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ])
        .expect("config");
        assert_eq!(disabled.traces_endpoint, None);
    }

    #[test]
    fn service_name_and_attributes() {
        let config = from(&[
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=a,deployment.environment=prod%20eu",
            ),
            ("BECKON_LOG", "debug"),
            ("RUST_LOG", "trace"),
        ])
        .expect("config");
        assert_eq!(config.service_name, "a");
        assert_eq!(
            config.resource_attributes,
            vec![("deployment.environment".to_owned(), "prod eu".to_owned())]
        );
        assert_eq!(config.log_filter, "debug");

        let named = from(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=a"),
            ("OTEL_SERVICE_NAME", "b"),
        ])
        .expect("config");
        assert_eq!(named.service_name, "b");
        assert!(from(&[("OTEL_RESOURCE_ATTRIBUTES", "novalue")]).is_err());
        assert!(from(&[("OTEL_RESOURCE_ATTRIBUTES", "k=%zz")]).is_err());
    }

    #[test]
    fn user_ids_stay_off_spans_unless_asked_for() {
        assert!(!from(&[]).expect("config").export_user_ids);
        let on = from(&[("BECKON_TRACE_USER_IDS", "true")]).expect("config");
        assert!(on.export_user_ids);
        let err = from(&[("BECKON_TRACE_USER_IDS", "yes please")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("BECKON_TRACE_USER_IDS"), "{err}");
    }

    #[test]
    fn samplers() {
        assert_eq!(
            parse_sampler("parentbased_traceidratio", Some("0.25")).expect("sampler"),
            SamplerConfig::ParentBasedTraceIdRatio(0.25)
        );
        assert_eq!(
            parse_sampler("always_off", None).expect("sampler"),
            SamplerConfig::AlwaysOff
        );
        assert!(parse_sampler("traceidratio", Some("2")).is_err());
        assert!(parse_sampler("jaeger_remote", None).is_err());
    }

    #[test]
    fn http_protocol_is_refused() {
        assert!(from(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).is_err());
        assert!(from(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).is_ok());
        assert!(from(&[("BECKON_LOG_FORMAT", "xml")]).is_err());
    }
}
