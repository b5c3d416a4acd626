//! Connections to Redis for the services: one server, or a Redis Cluster.
//!
//! Every store (log, state, leases, timers, idempotency keys) is generic over the connection,
//! and every multi-key command it sends names keys of one partition's hash tag, so the same
//! stores run on both. [`RedisConn`] lets one build of each store serve either deployment.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::Context as _;
use beckon_ingest::log::Connect;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, RetryMethod, Value,
};

use super::Settings;

/// How long a blocking log read may wait for its answer; well above the loop's block time,
/// so only a dead server ends a read with a timeout.
const READ_TIMEOUT: StdDuration = StdDuration::from_secs(10);

/// Answers slower than this count as failures on shared connections (the log's reads that
/// block have connections of their own).
const RESPONSE_TIMEOUT: StdDuration = StdDuration::from_secs(3);

/// Attempts to reach a Redis that is not up yet at start, and the waits between them (doubling
/// from the first to the last): about ten seconds in all, time for a server started beside the
/// process to come up, not so long that a wrong URL goes unnoticed.
const START_ATTEMPTS: u32 = 7;
const FIRST_RETRY_WAIT: StdDuration = StdDuration::from_millis(250);
const LAST_RETRY_WAIT: StdDuration = StdDuration::from_secs(3);

/// Where the Redis URL is set, for errors that ask an operator to check it.
const SETTING: &str =
    "the redis_url setting (--redis-url, BECKON_REDIS_URL or redis_url in the config file)";

/// A connection to a single server (reconnecting on its own) or to a Redis Cluster
/// (following slot moves on its own).
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where Redis is: the URL setting (several URLs separated by commas are a cluster's seed
/// nodes), and whether it is a cluster.
#[derive(Clone, Debug)]
pub struct RedisTarget {
    urls: Vec<String>,
    cluster: bool,
}

impl RedisTarget {
    /// A target from its URLs (a cluster's seed nodes when `cluster`).
    pub fn new(urls: Vec<String>, cluster: bool) -> RedisTarget {
        RedisTarget { urls, cluster }
    }

    /// The target the settings name, or none when they name no Redis.
    pub fn from_settings(settings: &Settings) -> Option<RedisTarget> {
        let urls: Vec<String> = settings
            .redis_url
            .as_deref()?
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
        if urls.is_empty() {
            return None;
        }
        let cluster = settings.redis_cluster || urls.len() > 1;
        Some(RedisTarget { urls, cluster })
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// A client for pub/sub: any node will do, since a cluster delivers every published
    /// message to every node's subscribers.
    pub fn pubsub_client(&self) -> anyhow::Result<redis::Client> {
        let url = self.urls.first().map_or("", String::as_str);
        redis::Client::open(url).context("opening a Redis client for pub/sub")
    }

    /// A shared connection for the stores. A server that is not reachable yet is tried again
    /// a few times, each retry logged with the URL (password hidden); an answer that will not
    /// change (a database it does not have, a wrong password) ends the start at once. The
    /// error names the URL and the setting it came from.
    pub async fn connect(&self) -> anyhow::Result<RedisConn> {
        self.check()?;
        let what = self.what();
        let url = super::config::hide_password(&self.urls.join(","));
        let mut wait = FIRST_RETRY_WAIT;
        let mut attempt = 1;
        loop {
            let e = match self.first_connection(RESPONSE_TIMEOUT).await {
                Ok(conn) => return Ok(conn),
                Err(e) => e,
            };
            if !worth_retrying(&e) || attempt == START_ATTEMPTS {
                let tries = if attempt == 1 {
                    String::new()
                } else {
                    format!(" after {attempt} attempts")
                };
                // The error's text only: its source is the same I/O error again, which a
                // printed chain of causes would repeat.
                anyhow::bail!("connecting to {what} at {url} failed{tries}: {e}; check {SETTING}");
            }
            tracing::warn!(
                attempt,
                attempts = START_ATTEMPTS,
                redis.url = %url,
                error = %e,
                retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "Redis not reachable; trying again"
            );
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(LAST_RETRY_WAIT);
            attempt += 1;
        }
    }

    /// Checks the URLs without connecting: each must parse as a Redis URL. The start runs it
    /// before anything else touches Redis, and `--print-config` runs it too.
    pub fn check(&self) -> anyhow::Result<()> {
        for url in &self.urls {
            if let Err(e) = redis::Client::open(url.as_str()) {
                let url = super::config::hide_password(url);
                anyhow::bail!(
                    "{} URL {url} is not valid: {e}; check {SETTING}",
                    self.what()
                );
            }
        }
        Ok(())
    }

    fn what(&self) -> &'static str {
        if self.cluster {
            "the Redis Cluster"
        } else {
            "Redis"
        }
    }

    /// Opens connections for the log's blocking reads, one per partition.
    pub fn reader_connector(&self) -> Connect<RedisConn> {
        let target = self.clone();
        Arc::new(move || {
            let target = target.clone();
            Box::pin(async move { target.open(READ_TIMEOUT).await })
        })
    }

    /// A connection, for the log's readers: a server that is not reachable is waited for, as
    /// the connection manager does on its own.
    async fn open(&self, response_timeout: StdDuration) -> RedisResult<RedisConn> {
        if self.cluster {
            return self.cluster_connection(response_timeout).await;
        }

        // The manager retries its first connection whatever went wrong, for seconds. A server
        // that is not up yet is worth that wait; one that answers with a refusal (a database
        // number it does not have, a wrong password) answers the same way every time, so one
        // plain attempt first lets that answer end the start at once.
        if let Err(e) = self.probe(response_timeout).await
            && !worth_retrying(&e)
        {
            return Err(e);
        }
        self.manager(response_timeout).await
    }

    /// One attempt at a connection: on a single server, a plain connection first, so that a
    /// server not reachable fails this attempt at once instead of inside the manager's own
    /// silent retries.
    async fn first_connection(&self, response_timeout: StdDuration) -> RedisResult<RedisConn> {
        if self.cluster {
            return self.cluster_connection(response_timeout).await;
        }
        self.probe(response_timeout).await?;
        self.manager(response_timeout).await
    }

    async fn cluster_connection(&self, response_timeout: StdDuration) -> RedisResult<RedisConn> {
        let client = ClusterClient::builder(self.urls.clone())
            .response_timeout(response_timeout)
            .build()?;
        Ok(RedisConn::Cluster(client.get_async_connection().await?))
    }

    fn client(&self) -> RedisResult<redis::Client> {
        redis::Client::open(self.urls.first().map_or("", String::as_str))
    }

    /// A plain connection to the single server, opened and dropped.
    async fn probe(&self, response_timeout: StdDuration) -> RedisResult<()> {
        let probe = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(response_timeout))
            .set_response_timeout(Some(response_timeout));
        self.client()?
            .get_multiplexed_async_connection_with_config(&probe)
            .await
            .map(drop)
    }

    async fn manager(&self, response_timeout: StdDuration) -> RedisResult<RedisConn> {
        let config = ConnectionManagerConfig::new().set_response_timeout(Some(response_timeout));
        let manager = self
            .client()?
            .get_connection_manager_with_config(config)
            .await?;
        Ok(RedisConn::Single(manager))
    }
}

/// Whether a failed connection attempt may succeed later: the server is not reachable yet (or
/// no longer), or it said to come back (still loading its data, a failover under way).
/// Anything else it answered is final.
fn worth_retrying(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || matches!(e.retry_method(), RetryMethod::WaitAndRetry)
}
