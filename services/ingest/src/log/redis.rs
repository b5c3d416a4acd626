//! The log on Redis Streams: one stream per partition, `<ns>:{<workspace>:<p>}:log`.
//!
//! Entries have the fields `ws` (workspace), `kind` (`event`, `timer`, or `trigger` for a
//! trigger forwarded from another user, such as a step of a merge, and for a forget), `body`
//! (its JSON) and `tp` (W3C traceparent, empty when there is none). Deduplication and the
//! append are one Lua script over keys of the partition's slot (`...:seen:<message id>` for
//! events, `...:fired:<digest>` for timers, `...:fwd:<digest>` for forwarded triggers), so a
//! repeat can never be appended twice, even by two appenders racing, and the script works on
//! Redis Cluster. The markers of timers and forwarded triggers are named by the SHA-1 of their
//! dedup id, which names a user: a marker outlives a forgotten user by up to the dedup window
//! and must not carry the user's id. Forgets are not deduplicated and leave no marker.
//!
//! Appends are grouped on lanes: while one script call of a lane is in flight, the appends
//! that arrive for it wait, and then go together in the next call, which deduplicates and
//! appends each of them in arrival order and answers each with its own result. Under load that
//! makes one round trip and one script run for many events; an append that finds its lane idle
//! goes out at once. On a Redis Cluster a script may only name keys of one slot, so each
//! partition is a lane of its own; on a single server ([`RedisLog::spanning_partitions`]) a
//! workspace's partitions share one lane, so a call carries the appends of every partition
//! that has some waiting. Most of a small call's cost in Redis is the call itself (the
//! script's set-up and its argument tables), not its appends.
//!
//! Acknowledging an entry deletes it (XACK and XDEL in one script), so a stream holds only
//! entries not yet applied and needs no length cap: a cap would cut off unapplied work.
//!
//! Idle times for [`EventLog::reclaim`] are measured by the Redis server (XAUTOCLAIM), the
//! one clock every consumer of a stream shares.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, LazyLock, PoisonError};

use ::redis::aio::ConnectionLike;
use ::redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use ::redis::{RedisError, RedisResult, Script};
use ahash::AHashMap;
use beckon_core::partition::partition_of;
use beckon_core::{Duration, Event, Forget, Timer, Trigger};
use beckon_redis::resend_if_lost;
use futures::future::BoxFuture;
use tokio::sync::{Mutex, oneshot};
use tracing::{debug, warn};

use super::{
    Appended, Consumer, EventLog, KIND_EVENT, KIND_TIMER, KIND_TRIGGER, LogEntry, decode, fired_id,
};
use crate::error::IngestError;

/// Settings of the Redis log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Key namespace (`bk` in production).
    pub namespace: String,
    pub partitions: u32,
    /// Approximate cap on entries per partition (`XADD MAXLEN ~`), or none (the default).
    /// Acknowledged entries are deleted anyway; a cap only bounds a stalled partition, and
    /// what it trims is lost.
    pub max_len: Option<u64>,
    /// How long a message id is remembered for deduplication, in seconds.
    pub dedup_ttl_secs: u64,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            namespace: "bk".into(),
            partitions: beckon_core::partition::DEFAULT_PARTITIONS,
            max_len: None,
            dedup_ttl_secs: 24 * 3600,
        }
    }
}

/// Opens a new connection of the log's kind, for a partition's blocking reads.
pub type Connect<C> = Arc<dyn Fn() -> BoxFuture<'static, RedisResult<C>> + Send + Sync>;

/// The stored size of most events (a track with a few properties is 250 to 400 bytes).
const EVENT_BODY_BYTES: usize = 512;

/// Most appends one script call takes; a longer queue goes in several calls, so no call holds
/// Redis (which runs one script at a time) for long.
const MAX_GROUP: usize = 256;

// KEYS: per entry its partition's log, then its seen marker (the log again for an entry never
// deduplicated). ARGV: ttl secs, max len ('' for none), workspace, then kind, body and
// traceparent per entry.
// A marker holds the offset of its entry's first append, so a duplicate (also one earlier in
// the same call) is answered with that offset. Offsets are per stream: a duplicate's marker
// lies in its own partition, so the offset it holds is one of that partition's.
// The script runs atomically, so looking the marker up and setting it after the XADD cannot
// race with another append; a fresh entry costs one write to the marker, not two. Answers
// {fresh, offset} per entry, in order.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local out = {}
        for i = 1, #KEYS / 2 do
            local log, seen = KEYS[2 * i - 1], KEYS[2 * i]
            local a = 4 + (i - 1) * 3
            local dedup = seen ~= log
            local first = dedup and redis.call('GET', seen)
            if first then
                out[i] = {0, first}
            else
                local id
                if ARGV[2] ~= '' then
                    id = redis.call('XADD', log, 'MAXLEN', '~', ARGV[2], '*', 'ws', ARGV[3],
                        'kind', ARGV[a], 'body', ARGV[a + 1], 'tp', ARGV[a + 2])
                else
                    id = redis.call('XADD', log, '*', 'ws', ARGV[3],
                        'kind', ARGV[a], 'body', ARGV[a + 1], 'tp', ARGV[a + 2])
                end
                if dedup then redis.call('SET', seen, id, 'EX', ARGV[1]) end
                out[i] = {1, id}
            end
        end
        return out
        ",
    )
});

// KEYS: log. ARGV: group, offsets... Acknowledges, then deletes; answers XACK's count and
// the entries left, which are the partition's backlog since acknowledged entries go.
static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
        redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
        return {acked, redis.call('XLEN', KEYS[1])}
        ",
    )
});

/// Connections for blocking reads, one per partition: a blocked read holds its connection
/// until it is answered, and must not hold up anything else.
struct Readers<C> {
    connect: Connect<C>,
    open: Mutex<HashMap<(String, u32), C>>,
}

/// One append waiting for its partition's next script call.
struct Waiting {
    /// The partition's stream, when the lane is not that stream's alone (otherwise empty:
    /// the lane's key is the stream).
    stream: String,
    /// The marker's key, or the log's own for an entry never deduplicated.
    seen: String,
    kind: &'static str,
    body: Vec<u8>,
    traceparent: String,
    answer: oneshot::Sender<Result<(bool, String), String>>,
}

/// An entry on its lane, its answer to come.
struct Queued {
    partition: u32,
    answered: oneshot::Receiver<Result<(bool, String), String>>,
}

impl Queued {
    async fn appended(self) -> Result<Appended, IngestError> {
        let (fresh, offset) = self
            .answered
            .await
            .map_err(|_| IngestError::LogUnavailable("the append was abandoned".into()))?
            .map_err(IngestError::LogUnavailable)?;
        Ok(Appended {
            partition: self.partition,
            offset,
            duplicate: !fresh,
        })
    }
}

/// The appends of one partition not yet sent, and whether a call of it is in flight.
#[derive(Default)]
struct Lane {
    waiting: Vec<Waiting>,
    busy: bool,
}

/// Lanes by key: the stream's when each partition has a lane of its own, the workspace's when
/// its partitions share one. A lane exists only while it has appends in flight. Looked up for
/// every entry; the keys are ours, so a fast hash does.
type Lanes = std::sync::Mutex<AHashMap<String, Lane>>;

/// [`EventLog`] on Redis Streams, single node or Cluster.
#[derive(Clone)]
pub struct RedisLog<C> {
    con: C,
    config: LogConfig,
    readers: Option<Arc<Readers<C>>>,
    lanes: Arc<Lanes>,
    /// One lane per workspace instead of one per partition.
    spanning: bool,
}

impl<C> RedisLog<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    pub fn new(con: C, config: LogConfig) -> RedisLog<C> {
        let mut config = config;
        config.partitions = config.partitions.max(1);
        config.dedup_ttl_secs = config.dedup_ttl_secs.max(1);
        RedisLog {
            con,
            config,
            readers: None,
            lanes: Arc::default(),
            spanning: false,
        }
    }

    /// Lets one script call append to several partitions of a workspace. Only for a single
    /// Redis server: a Cluster refuses a script whose keys lie in several slots, and each
    /// partition has a slot of its own. Order within a partition is kept either way, since a
    /// lane sends its appends in arrival order, one call at a time.
    pub fn spanning_partitions(mut self) -> RedisLog<C> {
        self.spanning = true;
        self
    }

    /// Gives each partition's blocking reads a connection of its own, opened by `connect`
    /// on first use and again after an error. Its response timeout must be longer than the
    /// longest `block` asked for. Without this, blocking reads use the shared connection,
    /// which then answers nothing else while a read waits.
    pub fn with_readers(mut self, connect: Connect<C>) -> RedisLog<C> {
        self.readers = Some(Arc::new(Readers {
            connect,
            open: Mutex::new(HashMap::new()),
        }));
        self
    }

    /// Writes the keys' common part for a partition, `<ns>:{<workspace>:<p>}`, to `out`.
    fn write_prefix(&self, out: &mut String, workspace: &str, partition: u32) {
        use std::fmt::Write as _;

        out.push_str(&self.config.namespace);
        out.push_str(":{");
        write_escaped(out, workspace);
        // Writing to a String cannot fail.
        let _ = write!(out, ":{partition}}}");
    }

    /// The stream key of a partition.
    pub fn stream(&self, workspace: &str, partition: u32) -> String {
        let mut key = String::with_capacity(self.config.namespace.len() + workspace.len() + 16);
        self.write_prefix(&mut key, workspace, partition);
        key.push_str(":log");
        key
    }

    /// Queues the entry on its partition's lane and starts the lane's sender when it is
    /// idle. Queuing happens now, not when the answer is awaited, so entries queued one after
    /// another by one caller reach their partition in that order. `seen` names the entry's
    /// dedup marker within the partition, by its kind and its (unescaped) name; `None`
    /// appends it whatever came before.
    fn enqueue(
        &self,
        workspace: &str,
        user: &str,
        seen: Option<(&str, &str)>,
        kind: &'static str,
        body: Vec<u8>,
        traceparent: Option<&str>,
    ) -> Queued {
        let partition = partition_of(workspace, user, self.config.partitions);
        let stream = self.stream(workspace, partition);
        let seen = match seen {
            // `<prefix>:<kind>:<name>`, the stream's key without its `log`.
            Some((marker, name)) => {
                let prefix = &stream[..stream.len() - "log".len()];
                let mut key = String::with_capacity(prefix.len() + marker.len() + name.len() + 1);
                key.push_str(prefix);
                key.push_str(marker);
                key.push(':');
                write_escaped(&mut key, name);
                key
            }
            None => stream.clone(),
        };
        let (lane_key, stream) = if self.spanning {
            (workspace.to_string(), stream)
        } else {
            (stream, String::new())
        };
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            stream,
            seen,
            kind,
            body,
            traceparent: traceparent.unwrap_or("").to_string(),
            answer,
        };

        // The key goes into the map; a copy is made only for a sender that has to start.
        let idle = {
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            match lanes.entry(lane_key) {
                Entry::Occupied(mut lane) => {
                    let lane_was_busy = std::mem::replace(&mut lane.get_mut().busy, true);
                    lane.get_mut().waiting.push(waiting);
                    (!lane_was_busy).then(|| lane.key().clone())
                }
                Entry::Vacant(lane) => {
                    let stream = lane.key().clone();
                    lane.insert(Lane {
                        waiting: vec![waiting],
                        busy: true,
                    });
                    Some(stream)
                }
            }
        };
        if let Some(lane) = idle {
            // A task of its own, so a caller that goes away cannot strand the others.
            tokio::spawn(self.clone().send_lane(lane, workspace.to_string()));
        }
        Queued {
            partition,
            answered,
        }
    }

    async fn push(
        &self,
        workspace: &str,
        user: &str,
        seen: Option<(&str, &str)>,
        kind: &'static str,
        body: Vec<u8>,
        traceparent: Option<&str>,
    ) -> Result<Appended, IngestError> {
        self.enqueue(workspace, user, seen, kind, body, traceparent)
            .appended()
            .await
    }

    /// Sends a lane's queued appends, up to [`MAX_GROUP`] per script call, one call at a time,
    /// until the lane is empty; then removes it.
    async fn send_lane(self, lane: String, workspace: String) {
        let max_len = self
            .config
            .max_len
            .map(|n| n.to_string())
            .unwrap_or_default();
        loop {
            let group: Vec<Waiting> = {
                let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(waiting) = lanes.get_mut(&lane) else {
                    return;
                };
                if waiting.waiting.is_empty() {
                    lanes.remove(&lane);
                    return;
                }
                let n = waiting.waiting.len().min(MAX_GROUP);
                waiting.waiting.drain(..n).collect()
            };

            let mut call = APPEND.prepare_invoke();
            call.arg(self.config.dedup_ttl_secs)
                .arg(&max_len)
                .arg(&workspace);
            for w in &group {
                let stream = if w.stream.is_empty() {
                    &lane
                } else {
                    &w.stream
                };
                call.key(stream)
                    .key(&w.seen)
                    .arg(w.kind)
                    .arg(&w.body)
                    .arg(&w.traceparent);
            }
            // A connection that died under us (Redis restarted, a failover) is found by the
            // first command sent on it; the connection reconnects, and this call goes once
            // more rather than failing every caller of the group. Sending twice is safe: an
            // entry the first call appended is found by its marker and answered as a
            // duplicate with its offset.
            let answers: RedisResult<Vec<(i64, String)>> = resend_if_lost(&self.con, &call).await;

            match answers {
                Ok(answers) if answers.len() == group.len() => {
                    for (w, (fresh, offset)) in group.into_iter().zip(answers) {
                        // A caller that went away needs no answer.
                        let _ = w.answer.send(Ok((fresh == 1, offset)));
                    }
                }
                Ok(answers) => {
                    let why = format!(
                        "the append script answered {} entries for {}",
                        answers.len(),
                        group.len()
                    );
                    for w in group {
                        let _ = w.answer.send(Err(why.clone()));
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    for w in group {
                        let _ = w.answer.send(Err(why.clone()));
                    }
                }
            }
        }
    }

    fn queue_event(
        &self,
        workspace: &str,
        event: &Event,
        traceparent: Option<&str>,
    ) -> Result<Queued, IngestError> {
        // Room for a typical event up front, rather than growing the buffer twice to reach it.
        let mut body = Vec::with_capacity(EVENT_BODY_BYTES);
        serde_json::to_writer(&mut body, event)
            .map_err(|e| IngestError::LogUnavailable(format!("cannot encode event: {e}")))?;
        Ok(self.enqueue(
            workspace,
            &event.user,
            Some(("seen", &event.message_id)),
            KIND_EVENT,
            body,
            traceparent,
        ))
    }

    async fn append_event(
        &self,
        workspace: &str,
        event: &Event,
        traceparent: Option<&str>,
    ) -> Result<Appended, IngestError> {
        let appended = self
            .queue_event(workspace, event, traceparent)?
            .appended()
            .await?;
        event_appended(workspace, event, &appended);
        Ok(appended)
    }

    /// Queues every event before waiting for any answer, so the events of one partition go
    /// in as few script calls as the lane allows, in the order given.
    async fn append_events(
        &self,
        workspace: &str,
        events: &[Event],
        traceparent: Option<&str>,
    ) -> Vec<Result<Appended, IngestError>> {
        let queued: Vec<_> = events
            .iter()
            .map(|e| self.queue_event(workspace, e, traceparent))
            .collect();
        answers(events, queued, |event, a| {
            event_appended(workspace, event, a)
        })
        .await
    }

    fn queue_timer(&self, timer: &Timer, traceparent: Option<&str>) -> Result<Queued, IngestError> {
        let body = serde_json::to_vec(timer)
            .map_err(|e| IngestError::LogUnavailable(format!("cannot encode timer: {e}")))?;
        let name = digest(&fired_id(timer));
        Ok(self.enqueue(
            &timer.workspace,
            &timer.user,
            Some(("fired", &name)),
            KIND_TIMER,
            body,
            traceparent,
        ))
    }

    async fn append_timer(
        &self,
        timer: &Timer,
        traceparent: Option<&str>,
    ) -> Result<Appended, IngestError> {
        let appended = self.queue_timer(timer, traceparent)?.appended().await?;
        timer_appended(timer, &appended);
        Ok(appended)
    }

    /// Queues every fired timer before waiting for any answer, as `append_events` does, so
    /// a firing batch goes in as few script calls as its partition's lane allows.
    async fn append_timers(
        &self,
        timers: &[Timer],
        traceparents: &[Option<String>],
    ) -> Vec<Result<Appended, IngestError>> {
        let queued: Vec<_> = timers
            .iter()
            .enumerate()
            .map(|(i, t)| self.queue_timer(t, traceparents.get(i).and_then(|t| t.as_deref())))
            .collect();
        answers(timers, queued, timer_appended).await
    }

    async fn append_forwarded(
        &self,
        workspace: &str,
        key: &str,
        trigger: &Trigger,
        traceparent: Option<&str>,
    ) -> Result<Appended, IngestError> {
        let body = serde_json::to_vec(trigger)
            .map_err(|e| IngestError::LogUnavailable(format!("cannot encode trigger: {e}")))?;
        let name = digest(key);
        let appended = self
            .push(
                workspace,
                trigger.user(),
                Some(("fwd", &name)),
                KIND_TRIGGER,
                body,
                traceparent,
            )
            .await?;
        debug!(
            beckon.workspace = %workspace,
            beckon.partition = appended.partition,
            key,
            offset = %appended.offset,
            duplicate = appended.duplicate,
            "forwarded trigger appended"
        );
        Ok(appended)
    }

    async fn append_forget_entry(
        &self,
        workspace: &str,
        forget: &Forget,
        traceparent: Option<&str>,
    ) -> Result<Appended, IngestError> {
        let trigger = Trigger::Forget(forget.clone());
        let body = serde_json::to_vec(&trigger)
            .map_err(|e| IngestError::LogUnavailable(format!("cannot encode forget: {e}")))?;
        let appended = self
            .push(
                workspace,
                &forget.user,
                None,
                KIND_TRIGGER,
                body,
                traceparent,
            )
            .await?;
        debug!(
            beckon.workspace = %workspace,
            beckon.partition = appended.partition,
            offset = %appended.offset,
            "forget appended"
        );
        Ok(appended)
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

    /// XREADGROUP from `start` (`>` for new entries, `0` for this consumer's pending ones),
    /// waiting up to `block` when there is nothing. A group lost with the server's data (a
    /// restart without persistence) is created again.
    async fn read_group(
        &self,
        c: &Consumer,
        start: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<LogEntry>, IngestError> {
        match self.read_once(c, start, count, block).await {
            Err(e) if e.code() == Some("NOGROUP") => {
                warn!(
                    beckon.workspace = %c.workspace,
                    beckon.partition = c.partition,
                    group = %c.group,
                    "consumer group missing; creating it again"
                );
                self.create_group(c).await?;
                self.read_once(c, start, count, block)
                    .await
                    .map_err(unavailable)
            }
            other => other.map_err(unavailable),
        }
    }

    async fn read_once(
        &self,
        c: &Consumer,
        start: &str,
        count: usize,
        block: Duration,
    ) -> RedisResult<Vec<LogEntry>> {
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&c.group)
            .arg(&c.name)
            .arg("COUNT")
            .arg(count.max(1));
        let blocking = block.as_millis() > 0 && start == ">";
        if blocking {
            // BLOCK 0 would wait forever; a wait always ends.
            cmd.arg("BLOCK").arg(block.as_millis());
        }
        cmd.arg("STREAMS")
            .arg(self.stream(&c.workspace, c.partition))
            .arg(start);

        let reply: Option<StreamReadReply> = match (&self.readers, blocking) {
            (Some(readers), true) => {
                let key = (c.workspace.clone(), c.partition);
                let mut con = readers.take(&key).await?;
                let reply = cmd.query_async(&mut con).await;
                // A connection that failed may be broken: the next read opens a new one.
                if reply.is_ok() {
                    readers.put(key, con).await;
                }
                reply?
            }
            _ => {
                let mut con = self.con.clone();
                cmd.query_async(&mut con).await?
            }
        };
        let ids = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect::<Vec<_>>();
        Ok(ids.iter().map(entry_of).collect())
    }

    /// Acknowledges and deletes `offsets`; answers how many were pending and the entries left.
    async fn ack_offsets(
        &self,
        c: &Consumer,
        offsets: &[String],
    ) -> Result<(u64, Option<u64>), IngestError> {
        if offsets.is_empty() {
            return Ok((0, None));
        }
        let mut con = self.con.clone();
        let mut ack = ACK.prepare_invoke();
        ack.key(self.stream(&c.workspace, c.partition))
            .arg(&c.group);
        for offset in offsets {
            ack.arg(offset);
        }
        let (acked, left): (u64, u64) = ack.invoke_async(&mut con).await.map_err(unavailable)?;
        Ok((acked, Some(left)))
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

    fn append_all<'a>(
        &'a self,
        workspace: &'a str,
        events: &'a [Event],
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Vec<Result<Appended, IngestError>>> {
        Box::pin(self.append_events(workspace, events, traceparent))
    }

    fn append_fired<'a>(
        &'a self,
        timer: &'a Timer,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Appended, IngestError>> {
        Box::pin(self.append_timer(timer, traceparent))
    }

    fn append_fired_many<'a>(
        &'a self,
        timers: &'a [Timer],
        traceparents: &'a [Option<String>],
    ) -> BoxFuture<'a, Vec<Result<Appended, IngestError>>> {
        Box::pin(self.append_timers(timers, traceparents))
    }

    fn append_trigger<'a>(
        &'a self,
        workspace: &'a str,
        key: &'a str,
        trigger: &'a Trigger,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Appended, IngestError>> {
        Box::pin(self.append_forwarded(workspace, key, trigger, traceparent))
    }

    fn append_forget<'a>(
        &'a self,
        workspace: &'a str,
        forget: &'a Forget,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Appended, IngestError>> {
        Box::pin(self.append_forget_entry(workspace, forget, traceparent))
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
        block: Duration,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IngestError>> {
        Box::pin(self.read_group(consumer, ">", count, block))
    }

    fn pending<'a>(
        &'a self,
        consumer: &'a Consumer,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IngestError>> {
        Box::pin(self.read_group(consumer, "0", count, Duration(0)))
    }

    fn ack<'a>(
        &'a self,
        consumer: &'a Consumer,
        offsets: &'a [String],
    ) -> BoxFuture<'a, Result<u64, IngestError>> {
        Box::pin(async move { Ok(self.ack_offsets(consumer, offsets).await?.0) })
    }

    fn ack_counting<'a>(
        &'a self,
        consumer: &'a Consumer,
        offsets: &'a [String],
    ) -> BoxFuture<'a, Result<(u64, Option<u64>), IngestError>> {
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

    /// Acknowledged entries are deleted, so the stream's length is what is left to apply.
    fn backlog<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<Option<u64>, IngestError>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let n: u64 = ::redis::cmd("XLEN")
                .arg(self.stream(workspace, partition))
                .query_async(&mut con)
                .await
                .map_err(unavailable)?;
            Ok(Some(n))
        })
    }
}

fn event_appended(workspace: &str, event: &Event, appended: &Appended) {
    debug!(
        beckon.workspace = %workspace,
        beckon.partition = appended.partition,
        messaging.message.id = %event.message_id,
        offset = %appended.offset,
        duplicate = appended.duplicate,
        "event appended"
    );
}

impl<C: Clone> Readers<C> {
    /// The partition's reader connection, opened when there is none. It is taken out while
    /// in use, so two reads of one partition never share it.
    async fn take(&self, key: &(String, u32)) -> RedisResult<C> {
        if let Some(con) = self.open.lock().await.remove(key) {
            return Ok(con);
        }
        (self.connect)().await
    }

    async fn put(&self, key: (String, u32), con: C) {
        self.open.lock().await.insert(key, con);
    }
}

/// Waits for each queued append in order, noting every one that went in.
async fn answers<T>(
    items: &[T],
    queued: Vec<Result<Queued, IngestError>>,
    noted: impl Fn(&T, &Appended),
) -> Vec<Result<Appended, IngestError>> {
    let mut out = Vec::with_capacity(items.len());
    for (item, q) in items.iter().zip(queued) {
        let appended = match q {
            Ok(q) => q.appended().await,
            Err(e) => Err(e),
        };
        if let Ok(a) = &appended {
            noted(item, a);
        }
        out.push(appended);
    }
    out
}

fn entry_of(id: &StreamId) -> LogEntry {
    let workspace: String = id.get("ws").unwrap_or_default();
    let kind: String = id.get("kind").unwrap_or_default();
    let body: Vec<u8> = id.get("body").unwrap_or_default();
    let traceparent: String = id.get("tp").unwrap_or_default();
    LogEntry {
        offset: id.id.clone(),
        workspace,
        trigger: decode(&kind, &body),
        traceparent: Some(traceparent).filter(|t| !t.is_empty()),
    }
}

/// Writes `part` to `out` with the same escaping as the scheduler's key layout (`beckon_scheduler::keys::escape`), so the
/// log, state and timers of a partition share one hash tag; a test in user-state checks it.
fn write_escaped(out: &mut String, part: &str) {
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            ':' => out.push_str("%3A"),
            _ => out.push(c),
        }
    }
}

/// The name a marker gets for a dedup id that names a user: its SHA-1 in hex, the same for
/// every appender, and no longer the user's id.
fn digest(id: &str) -> String {
    sha1_smol::Sha1::from(id).digest().to_string()
}

fn timer_appended(timer: &Timer, appended: &Appended) {
    debug!(
        beckon.workspace = %timer.workspace,
        beckon.partition = appended.partition,
        beckon.timer.id = %timer.id,
        offset = %appended.offset,
        duplicate = appended.duplicate,
        "fired timer appended"
    );
}

fn unavailable(e: RedisError) -> IngestError {
    IngestError::LogUnavailable(e.to_string())
}
