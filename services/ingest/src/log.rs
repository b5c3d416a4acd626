//! The partitioned log: where ingest appends events, the scheduler appends fired timers, and
//! user-state reads both.
//!
//! An entry goes to the partition of its user (`partition_of(workspace, user)`), so a user's
//! events and timers reach its one owner in order. Appending is idempotent: an event by its
//! message id, a fired timer by (user, timer id, due time), within the dedup window. A repeat
//! is answered with the offset of the first append and is not appended again, so a client
//! may retry until it hears back.
//!
//! The order to forget a user goes through the same log ([`EventLog::append_forget`]), so the
//! partition's owner lets go of the user in log order: triggers appended before it apply to
//! the user as it was, triggers appended after it find an empty user.
//!
//! Readers form a consumer group per partition. An entry stays pending until its consumer
//! acknowledges it (after the state write that applied it); acknowledging also removes it,
//! so the log holds only work not yet applied. A restarted consumer of the same name finds
//! its pending entries with [`EventLog::pending`], and the entries of a consumer that died for
//! good are taken over by another with [`EventLog::reclaim`].
//!
//! [`RedisLog`] keeps the log in Redis Streams (single node or Cluster); [`MemoryLog`] is the
//! embedded twin for tests and single-process runs.

mod memory;
mod redis;

pub use memory::MemoryLog;
pub use redis::{Connect, LogConfig, RedisLog};

use beckon_core::{Duration, Event, Forget, Timer, Trigger};
use futures::future::BoxFuture;

use crate::error::IngestError;

/// What an append did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    /// The entry's offset (a stream id such as `1700000000000-0`).
    pub offset: String,
    /// True when the entry was appended before; `offset` is then the first append's.
    pub duplicate: bool,
}

/// One entry read from the log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    pub offset: String,
    pub workspace: String,
    /// The event or fired timer, or why its stored form could not be read. A bad entry is
    /// handed out like any other, so the reader can acknowledge it (and report it) instead
    /// of stalling on it.
    pub trigger: Result<Trigger, String>,
    /// W3C trace context of the append, to link the reader's span to the appending call.
    pub traceparent: Option<String>,
}

impl LogEntry {
    /// The event, when the entry holds one.
    pub fn event(&self) -> Option<&Event> {
        match &self.trigger {
            Ok(Trigger::Event(e)) => Some(e),
            _ => None,
        }
    }

    /// The fired timer, when the entry holds one.
    pub fn timer(&self) -> Option<&Timer> {
        match &self.trigger {
            Ok(Trigger::Timer(t)) => Some(t),
            _ => None,
        }
    }
}

/// A reader's place: which partition, which consumer group, which consumer in it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Consumer {
    pub workspace: String,
    pub partition: u32,
    pub group: String,
    pub name: String,
}

impl Consumer {
    pub fn new(workspace: &str, partition: u32, group: &str, name: &str) -> Consumer {
        Consumer {
            workspace: workspace.to_string(),
            partition,
            group: group.to_string(),
            name: name.to_string(),
        }
    }
}

pub trait EventLog: Send + Sync + 'static {
    /// Appends the event to its user's partition, unless its message id was appended within
    /// the dedup window. Returns only once the append is durable as configured.
    fn append<'a>(
        &'a self,
        workspace: &'a str,
        event: &'a Event,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Appended, IngestError>>;

    /// Appends events in order, each as [`EventLog::append`] would, answering each on its
    /// own. A log may send them together; by default they go one after another.
    fn append_all<'a>(
        &'a self,
        workspace: &'a str,
        events: &'a [Event],
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Vec<Result<Appended, IngestError>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(events.len());
            for event in events {
                out.push(self.append(workspace, event, traceparent).await);
            }
            out
        })
    }

    /// Appends a fired timer to its user's partition, unless this firing (user, timer id,
    /// due time) was appended within the dedup window: a retried delivery appends once.
    fn append_fired<'a>(
        &'a self,
        timer: &'a Timer,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Appended, IngestError>>;

    /// Appends fired timers as [`EventLog::append_fired`] does each, in order, with
    /// `traceparents[i]` for `timers[i]`; one result per timer. Logs on a server send them
    /// in few requests.
    fn append_fired_many<'a>(
        &'a self,
        timers: &'a [Timer],
        traceparents: &'a [Option<String>],
    ) -> BoxFuture<'a, Vec<Result<Appended, IngestError>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(timers.len());
            for (i, timer) in timers.iter().enumerate() {
                let tp = traceparents.get(i).and_then(|t| t.as_deref());
                out.push(self.append_fired(timer, tp).await);
            }
            out
        })
    }

    /// Appends a trigger one user's evaluation addressed to another user (a step of a merge,
    /// or what a merged id's tombstone passes on) to that user's partition, unless `key` was
    /// appended within the dedup window: a retried batch forwards the same trigger once.
    /// `traceparent` is the forwarding evaluation's context, continued by the reader.
    fn append_trigger<'a>(
        &'a self,
        workspace: &'a str,
        key: &'a str,
        trigger: &'a Trigger,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Appended, IngestError>>;

    /// Appends the order to forget a user to the user's partition, behind everything already
    /// appended there. Never deduplicated: a forget repeated by a retrying client only
    /// forgets again, and no marker naming the user is left behind.
    fn append_forget<'a>(
        &'a self,
        workspace: &'a str,
        forget: &'a Forget,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Appended, IngestError>>;

    /// Creates the consumer group of a partition, reading from the start, if it is missing.
    fn ensure_group<'a>(&'a self, consumer: &'a Consumer)
    -> BoxFuture<'a, Result<(), IngestError>>;

    /// Up to `count` entries never delivered to the group before, now pending for this
    /// consumer. When there are none, waits up to `block` for some (zero: answers at once).
    fn read<'a>(
        &'a self,
        consumer: &'a Consumer,
        count: usize,
        block: Duration,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IngestError>>;

    /// Up to `count` entries delivered to this consumer and not yet acknowledged, oldest
    /// first: what a restarted consumer of the same name must finish first.
    fn pending<'a>(
        &'a self,
        consumer: &'a Consumer,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IngestError>>;

    /// Acknowledges entries and removes them from the log; returns how many were pending.
    fn ack<'a>(
        &'a self,
        consumer: &'a Consumer,
        offsets: &'a [String],
    ) -> BoxFuture<'a, Result<u64, IngestError>>;

    /// Acknowledges like [`ack`](Self::ack) and answers, beside the count, the partition's
    /// backlog after it ([`backlog`](Self::backlog)): a partition that measures its lag after
    /// every batch then pays one round trip for both.
    fn ack_counting<'a>(
        &'a self,
        consumer: &'a Consumer,
        offsets: &'a [String],
    ) -> BoxFuture<'a, Result<(u64, Option<u64>), IngestError>> {
        Box::pin(async move {
            let acked = self.ack(consumer, offsets).await?;
            let backlog = self
                .backlog(&consumer.workspace, consumer.partition)
                .await?;
            Ok((acked, backlog))
        })
    }

    /// Takes over up to `count` entries pending for at least `min_idle` with any consumer of
    /// the group (typically one that died), and hands them to this consumer.
    fn reclaim<'a>(
        &'a self,
        consumer: &'a Consumer,
        min_idle: Duration,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IngestError>>;
    /// Entries of a partition not yet acknowledged (delivered or not): the partition's lag,
    /// since acknowledged entries leave the log. `None` when the log cannot count cheaply.
    fn backlog<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<Option<u64>, IngestError>> {
        let _ = (workspace, partition);
        Box::pin(async { Ok(None) })
    }
}

/// The dedup id of a fired timer: the same firing always gets the same id, and a timer set
/// again for another time gets a new one. Kept apart from message ids by the caller, so no
/// client-chosen message id can shadow a timer.
fn fired_id(timer: &Timer) -> String {
    format!("{}:{}:{}", timer.user, timer.id, timer.due.as_millis())
}

/// How an entry is stored: its kind and its body.
const KIND_EVENT: &str = "event";
const KIND_TIMER: &str = "timer";
/// Any trigger, tagged with its variant: the steps of a merge, forwarded triggers and
/// forgets.
const KIND_TRIGGER: &str = "trigger";

fn decode(kind: &str, body: &[u8]) -> Result<Trigger, String> {
    match kind {
        KIND_EVENT => serde_json::from_slice(body)
            .map(Trigger::Event)
            .map_err(|e| format!("event: {e}")),
        KIND_TIMER => serde_json::from_slice(body)
            .map(Trigger::Timer)
            .map_err(|e| format!("timer: {e}")),
        KIND_TRIGGER => serde_json::from_slice(body).map_err(|e| format!("trigger: {e}")),
        other => Err(format!("unknown entry kind {other:?}")),
    }
}
