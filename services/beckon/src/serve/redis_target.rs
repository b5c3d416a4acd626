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

    /// A shared connection for the stores.
    pub async fn connect(&self) -> anyhow::Result<RedisConn> {
        let what = if self.cluster {
            "the Redis Cluster"
        } else {
            "Redis"
        };
        self.open(RESPONSE_TIMEOUT)
            .await
            .with_context(|| format!("connecting to {what}"))
    }

    /// Opens connections for the log's blocking reads, one per partition.
    pub fn reader_connector(&self) -> Connect<RedisConn> {
        let target = self.clone();
        Arc::new(move || {
            let target = target.clone();
            Box::pin(async move { target.open(READ_TIMEOUT).await })
        })
    }

    async fn open(&self, response_timeout: StdDuration) -> RedisResult<RedisConn> {
        if self.cluster {
            let client = ClusterClient::builder(self.urls.clone())
                .response_timeout(response_timeout)
                .build()?;
            return Ok(RedisConn::Cluster(client.get_async_connection().await?));
        }
        let url = self.urls.first().map_or("", String::as_str);
        let client = redis::Client::open(url)?;

        // The manager retries its first connection whatever went wrong, for seconds. A server
        // that is not up yet is worth that wait; one that answers with a refusal (a database
        // number it does not have, a wrong password) answers the same way every time, so one
        // plain attempt first lets that answer end the start at once.
        let probe = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(response_timeout))
            .set_response_timeout(Some(response_timeout));
        if let Err(e) = client
            .get_multiplexed_async_connection_with_config(&probe)
            .await
            && !worth_retrying(&e)
        {
            return Err(e);
        }

        let config = ConnectionManagerConfig::new().set_response_timeout(Some(response_timeout));
        Ok(RedisConn::Single(
            client.get_connection_manager_with_config(config).await?,
        ))
    }
}

/// Whether a failed connection attempt may succeed later: the server is not reachable yet (or
/// no longer), or it said to come back (still loading its data, a failover under way).
/// Anything else it answered is final.
fn worth_retrying(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || matches!(e.retry_method(), RetryMethod::WaitAndRetry)
}
