//! Configuration of `beckon serve`, layered: built-in defaults, then a YAML file, then
//! `BECKON_*` environment variables, then flags (each layer overrides the one before).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// Treat a single Redis URL as a Redis Cluster seed node.
    #[arg(long, env = "BECKON_REDIS_CLUSTER", num_args = 0..=1, default_missing_value = "true")]
    pub redis_cluster: Option<bool>,
    #[arg(long, env = "BECKON_WORKSPACE")]
    pub workspace: Option<String>,
    #[arg(long, env = "BECKON_PARTITIONS")]
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
    #[arg(long, env = "BECKON_LEASE_TTL_MS")]
    pub lease_ttl_ms: Option<u64>,
    /// How long a scheduler keeps a due timer it claimed before another firing round (its
    /// own after a restart, or another scheduler's) may fire it again.
    #[arg(long, env = "BECKON_TIMER_CLAIM_MS")]
    pub timer_claim_ms: Option<u64>,
    /// Scheduler service URL, for user-state running alone.
    #[arg(long, env = "BECKON_SCHEDULER_URL")]
    pub scheduler_url: Option<String>,
    /// Gateway service URL, for user-state running alone.
    #[arg(long, env = "BECKON_GATEWAY_URL")]
    pub gateway_url: Option<String>,
    /// Users with no trigger for this many milliseconds hibernate: their actor stops and
    /// their state stays in memory in compact form (default 10 minutes).
    #[arg(long, env = "BECKON_HIBERNATE_AFTER_MS")]
    pub hibernate_after_ms: Option<u64>,
    /// Users with no trigger for this many milliseconds leave memory; their next trigger
    /// reads them from Redis (default 24 hours).
    #[arg(long, env = "BECKON_EVICT_AFTER_MS")]
    pub evict_after_ms: Option<u64>,
    /// Actor threads.
    #[arg(long, env = "BECKON_THREADS")]
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
}

/// The effective configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub listen: String,
    pub redis_url: Option<String>,
    pub redis_cluster: bool,
    pub workspace: String,
    pub partitions: u32,
    pub journeys: Option<PathBuf>,
    pub journeys_url: Option<String>,
    pub instance: String,
    pub lease_ttl_ms: u64,
    pub timer_claim_ms: u64,
    pub scheduler_url: Option<String>,
    pub gateway_url: Option<String>,
    pub hibernate_after_ms: u64,
    pub evict_after_ms: u64,
    pub threads: usize,
    pub messages_out: Option<PathBuf>,
    pub admin_listen: Option<String>,
    pub ingest_url: Option<String>,
    /// Which provider each channel uses, and their settings; credentials are named by file
    /// or environment variable, never written here.
    pub providers: beckon_gateway::ProvidersConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:50051".into(),
            redis_url: None,
            redis_cluster: false,
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
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            messages_out: None,
            admin_listen: None,
            ingest_url: None,
            providers: beckon_gateway::ProvidersConfig::default(),
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
        let mut s = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                serde_norway::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
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
        layer!(opt messages_out);
        layer!(opt admin_listen);
        layer!(opt ingest_url);
        if let Some(path) = &args.providers {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            s.providers = serde_norway::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }

        if s.partitions == 0 {
            anyhow::bail!("partitions: must be at least 1");
        }
        Ok(s)
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

/// `redis://user:secret@host:6379/0` becomes `redis://user:***@host:6379/0`, in each URL of
/// a comma-separated list.
pub fn hide_password(urls: &str) -> String {
    urls.split(',')
        .map(hide_one_password)
        .collect::<Vec<_>>()
        .join(",")
}

fn hide_one_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((auth, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    let user = auth.split_once(':').map_or("", |(u, _)| u);
    format!("{scheme}://{user}:***@{host}")
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
