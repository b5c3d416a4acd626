//! The partitioned event log on Redis Streams.
//!
//! One stream per (workspace, partition): `bk:{<workspace>:<partition>}:log`, with the
//! partition in the hash tag so the stream and its dedup keys share a Redis Cluster slot.
//! An append and its message-id check are one script, so a repeated id is never appended
//! twice. Each partition has one consumer group and, because a partition has one owner at a
//! time (its lease), one consumer name per partition: a new owner reading pending entries
//! (`0`) first receives exactly what the previous owner read and never acknowledged.
//! Acknowledged entries are deleted, so the stream holds only unapplied work and needs no
//! length cap that could cut off unapplied entries.

use std::sync::Arc;

use beckon_core::partition::partition_of;
use beckon_core::{Event, Timer, Trigger};
use beckon_ingest::IngestError;
use beckon_ingest::grpc::{Appended, Appender};
use beckon_scheduler::SchedulerError;
use beckon_scheduler::firing::FiredSink;
use beckon_user_state::StateError;
use beckon_user_state::live::{LogEntry, PartitionLog};
use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::{Script, Value};
use tokio::sync::Mutex;

const GROUP: &str = "user-state";

/// Appends unless the message id was seen within the dedup window; returns the entry id, or
/// nil for a duplicate.
const APPEND: &str = r"
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[1], '*', 'k', ARGV[2], 'b', ARGV[3], 'tp', ARGV[4])
end
return false";

/// Acknowledges and deletes applied entries in one step.
const ACK: &str = r"
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))";

pub struct RedisLog {
    client: redis::Client,
    conn: MultiplexedConnection,
    partitions: u32,
    dedup_secs: u64,
    /// Blocking reads hold their connection; each partition gets one of its own.
    readers: Mutex<std::collections::HashMap<(String, u32), MultiplexedConnection>>,
    groups: Mutex<std::collections::HashSet<(String, u32)>>,
}

impl RedisLog {
    pub async fn connect(url: &str, partitions: u32) -> anyhow::Result<Arc<RedisLog>> {
        let client = redis::Client::open(url)?;
        let conn = client.get_multiplexed_async_connection().await?;
        Ok(Arc::new(RedisLog {
            client,
            conn,
            partitions: partitions.max(1),
            dedup_secs: 7 * 24 * 3600,
            readers: Mutex::new(Default::default()),
            groups: Mutex::new(Default::default()),
        }))
    }

    fn stream(workspace: &str, partition: u32) -> String {
        format!("bk:{{{workspace}:{partition}}}:log")
    }

    async fn push(
        &self,
        workspace: &str,
        partition: u32,
        kind: &str,
        body: &str,
        dedup_id: &str,
        traceparent: Option<&str>,
    ) -> redis::RedisResult<Option<String>> {
        let stream = Self::stream(workspace, partition);
        let dedup = format!("bk:{{{workspace}:{partition}}}:mid:{dedup_id}");
        let mut conn = self.conn.clone();
        Script::new(APPEND)
            .key(&stream)
            .key(&dedup)
            .arg(self.dedup_secs)
            .arg(kind)
            .arg(body)
            .arg(traceparent.unwrap_or(""))
            .invoke_async(&mut conn)
            .await
    }

    async fn ensure_group(
        &self,
        stream: &str,
        workspace: &str,
        partition: u32,
    ) -> Result<(), StateError> {
        let mut groups = self.groups.lock().await;
        if groups.contains(&(workspace.to_string(), partition)) {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.to_string().contains("BUSYGROUP") => {}
            Err(e) => return Err(StateError::Unavailable(e.to_string())),
        }
        groups.insert((workspace.to_string(), partition));
        Ok(())
    }

    async fn reader(
        &self,
        workspace: &str,
        partition: u32,
    ) -> Result<MultiplexedConnection, StateError> {
        let mut readers = self.readers.lock().await;
        if let Some(c) = readers.get(&(workspace.to_string(), partition)) {
            return Ok(c.clone());
        }
        let c = self
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| StateError::Unavailable(e.to_string()))?;
        readers.insert((workspace.to_string(), partition), c.clone());
        Ok(c)
    }
}

impl Appender for RedisLog {
    fn append<'a>(
        &'a self,
        workspace: &'a str,
        event: &'a Event,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Appended, IngestError>> {
        Box::pin(async move {
            let partition = partition_of(workspace, &event.user, self.partitions);
            let body = serde_json::to_string(event)
                .map_err(|e| IngestError::LogUnavailable(e.to_string()))?;
            let id = self
                .push(
                    workspace,
                    partition,
                    "e",
                    &body,
                    &event.message_id,
                    traceparent,
                )
                .await
                .map_err(|e| IngestError::LogUnavailable(e.to_string()))?;
            Ok(Appended {
                partition,
                duplicate: id.is_none(),
                offset: id.unwrap_or_default(),
            })
        })
    }
}

impl FiredSink for RedisLog {
    fn deliver<'a>(&'a self, timer: &'a Timer) -> BoxFuture<'a, Result<(), SchedulerError>> {
        Box::pin(async move {
            let partition = partition_of(&timer.workspace, &timer.user, self.partitions);
            let body = serde_json::to_string(timer)
                .map_err(|e| SchedulerError::Unavailable(e.to_string()))?;

            // A timer fired again after a scheduler crash is delivered again on purpose; the
            // actor drops it. The dedup key only guards against a retried append of the
            // same firing, keyed by timer and due time.
            let dedup = format!("t:{}:{}:{}", timer.user, timer.id, timer.due.as_millis());
            self.push(&timer.workspace, partition, "t", &body, &dedup, None)
                .await
                .map(|_| ())
                .map_err(|e| SchedulerError::Unavailable(e.to_string()))
        })
    }
}

fn parse_entries(reply: Value) -> Vec<LogEntry> {
    // XREADGROUP answers [[stream, [[id, [field, value, ...]], ...]]] (RESP2) or a map (RESP3).
    let mut out = Vec::new();
    let streams = match reply {
        Value::Array(s) => s,
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        _ => return out,
    };
    for stream in streams {
        let Value::Array(mut parts) = stream else {
            continue;
        };
        let Some(Value::Array(entries)) = parts.pop() else {
            continue;
        };
        for entry in entries {
            let Value::Array(mut e) = entry else { continue };
            let fields = e.pop();
            let Some(id) = e
                .pop()
                .and_then(|v| redis::from_redis_value::<String>(v).ok())
            else {
                continue;
            };
            let Some(Value::Array(fields)) = fields else {
                continue;
            };
            let mut kind = String::new();
            let mut body = String::new();
            let mut tp = String::new();
            for pair in fields.chunks(2) {
                let [k, v] = pair else { continue };
                let k: String = redis::from_redis_value(k.clone()).unwrap_or_default();
                let v: String = redis::from_redis_value(v.clone()).unwrap_or_default();
                match k.as_str() {
                    "k" => kind = v,
                    "b" => body = v,
                    "tp" => tp = v,
                    _ => {}
                }
            }
            let trigger = match kind.as_str() {
                "e" => serde_json::from_str::<Event>(&body)
                    .map(Trigger::Event)
                    .ok(),
                "t" => serde_json::from_str::<Timer>(&body)
                    .map(Trigger::Timer)
                    .ok(),
                _ => None,
            };
            match trigger {
                Some(trigger) => out.push(LogEntry {
                    id,
                    trigger,
                    traceparent: (!tp.is_empty()).then_some(tp),
                }),
                None => tracing::error!(entry = %id, "unreadable log entry skipped"),
            }
        }
    }
    out
}

impl PartitionLog for RedisLog {
    fn read<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
        max: usize,
        block_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, StateError>> {
        Box::pin(async move {
            let stream = Self::stream(workspace, partition);
            self.ensure_group(&stream, workspace, partition).await?;
            let consumer = format!("p{partition}");
            let mut conn = self.reader(workspace, partition).await?;
            let unavailable = |e: redis::RedisError| StateError::Unavailable(e.to_string());

            // Entries read before and never acknowledged come first, in order.
            let pending: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&consumer)
                .arg("COUNT")
                .arg(max)
                .arg("STREAMS")
                .arg(&stream)
                .arg("0")
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let pending = parse_entries(pending);
            if !pending.is_empty() {
                return Ok(pending);
            }

            let fresh: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&consumer)
                .arg("COUNT")
                .arg(max)
                .arg("BLOCK")
                .arg(block_ms.max(1))
                .arg("STREAMS")
                .arg(&stream)
                .arg(">")
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(parse_entries(fresh))
        })
    }

    fn ack<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(());
            }
            let mut conn = self.conn.clone();
            let script = Script::new(ACK);
            let mut invocation = script.prepare_invoke();
            invocation
                .key(Self::stream(workspace, partition))
                .arg(GROUP);
            for id in ids {
                invocation.arg(id);
            }
            let _: i64 = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|e| StateError::Unavailable(e.to_string()))?;
            Ok(())
        })
    }
}
