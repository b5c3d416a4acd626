//! The event log on Redis Streams: one stream per partition, `<ns>:{<workspace>:<p>}:log`.
//!
//! Entries have the fields `ws` (workspace), `ev` (the event as JSON) and `tp` (W3C
//! traceparent, empty when there is none). Deduplication and the append are one Lua script
//! over keys of the partition's slot, so a repeated message id can never be appended twice,
//! even by two ingest replicas racing, and the script works on Redis Cluster.
//!
//! Idle times for [`EventLog::reclaim`] are measured by the Redis server (XAUTOCLAIM), the
//! one clock every consumer of a stream shares.

use std::sync::LazyLock;

use ::redis::aio::ConnectionLike;
use ::redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use ::redis::{RedisError, Script};
use beckon_core::partition::partition_of;
use beckon_core::{Duration, Event};
use futures::future::BoxFuture;
use tracing::debug;

use super::{Appended, Consumer, EventLog, LogEntry, decode_event};
use crate::error::IngestError;

/// Settings of the Redis log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Key namespace (`bk` in production).
    pub namespace: String,
    pub partitions: u32,
    /// Approximate cap on entries per partition (`XADD MAXLEN ~`), or none. It must stay well
    /// above the largest expected consumer lag: trimmed entries are gone.
    pub max_len: Option<u64>,
    /// How long a message id is remembered for deduplication, in seconds.
    pub dedup_ttl_secs: u64,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            namespace: "bk".into(),
            partitions: beckon_core::partition::DEFAULT_PARTITIONS,
            max_len: Some(1_000_000),
            dedup_ttl_secs: 24 * 3600,
        }
    }
}

// KEYS: seen marker, log. ARGV: ttl secs, max len ('' for none), workspace, event, traceparent.
// The marker is set first with NX; it then holds the offset, so a duplicate is answered with
// the first append's offset.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if not redis.call('SET', KEYS[1], '', 'NX', 'EX', ARGV[1]) then
            return {0, redis.call('GET', KEYS[1])}
        end
        local id
        if ARGV[2] ~= '' then
            id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
                'ws', ARGV[3], 'ev', ARGV[4], 'tp', ARGV[5])
        else
            id = redis.call('XADD', KEYS[2], '*', 'ws', ARGV[3], 'ev', ARGV[4], 'tp', ARGV[5])
        end
        redis.call('SET', KEYS[1], id, 'XX', 'KEEPTTL')
        return {1, id}
        ",
    )
});

/// [`EventLog`] on Redis Streams, single node or Cluster.
#[derive(Clone)]
pub struct RedisLog<C> {
    con: C,
    config: LogConfig,
}

impl<C> RedisLog<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    pub fn new(con: C, config: LogConfig) -> RedisLog<C> {
        let mut config = config;
        config.partitions = config.partitions.max(1);
        config.dedup_ttl_secs = config.dedup_ttl_secs.max(1);
        RedisLog { con, config }
    }

    fn prefix(&self, workspace: &str, partition: u32) -> String {
        format!(
            "{}:{{{}:{partition}}}",
            self.config.namespace,
            escape(workspace)
        )
    }

    /// The stream key of a partition.
    pub fn stream(&self, workspace: &str, partition: u32) -> String {
        format!("{}:log", self.prefix(workspace, partition))
    }

    async fn append_event(
        &self,
        workspace: &str,
        event: &Event,
        traceparent: Option<&str>,
    ) -> Result<Appended, IngestError> {
        let partition = partition_of(workspace, &event.user, self.config.partitions);
        let prefix = self.prefix(workspace, partition);
        let seen = format!("{prefix}:seen:{}", escape(&event.message_id));
        let body = serde_json::to_vec(event)
            .map_err(|e| IngestError::LogUnavailable(format!("cannot encode event: {e}")))?;
        let max_len = self
            .config
            .max_len
            .map(|n| n.to_string())
            .unwrap_or_default();

        let mut con = self.con.clone();
        let (fresh, offset): (i64, String) = APPEND
            .key(seen)
            .key(format!("{prefix}:log"))
            .arg(self.config.dedup_ttl_secs)
            .arg(max_len)
            .arg(workspace)
            .arg(body)
            .arg(traceparent.unwrap_or(""))
            .invoke_async(&mut con)
            .await
            .map_err(unavailable)?;
        debug!(
            beckon.workspace = %workspace,
            beckon.partition = partition,
            messaging.message.id = %event.message_id,
            offset = %offset,
            duplicate = fresh == 0,
            "event appended"
        );
        Ok(Appended {
            partition,
            offset,
            duplicate: fresh == 0,
        })
    }

    async fn create_group(&self, c: &Consumer) -> Result<(), IngestError> {
        let mut con = self.con.clone();
        let created: Result<(), RedisError> = ::redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.stream(&c.workspace, c.partition))
            .arg(&c.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut con)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other.map_err(unavailable),
        }
    }

    /// Like [`EventLog::read`], but waits up to `block` for new entries when there are none,
    /// instead of returning at once, so an idle partition costs no polling.
    ///
    /// Redis answers a blocked read only when entries arrive or the time is up, and holds
    /// back every later command on the same connection meanwhile. Use a connection of its
    /// own for this, with a response timeout longer than `block` (a connection manager's
    /// default of 500 ms would cut the wait short and report an error).
    pub async fn read_blocking(
        &self,
        consumer: &Consumer,
        count: usize,
        block: Duration,
    ) -> Result<Vec<LogEntry>, IngestError> {
        self.read_group_blocking(consumer, ">", count, Some(block))
            .await
    }

    /// XREADGROUP from `start`: `>` for new entries, `0` for this consumer's pending ones.
    async fn read_group(
        &self,
        c: &Consumer,
        start: &str,
        count: usize,
    ) -> Result<Vec<LogEntry>, IngestError> {
        self.read_group_blocking(c, start, count, None).await
    }

    async fn read_group_blocking(
        &self,
        c: &Consumer,
        start: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<LogEntry>, IngestError> {
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&c.group)
            .arg(&c.name)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(block) = block {
            // BLOCK 0 would wait forever; a wait always ends.
            cmd.arg("BLOCK").arg(block.as_millis().max(1));
        }
        let mut con = self.con.clone();
        let reply: Option<StreamReadReply> = cmd
            .arg("STREAMS")
            .arg(self.stream(&c.workspace, c.partition))
            .arg(start)
            .query_async(&mut con)
            .await
            .map_err(unavailable)?;
        let ids = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect::<Vec<_>>();
        Ok(ids.iter().map(entry_of).collect())
    }

    async fn ack_offsets(&self, c: &Consumer, offsets: &[String]) -> Result<u64, IngestError> {
        if offsets.is_empty() {
            return Ok(0);
        }
        let mut con = self.con.clone();
        ::redis::cmd("XACK")
            .arg(self.stream(&c.workspace, c.partition))
            .arg(&c.group)
            .arg(offsets)
            .query_async(&mut con)
            .await
            .map_err(unavailable)
    }

    async fn autoclaim(
        &self,
        c: &Consumer,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<LogEntry>, IngestError> {
        let stream = self.stream(&c.workspace, c.partition);
        let mut con = self.con.clone();
        let mut start = "0-0".to_string();
        let mut out = Vec::new();
        // XAUTOCLAIM walks the pending list in pages; the cursor comes back as 0-0 at its end.
        loop {
            let reply: StreamAutoClaimReply = ::redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(&c.group)
                .arg(&c.name)
                .arg(min_idle.as_millis().max(0))
                .arg(&start)
                .arg("COUNT")
                .arg((count - out.len()).max(1))
                .query_async(&mut con)
                .await
                .map_err(unavailable)?;
            out.extend(reply.claimed.iter().map(entry_of));
            if reply.next_stream_id == "0-0" || out.len() >= count {
                break;
            }
            start = reply.next_stream_id;
        }
        if !out.is_empty() {
            debug!(
                beckon.workspace = %c.workspace,
                beckon.partition = c.partition,
                consumer = %c.name,
                reclaimed = out.len(),
                "log entries reclaimed"
            );
        }
        Ok(out)
    }
}

impl<C> EventLog for RedisLog<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn append<'a>(
        &'a self,
        workspace: &'a str,
        event: &'a Event,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Appended, IngestError>> {
        Box::pin(self.append_event(workspace, event, traceparent))
    }

    fn ensure_group<'a>(
        &'a self,
        consumer: &'a Consumer,
    ) -> BoxFuture<'a, Result<(), IngestError>> {
        Box::pin(self.create_group(consumer))
    }

    fn read<'a>(
        &'a self,
        consumer: &'a Consumer,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IngestError>> {
        Box::pin(self.read_group(consumer, ">", count))
    }

    fn pending<'a>(
        &'a self,
        consumer: &'a Consumer,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IngestError>> {
        Box::pin(self.read_group(consumer, "0", count))
    }

    fn ack<'a>(
        &'a self,
        consumer: &'a Consumer,
        offsets: &'a [String],
    ) -> BoxFuture<'a, Result<u64, IngestError>> {
        Box::pin(self.ack_offsets(consumer, offsets))
    }

    fn reclaim<'a>(
        &'a self,
        consumer: &'a Consumer,
        min_idle: Duration,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IngestError>> {
        Box::pin(self.autoclaim(consumer, min_idle, count))
    }
}

fn entry_of(id: &StreamId) -> LogEntry {
    let workspace: String = id.get("ws").unwrap_or_default();
    let body: Vec<u8> = id.get("ev").unwrap_or_default();
    let traceparent: String = id.get("tp").unwrap_or_default();
    LogEntry {
        offset: id.id.clone(),
        workspace,
        event: decode_event(&body),
        traceparent: Some(traceparent).filter(|t| !t.is_empty()),
    }
}

/// The same escaping as the scheduler's key layout (`beckon_scheduler::keys::escape`), so the
/// log, state and timers of a partition share one hash tag; a test in user-state checks it.
fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            ':' => out.push_str("%3A"),
            _ => out.push(c),
        }
    }
    out
}

fn unavailable(e: RedisError) -> IngestError {
    IngestError::LogUnavailable(e.to_string())
}
