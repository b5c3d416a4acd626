//! Configuration of `beckon serve`, layered: built-in defaults, then a YAML file, then
//! `BECKON_*` environment variables, then flags (each layer overrides the one before).

use std::path::PathBuf;

use beckon_proto::internal::InternalToken;
use serde::{Deserialize, Serialize};

pub use beckon_telemetry::redact::hide_password;

/// Flags and environment variables; every one is optional so the layers can be told apart.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// YAML file with any of the settings below (snake_case keys).
    #[arg(long, env = "BECKON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve gRPC on; port 0 picks a free port.
    #[arg(long, env = "BECKON_LISTEN")]
    pub listen: Option<String>,
    /// Redis URL. Without one, `serve all` keeps everything in memory. Several URLs
    /// separated by commas are the seed nodes of a Redis Cluster.
    #[arg(long, env = "BECKON_REDIS_URL")]
    pub redis_url: Option<String>,
    /// How long a Redis command may take, the wait for a connection included, before the
    /// call that needs it fails with UNAVAILABLE (default 3000); also how long the health
    /// check's PING may go unanswered before the service reports NOT_SERVING.
    #[arg(long, env = "BECKON_REDIS_TIMEOUT_MS", allow_negative_numbers = true,
          value_parser = env_named(|t: &str| REDIS_TIMEOUT_MS.parse_arg::<u64>(t)))]
    pub redis_timeout_ms: Option<u64>,
    /// Treat a single Redis URL as a Redis Cluster seed node.
    #[arg(long, env = "BECKON_REDIS_CLUSTER", num_args = 0..=1, default_missing_value = "true",
          value_parser = env_named(clap::builder::BoolValueParser::new()))]
    pub redis_cluster: Option<bool>,
    #[arg(long, env = "BECKON_WORKSPACE")]
    pub workspace: Option<String>,
    #[arg(long, env = "BECKON_PARTITIONS", allow_negative_numbers = true,
          value_parser = env_named(|t: &str| PARTITIONS.parse_arg::<u32>(t)))]
    pub partitions: Option<u32>,
    /// Folder (or file) of journey, segment and policy specs. The journey service and `serve
    /// all` publish it at start; a user-state instance without `--journeys-url` evaluates it
    /// on its own.
    #[arg(long, env = "BECKON_JOURNEYS")]
    pub journeys: Option<PathBuf>,
    /// Journey service URL: user-state evaluates the definitions published there.
    #[arg(long, env = "BECKON_JOURNEYS_URL")]
    pub journeys_url: Option<String>,
    /// This instance's id among user-state instances (default: host name and process id).
    #[arg(long, env = "BECKON_INSTANCE")]
    pub instance: Option<String>,
    /// How long a user-state instance's partition lease lasts without renewal; a crashed
    /// instance's partitions move after it.
    #[arg(long, env = "BECKON_LEASE_TTL_MS", allow_negative_numbers = true,
          value_parser = env_named(|t: &str| LEASE_TTL_MS.parse_arg::<u64>(t)))]
    pub lease_ttl_ms: Option<u64>,
    /// How long a scheduler keeps a due timer it claimed before another firing round (its
    /// own after a restart, or another scheduler's) may fire it again.
    #[arg(long, env = "BECKON_TIMER_CLAIM_MS", allow_negative_numbers = true,
          value_parser = env_named(|t: &str| TIMER_CLAIM_MS.parse_arg::<u64>(t)))]
    pub timer_claim_ms: Option<u64>,
    /// Scheduler service URL, for user-state running alone.
    #[arg(long, env = "BECKON_SCHEDULER_URL")]
    pub scheduler_url: Option<String>,
    /// Gateway service URL, for user-state running alone.
    #[arg(long, env = "BECKON_GATEWAY_URL")]
    pub gateway_url: Option<String>,
    /// Users with no trigger for this many milliseconds hibernate: their actor stops and
    /// their state stays in memory in compact form (default 10 minutes).
    #[arg(long, env = "BECKON_HIBERNATE_AFTER_MS", allow_negative_numbers = true,
          value_parser = env_named(|t: &str| HIBERNATE_AFTER_MS.parse_arg::<u64>(t)))]
    pub hibernate_after_ms: Option<u64>,
    /// Users with no trigger for this many milliseconds leave memory; their next trigger
    /// reads them from Redis (default 24 hours).
    #[arg(long, env = "BECKON_EVICT_AFTER_MS", allow_negative_numbers = true,
          value_parser = env_named(|t: &str| EVICT_AFTER_MS.parse_arg::<u64>(t)))]
    pub evict_after_ms: Option<u64>,
    /// Distinct event names whose statistics each user keeps (default 1000); past it the
    /// least recently seen are forgotten, never one a journey or segment refers to.
    #[arg(long, env = "BECKON_MAX_EVENT_NAMES", allow_negative_numbers = true,
          value_parser = env_named(|t: &str| MAX_EVENT_NAMES.parse_arg::<usize>(t)))]
    pub max_event_names: Option<usize>,
    /// Bytes of traits each user keeps, names plus values as JSON (default 65536); a trait
    /// change past it is dropped and counted, except opt-outs and consent.
    #[arg(long, env = "BECKON_MAX_TRAIT_BYTES", allow_negative_numbers = true,
          value_parser = env_named(|t: &str| MAX_TRAIT_BYTES.parse_arg::<usize>(t)))]
    pub max_trait_bytes: Option<usize>,
    /// How far ahead of the server's clock an event's time may be before ingest refuses it
    /// (default 24 hours).
    #[arg(long, env = "BECKON_MAX_FUTURE_SKEW_MS", allow_negative_numbers = true,
          value_parser = env_named(|t: &str| MAX_FUTURE_SKEW_MS.parse_arg::<u64>(t)))]
    pub max_future_skew_ms: Option<u64>,
    /// How far behind the server's clock an event's time may be before ingest refuses it
    /// (default: off, events of any age are taken and evaluated at their own time). The
    /// gateway's delivery outcome events are taken at any age.
    #[arg(long, env = "BECKON_MAX_EVENT_LATENESS_MS", allow_negative_numbers = true,
          value_parser = env_named(|t: &str| MAX_EVENT_LATENESS_MS.parse_arg::<u64>(t)))]
    pub max_event_lateness_ms: Option<u64>,
    /// How long a message id is remembered so a repeat is not applied twice (default 24
    /// hours). Every event costs the log one small Redis key for this long.
    #[arg(long, env = "BECKON_DEDUP_WINDOW_MS", allow_negative_numbers = true,
          value_parser = env_named(|t: &str| DEDUP_WINDOW_MS.parse_arg::<u64>(t)))]
    pub dedup_window_ms: Option<u64>,
    /// Actor threads.
    #[arg(long, env = "BECKON_THREADS", allow_negative_numbers = true,
          value_parser = env_named(|t: &str| THREADS.parse_arg::<usize>(t)))]
    pub threads: Option<usize>,
    /// Where the gateway records every message it sends, one JSON object per line.
    #[arg(long, env = "BECKON_MESSAGES_OUT")]
    pub messages_out: Option<PathBuf>,
    /// Address of the admin HTTP endpoint (`/metrics` for Prometheus); off when absent.
    #[arg(long, env = "BECKON_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// YAML file with the gateway's providers (replaces the `providers` section of the
    /// config file).
    #[arg(long, env = "BECKON_PROVIDERS")]
    pub providers: Option<PathBuf>,
    /// Ingest service URL, where a gateway running alone sends delivery events.
    #[arg(long, env = "BECKON_INGEST_URL")]
    pub ingest_url: Option<String>,
    /// PEM certificate chain to serve gRPC with; with `--tls-key`, the service port speaks
    /// TLS only, and peers reach it with `https://` URLs.
    #[arg(long, env = "BECKON_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "BECKON_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificates of authorities trusted for `https://` peer URLs besides the public
    /// web roots: a deployment's private CA.
    #[arg(long, env = "BECKON_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// File holding the deployment's internal token (at least 16 visible ASCII characters; a
    /// final line break is ignored). With it, `Ingest.AppendOutcome`, `Gateway.Send` and the
    /// Scheduler service answer only calls that carry the token in the
    /// `x-beckon-internal-token` metadata entry, and this process's own calls to them carry
    /// it. Every process of a deployment needs the same file.
    #[arg(long, env = "BECKON_INTERNAL_TOKEN_FILE")]
    pub internal_token_file: Option<PathBuf>,
    /// The settings above whose value came from their environment variable, not their flag
    /// (see [`ServeArgs::note_environment`]).
    #[arg(skip)]
    pub from_env: Vec<String>,
}

impl ServeArgs {
    /// Notes which settings `matches` (those of `serve`) took from the environment: clap
    /// reads a flag and its variable into the same field, and an error must name the one
    /// that was given.
    pub fn note_environment(&mut self, matches: &clap::ArgMatches) {
        let command = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
        self.from_env = command
            .get_arguments()
            .map(|a| a.get_id().as_str())
            .filter(|id| {
                matches.try_contains_id(id).unwrap_or(false)
                    && matches.value_source(id) == Some(clap::parser::ValueSource::EnvVariable)
            })
            .map(str::to_string)
            .collect();
    }

    /// Which settings were given by flag or variable (`true` for a variable).
    fn given(&self) -> Vec<(&'static str, bool)> {
        let given = [
            ("listen", self.listen.is_some()),
            ("redis_url", self.redis_url.is_some()),
            ("redis_cluster", self.redis_cluster.is_some()),
            ("redis_timeout_ms", self.redis_timeout_ms.is_some()),
            ("workspace", self.workspace.is_some()),
            ("partitions", self.partitions.is_some()),
            ("journeys", self.journeys.is_some()),
            ("journeys_url", self.journeys_url.is_some()),
            ("instance", self.instance.is_some()),
            ("lease_ttl_ms", self.lease_ttl_ms.is_some()),
            ("timer_claim_ms", self.timer_claim_ms.is_some()),
            ("scheduler_url", self.scheduler_url.is_some()),
            ("gateway_url", self.gateway_url.is_some()),
            ("hibernate_after_ms", self.hibernate_after_ms.is_some()),
            ("evict_after_ms", self.evict_after_ms.is_some()),
            ("threads", self.threads.is_some()),
            (
                "max_event_lateness_ms",
                self.max_event_lateness_ms.is_some(),
            ),
            ("messages_out", self.messages_out.is_some()),
            ("admin_listen", self.admin_listen.is_some()),
            ("providers", self.providers.is_some()),
            ("ingest_url", self.ingest_url.is_some()),
            ("tls_cert", self.tls_cert.is_some()),
            ("tls_key", self.tls_key.is_some()),
            ("tls_ca", self.tls_ca.is_some()),
            ("internal_token_file", self.internal_token_file.is_some()),
        ];
        given
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(key, _)| (key, self.from_env.iter().any(|e| e == key)))
            .collect()
    }
}

/// Where the effective settings came from, so an error found after the layers were merged
/// (two settings that contradict each other) names each setting as it was given: by flag, by
/// environment variable, or by its line and column in a file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Origins {
    /// Settings given by flag or variable, `true` for a variable.
    given: Vec<(&'static str, bool)>,
    /// The config file and its text.
    file: Option<(PathBuf, String)>,
    /// The providers file (`--providers`) and its text, when the providers came from one.
    providers_file: Option<(PathBuf, String)>,
}

/// How one setting was given.
#[derive(Clone, Debug, PartialEq)]
enum Origin {
    Default,
    Flag,
    Env,
    File { line: u32, column: u32 },
}

impl Origins {
    fn of(&self, key: &str) -> Origin {
        if let Some((_, env)) = self.given.iter().find(|(k, _)| *k == key) {
            return if *env { Origin::Env } else { Origin::Flag };
        }
        match self.place(&[key]) {
            Some((line, column)) => Origin::File { line, column },
            None => Origin::Default,
        }
    }

    /// Where the value at `path` is written in the config file.
    fn place(&self, path: &[&str]) -> Option<(u32, u32)> {
        let (_, text) = self.file.as_ref()?;
        beckon_journey::strict_yaml::value_place(text, path)
    }

    /// The setting as it was given: `--evict-after-ms`, `BECKON_EVICT_AFTER_MS`, or its key.
    pub fn name(&self, key: &str) -> String {
        match self.of(key) {
            Origin::Flag => format!("--{}", key.replace('_', "-")),
            Origin::Env => format!("BECKON_{}", key.to_uppercase()),
            Origin::Default | Origin::File { .. } => key.to_string(),
        }
    }

    /// An error about `key` that compares it with `other` (whose value is `other_value`):
    /// each is named as it was given, and a value from the config file carries its line and
    /// column, so both places are in the message.
    fn contradiction(
        &self,
        key: &str,
        reason: impl FnOnce(&str) -> String,
        other: &str,
        other_value: u64,
    ) -> anyhow::Error {
        let own = self.of(key);
        let other_said = match self.of(other) {
            Origin::Default => format!("{other} ({other_value}, the default)"),
            Origin::File { line, column } if matches!(own, Origin::File { .. }) => {
                format!("{other} ({other_value}, at line {line} column {column})")
            }
            Origin::File { line, column } => {
                let path = self.file.as_ref().map(|(p, _)| p.display().to_string());
                let path = path.unwrap_or_default();
                format!("{other} ({other_value}, at {path} line {line} column {column})")
            }
            Origin::Flag | Origin::Env => format!("{} ({other_value})", self.name(other)),
        };
        let reason = reason(&other_said);
        match (own, &self.file) {
            (Origin::File { line, column }, Some((path, _))) => anyhow::anyhow!(
                "{}: {key}: {reason} at line {line} column {column}",
                path.display()
            ),
            _ => anyhow::anyhow!("{}: {reason}", self.name(key)),
        }
    }

    /// An error about `key` alone, named as it was given, with its line and column when it
    /// came from the config file.
    fn error(&self, key: &str, reason: &str) -> anyhow::Error {
        match (self.of(key), &self.file) {
            (Origin::File { line, column }, Some((path, _))) => anyhow::anyhow!(
                "{}: {key}: {reason} at line {line} column {column}",
                path.display()
            ),
            _ => anyhow::anyhow!("{}: {reason}", self.name(key)),
        }
    }

    /// A providers setting's error, named by its path in the configuration and, when the
    /// providers came from a file, with its line and column there. A setting checked against
    /// another carries the other's place too.
    pub fn providers_error(&self, e: beckon_gateway::GatewayError) -> anyhow::Error {
        let beckon_gateway::GatewayError::Config { field, reason } = e else {
            return anyhow::anyhow!("providers: {e}");
        };
        let (file, prefix): (Option<&(PathBuf, String)>, &[&str]) = match &self.providers_file {
            Some(file) => (Some(file), &[]),
            None => (self.file.as_ref(), &["providers"]),
        };
        let Some((path, text)) = file else {
            return anyhow::anyhow!("providers.{field}: {reason}");
        };
        let at = |field: &str| {
            let keys: Vec<&str> = prefix.iter().copied().chain(field.split('.')).collect();
            beckon_journey::strict_yaml::value_place(text, &keys)
        };
        let Some((line, column)) = at(&field) else {
            return anyhow::anyhow!("{}: providers.{field}: {reason}", path.display());
        };
        let mut said = format!(
            "{}: providers.{field}: {reason} at line {line} column {column}",
            path.display()
        );
        let compared = beckon_gateway::policy::DeliveryPolicy::COMPARED
            .iter()
            .find_map(|(checked, against)| {
                let provider = field.strip_suffix(checked)?;
                Some((*against, format!("{provider}{against}")))
            });
        if let Some((against, other)) = compared {
            match at(&other) {
                Some((l, c)) => said.push_str(&format!(" ({against} at line {l} column {c})")),
                None => said.push_str(&format!(" ({against} is the default)")),
            }
        }
        anyhow::anyhow!(said)
    }
}

/// The settings that bound users' state, for the commands that evaluate journeys without a
/// service (`replay`, `explain`): read as `serve` reads them (its config file, then `BECKON_*`
/// variables, then flags), so they evaluate with the limits the service has.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct StateLimitArgs {
    /// `serve`'s YAML config file: its `max_event_names` and `max_trait_bytes` apply.
    #[arg(long, env = "BECKON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Distinct event names whose statistics each user keeps (default 1000), as `serve`
    /// keeps them.
    #[arg(long, env = "BECKON_MAX_EVENT_NAMES", allow_negative_numbers = true,
          value_parser = env_named(|t: &str| MAX_EVENT_NAMES.parse_arg::<usize>(t)))]
    pub max_event_names: Option<usize>,
    /// Bytes of traits each user keeps, names plus values as JSON (default 65536), as
    /// `serve` keeps them.
    #[arg(long, env = "BECKON_MAX_TRAIT_BYTES", allow_negative_numbers = true,
          value_parser = env_named(|t: &str| MAX_TRAIT_BYTES.parse_arg::<usize>(t)))]
    pub max_trait_bytes: Option<usize>,
}

impl StateLimitArgs {
    /// The defaults, then the config file's values, then the variables' and flags'.
    pub fn resolve(&self) -> anyhow::Result<beckon_core::StateLimits> {
        let file: Settings = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                beckon_journey::strict_yaml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => Settings::default(),
        };
        Ok(beckon_core::StateLimits {
            event_names: self.max_event_names.unwrap_or(file.max_event_names),
            trait_bytes: self.max_trait_bytes.unwrap_or(file.max_trait_bytes),
        })
    }
}

/// `parser`, whose errors name the environment variable when the value came from one: clap
/// reads a flag and its variable into the same argument, and would name the flag either way.
pub fn env_named<P: clap::builder::TypedValueParser>(parser: P) -> EnvNamed<P> {
    EnvNamed(parser)
}

/// See [`env_named`].
#[derive(Clone)]
pub struct EnvNamed<P>(P);

impl<P: clap::builder::TypedValueParser> clap::builder::TypedValueParser for EnvNamed<P> {
    type Value = P::Value;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<P::Value, clap::Error> {
        self.0.parse_ref(cmd, arg, value)
    }

    fn parse_ref_(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
        source: clap::parser::ValueSource,
    ) -> Result<P::Value, clap::Error> {
        self.0.parse_ref_(cmd, arg, value, source).map_err(|mut e| {
            let variable = arg.and_then(clap::Arg::get_env);
            if let (clap::parser::ValueSource::EnvVariable, Some(variable)) = (source, variable) {
                let name = variable.to_string_lossy().into_owned();
                e.insert(
                    clap::error::ContextKind::InvalidArg,
                    clap::error::ContextValue::String(name),
                );
            }
            e
        })
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        self.0.possible_values()
    }
}

/// The values a numeric setting accepts. Flags and environment variables are checked when
/// they are parsed, the file as it is read (so the error names its line and column), and the
/// merged result once more, so no layer can slip a value past and nothing is clamped.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// The setting's name in the file (the flag is the same with dashes).
    pub name: &'static str,
    pub min: u64,
    pub max: u64,
    /// The range in words, for people who think in minutes rather than milliseconds.
    pub words: &'static str,
}

const DAY_MS: u64 = 86_400_000;

/// A Redis answer takes a millisecond or so; a limit under 100 ms would fail ordinary calls
/// on a busy server, and one past a minute would keep callers and probes waiting on a server
/// that is gone.
pub const REDIS_TIMEOUT_MS: Bounds = Bounds {
    name: "redis_timeout_ms",
    min: 100,
    max: 60_000,
    words: "100 ms to 60 seconds",
};

/// Each partition is a log stream with a reader loop and a blocking connection of its own.
pub const PARTITIONS: Bounds = Bounds {
    name: "partitions",
    min: 1,
    max: 4096,
    words: "1 to 4096 partitions",
};

/// Renewal runs every third of the lease, and no more often than every 50 ms; a lease much
/// longer than minutes leaves a dead instance's users waiting as long.
pub const LEASE_TTL_MS: Bounds = Bounds {
    name: "lease_ttl_ms",
    min: 300,
    max: 600_000,
    words: "300 ms to 10 minutes",
};

/// A claim shorter than a firing round would let rounds fire the same timer over and over.
pub const TIMER_CLAIM_MS: Bounds = Bounds {
    name: "timer_claim_ms",
    min: 1_000,
    max: DAY_MS,
    words: "1 second to 24 hours",
};

/// Both idle periods are counted against the users' last trigger, in partition time plus the
/// wall time a partition has gone without entries (see `beckon_user_state::live`).
pub const HIBERNATE_AFTER_MS: Bounds = Bounds {
    name: "hibernate_after_ms",
    min: 1_000,
    max: 365 * DAY_MS,
    words: "1 second to 365 days",
};

pub const EVICT_AFTER_MS: Bounds = Bounds {
    name: "evict_after_ms",
    min: 1_000,
    max: 365 * DAY_MS,
    words: "1 second to 365 days, and no shorter than hibernate_after_ms",
};

/// A name costs its length plus about 60 bytes in the user's record, which is read and
/// written whole on every change; past a hundred thousand, one user's record could reach
/// megabytes even with short names.
pub const MAX_EVENT_NAMES: Bounds = Bounds {
    name: "max_event_names",
    min: 1,
    max: 100_000,
    words: "1 to 100000 distinct event names per user",
};

/// Traits are read and written whole with the user's record on every change, and returned
/// whole by GetUser; 4 MiB keeps that record within what a gRPC answer carries.
pub const MAX_TRAIT_BYTES: Bounds = Bounds {
    name: "max_trait_bytes",
    min: 1_024,
    max: 4 * 1024 * 1024,
    words: "1024 to 4194304 bytes of traits per user",
};

/// Phones' clocks are often minutes off; a limit under a second would refuse them, and one past
/// a year would let a wrong unit through.
pub const MAX_FUTURE_SKEW_MS: Bounds = Bounds {
    name: "max_future_skew_ms",
    min: 1_000,
    max: 365 * DAY_MS,
    words: "1 second to 365 days",
};

/// Events reach ingest seconds after they happen, and a phone's offline queue hours or days
/// later; a limit under a minute would refuse ordinary traffic.
pub const MAX_EVENT_LATENESS_MS: Bounds = Bounds {
    name: "max_event_lateness_ms",
    min: 60_000,
    max: 365 * DAY_MS,
    words: "1 minute to 365 days",
};

/// The log's dedup window unless set: a day.
pub const DEFAULT_DEDUP_WINDOW_MS: u64 = DAY_MS;

/// A client retries within minutes and an SDK's offline queue within days; a window shorter
/// than a minute would let ordinary retries in twice, and each remembered id costs Redis a key.
pub const DEDUP_WINDOW_MS: Bounds = Bounds {
    name: "dedup_window_ms",
    min: 60_000,
    max: 30 * DAY_MS,
    words: "1 minute to 30 days",
};

/// Each actor thread is an OS thread with an event loop of its own.
pub const THREADS: Bounds = Bounds {
    name: "threads",
    min: 1,
    max: 256,
    words: "1 to 256 threads",
};

impl Bounds {
    /// `value` if it lies in the range; otherwise why not, without the setting's name (the
    /// caller knows how the setting was spelled: flag, variable or key).
    pub fn check(&self, value: u64) -> Result<u64, String> {
        if (self.min..=self.max).contains(&value) {
            Ok(value)
        } else {
            Err(format!("{value} is out of range; {}", self.allowed()))
        }
    }

    fn allowed(&self) -> String {
        format!("allowed {}..={} ({})", self.min, self.max, self.words)
    }

    /// Parses a flag or environment value. A negative number, or one too large for any
    /// integer, is refused with the allowed range like any other value outside it.
    pub fn parse_arg<T: TryFrom<u64>>(&self, text: &str) -> Result<T, String> {
        let text = text.trim();
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "`{text}` is not a whole number; {}",
                self.allowed()
            ));
        }
        if text.starts_with('-') {
            return Err(format!("{text} is negative; {}", self.allowed()));
        }
        let value = text
            .parse::<u64>()
            .map_err(|_| format!("{text} is out of range; {}", self.allowed()))?;
        let value = self.check(value)?;
        T::try_from(value).map_err(|_| format!("{value} is out of range; {}", self.allowed()))
    }

    /// Reads the setting from the config file. The check runs while the value is read, so
    /// the YAML reader adds the value's line and column to the error.
    fn deserialize<'de, D, T>(self, deserializer: D) -> Result<T, D::Error>
    where
        D: serde::Deserializer<'de>,
        T: TryFrom<u64>,
    {
        // The gateway's reader for its delivery settings checks the same way, with the same
        // words; the YAML reader puts the key's path in front of its error.
        let range = beckon_gateway::policy::range::Range {
            min: self.min,
            max: self.max,
            words: self.words,
        };
        let value = range.read(deserializer)?;
        // In range, so it fits the field's type, which the range was chosen for.
        T::try_from(value)
            .map_err(|_| serde::de::Error::custom(format!("{}: {value} does not fit", self.name)))
    }
}

macro_rules! bounded_field {
    ($($fn:ident: $bounds:ident as $t:ty;)*) => {
        $(
            fn $fn<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<$t, D::Error> {
                $bounds.deserialize(deserializer)
            }
        )*
    };
}

bounded_field! {
    de_redis_timeout_ms: REDIS_TIMEOUT_MS as u64;
    de_partitions: PARTITIONS as u32;
    de_lease_ttl_ms: LEASE_TTL_MS as u64;
    de_timer_claim_ms: TIMER_CLAIM_MS as u64;
    de_hibernate_after_ms: HIBERNATE_AFTER_MS as u64;
    de_evict_after_ms: EVICT_AFTER_MS as u64;
    de_threads: THREADS as usize;
    de_max_event_names: MAX_EVENT_NAMES as usize;
    de_max_trait_bytes: MAX_TRAIT_BYTES as usize;
    de_max_future_skew_ms: MAX_FUTURE_SKEW_MS as u64;
    de_dedup_window_ms: DEDUP_WINDOW_MS as u64;
}

/// An optional bounded setting: absent is off, a value is checked like the others.
fn de_max_event_lateness_ms<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    MAX_EVENT_LATENESS_MS.deserialize(deserializer).map(Some)
}

/// The effective configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub listen: String,
    pub redis_url: Option<String>,
    pub redis_cluster: bool,
    #[serde(deserialize_with = "de_redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    pub workspace: String,
    #[serde(deserialize_with = "de_partitions")]
    pub partitions: u32,
    pub journeys: Option<PathBuf>,
    pub journeys_url: Option<String>,
    pub instance: String,
    #[serde(deserialize_with = "de_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
    #[serde(deserialize_with = "de_timer_claim_ms")]
    pub timer_claim_ms: u64,
    pub scheduler_url: Option<String>,
    pub gateway_url: Option<String>,
    #[serde(deserialize_with = "de_hibernate_after_ms")]
    pub hibernate_after_ms: u64,
    #[serde(deserialize_with = "de_evict_after_ms")]
    pub evict_after_ms: u64,
    #[serde(deserialize_with = "de_threads")]
    pub threads: usize,
    #[serde(deserialize_with = "de_max_event_names")]
    pub max_event_names: usize,
    #[serde(deserialize_with = "de_max_trait_bytes")]
    pub max_trait_bytes: usize,
    #[serde(deserialize_with = "de_max_future_skew_ms")]
    pub max_future_skew_ms: u64,
    #[serde(deserialize_with = "de_max_event_lateness_ms")]
    pub max_event_lateness_ms: Option<u64>,
    #[serde(deserialize_with = "de_dedup_window_ms")]
    pub dedup_window_ms: u64,
    pub messages_out: Option<PathBuf>,
    pub admin_listen: Option<String>,
    pub ingest_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// The file of the internal token; the token itself is never part of the settings, so
    /// printing them cannot show it.
    pub internal_token_file: Option<PathBuf>,
    /// Which provider each channel uses, and their settings; credentials are named by file
    /// or environment variable, never written here.
    pub providers: beckon_gateway::ProvidersConfig,
    /// Where each setting came from, for errors; not a setting.
    #[serde(skip)]
    pub origins: Origins,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:50051".into(),
            redis_url: None,
            redis_cluster: false,
            redis_timeout_ms: super::redis_target::DEFAULT_TIMEOUT.as_millis() as u64,
            workspace: "default".into(),
            partitions: beckon_core::partition::DEFAULT_PARTITIONS,
            journeys: None,
            journeys_url: None,
            instance: format!("{}-{}", host_name(), std::process::id()),
            lease_ttl_ms: 5_000,
            timer_claim_ms: 30_000,
            scheduler_url: None,
            gateway_url: None,
            hibernate_after_ms: 600_000,
            evict_after_ms: 86_400_000,
            threads: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(THREADS.max as usize),
            max_event_names: beckon_core::state::MAX_EVENT_NAMES,
            max_trait_bytes: beckon_core::state::MAX_TRAIT_BYTES,
            max_future_skew_ms: beckon_ingest::grpc::MAX_FUTURE_SKEW.as_millis() as u64,
            max_event_lateness_ms: None,
            dedup_window_ms: DEFAULT_DEDUP_WINDOW_MS,
            messages_out: None,
            admin_listen: None,
            ingest_url: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            internal_token_file: None,
            providers: beckon_gateway::ProvidersConfig::default(),
            origins: Origins::default(),
        }
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "beckon".into())
}

impl Settings {
    /// Defaults, then the file named by `--config`, then environment and flags.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Settings> {
        let mut origins = Origins {
            given: args.given(),
            ..Origins::default()
        };
        let mut s: Settings = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                let read = beckon_journey::strict_yaml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                origins.file = Some((path.clone(), text));
                read
            }
            None => Settings::default(),
        };

        macro_rules! layer {
            ($field:ident) => {
                if let Some(v) = &args.$field {
                    s.$field = v.clone();
                }
            };
            (opt $field:ident) => {
                if let Some(v) = &args.$field {
                    s.$field = Some(v.clone());
                }
            };
        }
        layer!(listen);
        layer!(opt redis_url);
        layer!(redis_cluster);
        layer!(redis_timeout_ms);
        layer!(workspace);
        layer!(partitions);
        layer!(opt journeys);
        layer!(opt journeys_url);
        layer!(instance);
        layer!(lease_ttl_ms);
        layer!(timer_claim_ms);
        layer!(opt scheduler_url);
        layer!(opt gateway_url);
        layer!(hibernate_after_ms);
        layer!(evict_after_ms);
        layer!(threads);
        layer!(max_event_names);
        layer!(max_trait_bytes);
        layer!(max_future_skew_ms);
        layer!(opt max_event_lateness_ms);
        layer!(dedup_window_ms);
        layer!(opt messages_out);
        layer!(opt admin_listen);
        layer!(opt ingest_url);
        layer!(opt tls_cert);
        layer!(opt tls_key);
        layer!(opt tls_ca);
        layer!(opt internal_token_file);
        if let Some(path) = &args.providers {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            s.providers = beckon_journey::strict_yaml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            origins.providers_file = Some((path.clone(), text));
        }
        s.origins = origins;

        s.validate()?;
        Ok(s)
    }

    /// Checks every numeric setting against its range, and the settings that depend on each
    /// other. The layers check their own values as they are read; this catches a
    /// combination no single layer sees, and settings built in code.
    pub fn validate(&self) -> anyhow::Result<()> {
        let checks = [
            (REDIS_TIMEOUT_MS, self.redis_timeout_ms),
            (PARTITIONS, u64::from(self.partitions)),
            (LEASE_TTL_MS, self.lease_ttl_ms),
            (TIMER_CLAIM_MS, self.timer_claim_ms),
            (HIBERNATE_AFTER_MS, self.hibernate_after_ms),
            (EVICT_AFTER_MS, self.evict_after_ms),
            (THREADS, u64::try_from(self.threads).unwrap_or(u64::MAX)),
            (
                MAX_EVENT_NAMES,
                u64::try_from(self.max_event_names).unwrap_or(u64::MAX),
            ),
            (
                MAX_TRAIT_BYTES,
                u64::try_from(self.max_trait_bytes).unwrap_or(u64::MAX),
            ),
            (MAX_FUTURE_SKEW_MS, self.max_future_skew_ms),
            (DEDUP_WINDOW_MS, self.dedup_window_ms),
        ];
        let optional = [(MAX_EVENT_LATENESS_MS, self.max_event_lateness_ms)];
        let given = optional
            .into_iter()
            .filter_map(|(bounds, value)| Some((bounds, value?)));
        for (bounds, value) in checks.into_iter().chain(given) {
            bounds
                .check(value)
                .map_err(|e| anyhow::anyhow!("{}: {e}", bounds.name))?;
        }

        // Every API checks the workspace it is called with by this rule: a server started on
        // another name could take no call. The name is also part of every Redis key.
        if !beckon_core::ids::workspace_is_valid(&self.workspace) {
            let reason = format!("{:?}: {}", self.workspace, beckon_core::ids::WORKSPACE_RULE);
            return Err(self.origins.error("workspace", &reason));
        }

        // Reading a file checks the providers' values as it goes; these came from code, or
        // from a file read by something else.
        self.providers
            .validate()
            .map_err(|e| self.origins.providers_error(e))?;

        // A peer URL that is neither would otherwise fail only at the first call, long
        // after the process announced it was ready.
        let peers = [
            ("journeys_url", &self.journeys_url),
            ("scheduler_url", &self.scheduler_url),
            ("gateway_url", &self.gateway_url),
            ("ingest_url", &self.ingest_url),
        ];
        for (name, url) in peers {
            if let Some(url) = url {
                crate::grpc::check_peer_url(url)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", self.origins.name(name)))?;
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => anyhow::bail!("tls_key: needed with tls_cert, to serve TLS"),
            (None, Some(_)) => anyhow::bail!("tls_cert: needed with tls_key, to serve TLS"),
            _ => {}
        }
        // Read now even when no peer is https yet: a wrong file is found at start.
        let files = [
            ("tls_ca", &self.tls_ca, "CERTIFICATE"),
            ("tls_cert", &self.tls_cert, "CERTIFICATE"),
            ("tls_key", &self.tls_key, "PRIVATE KEY"),
        ];
        for (setting, path, kind) in files {
            if let Some(path) = path {
                crate::grpc::read_pem(&self.origins.name(setting), path, kind)?;
            }
        }

        // Read now, so a missing or unusable file is named before the port is taken.
        self.internal_token()?;

        // Eviction drops a user from memory, hibernation included: evicting first would
        // leave hibernation nothing to do, and every idle user would come back from Redis.
        if self.evict_after_ms < self.hibernate_after_ms {
            let evict = self.evict_after_ms;
            return Err(self.origins.contradiction(
                "evict_after_ms",
                |other| {
                    format!(
                        "{evict} is shorter than {other}; users must hibernate before they \
                         leave memory, so it must be at least as long"
                    )
                },
                "hibernate_after_ms",
                self.hibernate_after_ms,
            ));
        }
        Ok(())
    }

    /// The internal token, read from its file, when one is set.
    pub fn internal_token(&self) -> anyhow::Result<Option<InternalToken>> {
        let Some(path) = &self.internal_token_file else {
            return Ok(None);
        };
        let error = |reason: String| self.origins.error("internal_token_file", &reason);
        let text =
            std::fs::read(path).map_err(|e| error(format!("reading {}: {e}", path.display())))?;
        InternalToken::parse(&text)
            .map(Some)
            .map_err(|e| error(format!("{}: {e}", path.display())))
    }

    /// YAML of the effective configuration with secrets (passwords in URLs) hidden.
    pub fn printable(&self) -> String {
        // Provider credentials are only named (a file, a variable), so the providers section
        // prints as it is.
        let mut shown = self.clone();
        shown.redis_url = shown.redis_url.as_deref().map(hide_password);
        let p = &mut shown.providers;
        let urls = [
            p.webhook.as_mut().map(|w| &mut w.url),
            p.twilio.as_mut().map(|t| &mut t.base_url),
            p.apns.as_mut().map(|a| &mut a.endpoint),
            p.fcm.as_mut().map(|f| &mut f.endpoint),
        ];
        for url in urls.into_iter().flatten() {
            *url = hide_password(url);
        }
        serde_norway::to_string(&shown).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("beckon.yaml");
        std::fs::write(
            &file,
            "workspace: shop\npartitions: 16\nlisten: 0.0.0.0:7000\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(file),
            partitions: Some(8),
            ..ServeArgs::default()
        };
        let s = Settings::resolve(&args).expect("resolves");
        assert_eq!((s.workspace.as_str(), s.partitions), ("shop", 8));
        assert_eq!(s.listen, "0.0.0.0:7000");
        assert_eq!(
            s.lease_ttl_ms, 5_000,
            "untouched settings keep their default"
        );
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("beckon.yaml");
        std::fs::write(&file, "partitons: 16\n").expect("write");
        let args = ServeArgs {
            config: Some(file),
            ..ServeArgs::default()
        };
        let err = Settings::resolve(&args)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("partitons"), "{err}");
    }

    #[test]
    fn passwords_are_hidden_when_printed() {
        assert_eq!(
            hide_password("redis://:s3cret@127.0.0.1:6379"),
            "redis://:***@127.0.0.1:6379"
        );
        let s = Settings {
            redis_url: Some("redis://app:s3cret@10.1.2.3/0".into()),
            ..Settings::default()
        };
        assert!(!s.printable().contains("s3cret"));
        assert_eq!(
            hide_password("redis://:a@10.0.0.1:7000,redis://:b@10.0.0.2:7000"),
            "redis://:***@10.0.0.1:7000,redis://:***@10.0.0.2:7000"
        );
    }
}
