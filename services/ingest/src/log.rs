//! The partitioned event log: where ingest appends and user-state reads.
//!
//! An event goes to the partition of its user (`partition_of(workspace, user)`). Appending is
//! idempotent by message id within the dedup window: a repeated id is answered with the
//! offset of the first append and is not appended again, so a client may retry until it
//! hears back. Readers form a consumer group per partition; an entry stays pending until its
//! consumer acknowledges it (after the state write that applied it), and the entries of a
//! consumer that died are taken over by another with [`EventLog::reclaim`].
//!
//! [`RedisLog`] keeps the log in Redis Streams; [`MemoryLog`] is the embedded twin for tests,
//! replay and single-process runs.

mod memory;
mod redis;

pub use memory::MemoryLog;
pub use redis::{LogConfig, RedisLog};

use beckon_core::{Duration, Event};
use futures::future::BoxFuture;

use crate::error::IngestError;

/// What an append did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    /// The entry's offset (a stream id such as `1700000000000-0`).
    pub offset: String,
    /// True when the message id was appended before; `offset` is then the first append's.
    pub duplicate: bool,
}

/// One entry read from the log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    pub offset: String,
    pub workspace: String,
    /// The event, or why its stored form could not be read. A bad entry is handed out like
    /// any other, so the reader can acknowledge it (and report it) instead of stalling on it.
    pub event: Result<Event, String>,
    /// W3C trace context of the append, to link the reader's span to the ingest call.
    pub traceparent: Option<String>,
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

    /// Creates the consumer group of a partition, reading from the start, if it is missing.
    fn ensure_group<'a>(&'a self, consumer: &'a Consumer)
    -> BoxFuture<'a, Result<(), IngestError>>;

    /// Up to `count` entries never delivered to the group before, now pending for this
    /// consumer.
    fn read<'a>(
        &'a self,
        consumer: &'a Consumer,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IngestError>>;

    /// Up to `count` entries delivered to this consumer and not yet acknowledged, oldest
    /// first: what a restarted consumer of the same name must finish first.
    fn pending<'a>(
        &'a self,
        consumer: &'a Consumer,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IngestError>>;

    /// Acknowledges entries; returns how many were pending.
    fn ack<'a>(
        &'a self,
        consumer: &'a Consumer,
        offsets: &'a [String],
    ) -> BoxFuture<'a, Result<u64, IngestError>>;

    /// Takes over up to `count` entries pending for at least `min_idle` with any consumer of
    /// the group (typically one that died), and hands them to this consumer.
    fn reclaim<'a>(
        &'a self,
        consumer: &'a Consumer,
        min_idle: Duration,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IngestError>>;
}

fn decode_event(json: &[u8]) -> Result<Event, String> {
    serde_json::from_slice(json).map_err(|e| e.to_string())
}
