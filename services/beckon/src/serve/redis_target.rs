//! Connections to Redis for the services: one server, or a Redis Cluster.
//!
//! Every store (log, state, leases, timers, idempotency keys) is generic over the connection,
//! and every multi-key command it sends names keys of one partition's hash tag, so the same
//! stores run on both. [`RedisConn`] lets one build of each store serve either deployment.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::Context as _;
use beckon_ingest::log::Connect;
use beckon_redis::connection_lost;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, RetryMethod, Value,
};
use tokio::sync::watch;

use super::Settings;

/// How long a blocking log read may wait for its answer; well above the loop's block time,
/// so only a dead server ends a read with a timeout.
const READ_TIMEOUT: StdDuration = StdDuration::from_secs(10);

/// How long a command on a shared connection may take, the wait for a connection included,
/// unless the `redis_timeout_ms` setting says otherwise.
pub const DEFAULT_TIMEOUT: StdDuration = StdDuration::from_secs(3);

/// How often the health check sends Redis a PING.
const PING_EVERY: StdDuration = StdDuration::from_secs(1);

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
/// (following slot moves on its own), whose every command ends within a deadline.
///
/// A connection manager that lost its server makes each command wait for its reconnection,
/// retried with growing pauses for many seconds; a caller with a deadline of its own, or a
/// readiness probe, needs the answer sooner. With the deadline a command fails with a timeout
/// once it has waited that long, for a connection or for the answer, and the reconnection goes
/// on in the background for the commands that follow.
#[derive(Clone)]
pub struct RedisConn {
    link: Link,
    deadline: StdDuration,
}

#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// A plain connection, which never reconnects: the health check's own.
    Plain(MultiplexedConnection),
}

impl RedisConn {
    fn new(link: Link, deadline: StdDuration) -> RedisConn {
        RedisConn { link, deadline }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let deadline = self.deadline;
        let answer = match &mut self.link {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
            Link::Plain(c) => c.req_packed_command(cmd),
        };
        Box::pin(within(deadline, answer))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let deadline = self.deadline;
        let answer = match &mut self.link {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Plain(c) => c.req_packed_commands(pipeline, offset, count),
        };
        Box::pin(within(deadline, answer))
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
            Link::Plain(c) => c.get_db(),
        }
    }
}

/// `answer`, or a timeout error once `deadline` has passed without it.
async fn within<T>(
    deadline: StdDuration,
    answer: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match tokio::time::timeout(deadline, answer).await {
        // The connection's own response timeout is the same length and often ends first;
        // either way the caller learns which setting bounds the wait.
        Ok(Err(e)) if e.is_timeout() => Err(timed_out(deadline)),
        Ok(answered) => answered,
        Err(_) => Err(timed_out(deadline)),
    }
}

/// The error of a command that got no answer in time: an I/O timeout, as the client's own
/// response timeout reports it, so every check of a lost server treats both alike.
fn timed_out(deadline: StdDuration) -> RedisError {
    let ms = deadline.as_millis();
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("Redis did not answer within {ms} ms (redis_timeout_ms)"),
    ))
}

/// Where Redis is: the URL setting (several URLs separated by commas are a cluster's seed
/// nodes), and whether it is a cluster.
#[derive(Clone, Debug)]
pub struct RedisTarget {
    urls: Vec<String>,
    cluster: bool,
    /// How long a command on a shared connection may take, the wait for a connection
    /// included.
    timeout: StdDuration,
}

impl RedisTarget {
    /// A target from its URLs (a cluster's seed nodes when `cluster`), with the default
    /// command timeout.
    pub fn new(urls: Vec<String>, cluster: bool) -> RedisTarget {
        RedisTarget {
            urls,
            cluster,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same target, its shared connections' commands ending within `timeout`.
    pub fn with_timeout(self, timeout: StdDuration) -> RedisTarget {
        RedisTarget { timeout, ..self }
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
        let timeout = StdDuration::from_millis(settings.redis_timeout_ms);
        Some(RedisTarget::new(urls, cluster).with_timeout(timeout))
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
            let e = match self.first_connection(self.timeout).await {
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
        let link = Link::Cluster(client.get_async_connection().await?);
        Ok(RedisConn::new(link, response_timeout))
    }

    fn client(&self) -> RedisResult<redis::Client> {
        redis::Client::open(self.urls.first().map_or("", String::as_str))
    }

    /// A plain connection to the single server, opened and dropped.
    async fn probe(&self, response_timeout: StdDuration) -> RedisResult<()> {
        self.plain(response_timeout).await.map(drop)
    }

    /// A plain connection to the single server, which does not reconnect.
    async fn plain(&self, response_timeout: StdDuration) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(response_timeout))
            .set_response_timeout(Some(response_timeout));
        self.client()?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    async fn manager(&self, response_timeout: StdDuration) -> RedisResult<RedisConn> {
        let config = ConnectionManagerConfig::new().set_response_timeout(Some(response_timeout));
        let manager = self
            .client()?
            .get_connection_manager_with_config(config)
            .await?;
        Ok(RedisConn::new(Link::Single(manager), response_timeout))
    }

    /// Whether Redis answers, as the health service reports it: a task sends a PING every
    /// second on a connection of its own, and the answer (`true` at first, since the start
    /// has just connected) changes when a PING goes unanswered within the command timeout, or
    /// is answered again. Each change is logged once. The task ends when every receiver is
    /// gone.
    pub fn watch_reachable(&self) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(true);
        tokio::spawn(self.clone().keep_pinging(tx));
        rx
    }

    async fn keep_pinging(self, tx: watch::Sender<bool>) {
        let url = super::config::hide_password(&self.urls.join(","));
        let mut conn = None;
        let mut ticks = tokio::time::interval(PING_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = tx.closed() => return,
            }

            let answered = self.ping(&mut conn).await;
            let reachable = answered.is_ok();
            if reachable == *tx.borrow() {
                continue;
            }
            match answered {
                Ok(()) => tracing::info!(redis.url = %url, "Redis answers again; serving"),
                Err(e) => tracing::warn!(
                    redis.url = %url,
                    error = %e,
                    "Redis does not answer; reporting not serving until it does"
                ),
            }
            tx.send_replace(reachable);
        }
    }

    /// One PING, each step within the timeout, on the connection kept from the last one that
    /// was answered, or on a new one. The connection is kept only while it answers: one that
    /// failed may be half dead.
    ///
    /// A kept connection that turns out lost says nothing of Redis now: it died with the Redis
    /// that was there when it was opened (a restart, a failover). Redis answers when a new
    /// connection's PING is answered, so a restart that is over is not reported as an outage.
    async fn ping(&self, conn: &mut Option<RedisConn>) -> RedisResult<()> {
        if let Some(mut kept) = conn.take() {
            match redis::cmd("PING").query_async::<()>(&mut kept).await {
                Ok(()) => {
                    *conn = Some(kept);
                    return Ok(());
                }
                Err(e) if connection_lost(&e) => {}
                Err(e) => return Err(e),
            }
        }

        let mut fresh = within(self.timeout, self.ping_connection()).await?;
        redis::cmd("PING").query_async::<()>(&mut fresh).await?;
        *conn = Some(fresh);
        Ok(())
    }

    async fn ping_connection(&self) -> RedisResult<RedisConn> {
        if self.cluster {
            return self.cluster_connection(self.timeout).await;
        }
        let plain = self.plain(self.timeout).await?;
        Ok(RedisConn::new(Link::Plain(plain), self.timeout))
    }
}

/// Whether a failed connection attempt may succeed later: the server is not reachable yet (or
/// no longer), or it said to come back (still loading its data, a failover under way).
/// Anything else it answered is final.
fn worth_retrying(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || matches!(e.retry_method(), RetryMethod::WaitAndRetry)
}

#[cfg(test)]
mod tests {
    use beckon_testkit::RedisServer;

    use super::*;

    #[tokio::test]
    async fn a_restart_that_is_over_is_not_reported_as_an_outage() {
        let mut redis = RedisServer::start_own(Default::default()).expect("redis-server");
        let target = RedisTarget::new(vec![redis.url()], false);
        let mut conn = None;
        target.ping(&mut conn).await.expect("first ping");
        assert!(conn.is_some(), "the answered connection is kept");

        // The kept connection died with the old server; the new one answers.
        redis.restart().expect("restart redis");
        target
            .ping(&mut conn)
            .await
            .expect("the first ping after the restart");

        // Down is still down.
        redis.kill();
        assert!(target.ping(&mut conn).await.is_err());
        assert!(conn.is_none(), "a connection that failed is not kept");
    }
}
