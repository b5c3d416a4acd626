//! The log in memory, with the same consumer-group behaviour as the Redis one.
//!
//! Idle times come from the injected clock, so tests of a dead consumer's take-over drive
//! time instead of sleeping. Acknowledged entries are removed; dedup ids are remembered up to
//! a count.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration as StdDuration;

use beckon_core::partition::partition_of;
use beckon_core::{Clock, Duration, Event, Forget, Timer, Trigger, Ts};
use futures::future::BoxFuture;
use tokio::sync::Notify;

use super::{Appended, Consumer, EventLog, LogEntry, fired_id};
use crate::error::IngestError;

pub struct MemoryLog {
    clock: Arc<dyn Clock>,
    partitions: u32,
    dedup_capacity: usize,
    inner: Mutex<Inner>,
    /// Woken on every append to a partition index (whatever the workspace): a spurious wake
    /// only costs a reader an empty look.
    wake: Vec<Notify>,
}

#[derive(Default)]
struct Inner {
    /// (workspace, message id) -> offset of the first append.
    seen: HashMap<(String, String), String>,
    seen_order: VecDeque<(String, String)>,
    parts: HashMap<(String, u32), Partition>,
}

#[derive(Default)]
struct Partition {
    next: u64,
    entries: BTreeMap<u64, Stored>,
    groups: HashMap<String, Group>,
}

struct Stored {
    workspace: String,
    trigger: Trigger,
    traceparent: Option<String>,
}

#[derive(Default)]
struct Group {
    /// Sequence number after the last entry delivered to the group.
    next: u64,
    /// Delivered, not acknowledged: sequence -> (consumer, delivered at).
    pending: BTreeMap<u64, (String, Ts)>,
}

impl MemoryLog {
    /// A log of `partitions` partitions remembering the last `dedup_capacity` message ids.
    pub fn new(clock: Arc<dyn Clock>, partitions: u32, dedup_capacity: usize) -> MemoryLog {
        MemoryLog {
            clock,
            partitions: partitions.max(1),
            dedup_capacity: dedup_capacity.max(1),
            inner: Mutex::new(Inner::default()),
            wake: (0..partitions.max(1)).map(|_| Notify::new()).collect(),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, IngestError> {
        self.inner
            .lock()
            .map_err(|_| IngestError::LogUnavailable("memory log lock poisoned".into()))
    }

    fn append_now(
        &self,
        workspace: &str,
        user: &str,
        dedup_id: Option<String>,
        trigger: Trigger,
        traceparent: Option<&str>,
    ) -> Result<Appended, IngestError> {
        let partition = partition_of(workspace, user, self.partitions);
        let appended = self.append_locked(workspace, partition, dedup_id, trigger, traceparent)?;
        if !appended.duplicate
            && let Some(wake) = self.wake.get(partition as usize)
        {
            wake.notify_waiters();
        }
        Ok(appended)
    }

    /// Appends under `dedup_id`, or without deduplication when it is `None`.
    fn append_locked(
        &self,
        workspace: &str,
        partition: u32,
        dedup_id: Option<String>,
        trigger: Trigger,
        traceparent: Option<&str>,
    ) -> Result<Appended, IngestError> {
        let mut inner = self.lock()?;
        let id = dedup_id.map(|d| (workspace.to_string(), d));
        if let Some(offset) = id.as_ref().and_then(|id| inner.seen.get(id)) {
            return Ok(Appended {
                partition,
                offset: offset.clone(),
                duplicate: true,
            });
        }

        let part = inner
            .parts
            .entry((workspace.to_string(), partition))
            .or_default();
        let seq = part.next;
        part.next += 1;
        part.entries.insert(
            seq,
            Stored {
                workspace: workspace.to_string(),
                trigger,
                traceparent: traceparent.map(str::to_string),
            },
        );
        let offset = offset_of(seq);

        if let Some(id) = id {
            if inner.seen_order.len() >= self.dedup_capacity
                && let Some(old) = inner.seen_order.pop_front()
            {
                inner.seen.remove(&old);
            }
            inner.seen.insert(id.clone(), offset.clone());
            inner.seen_order.push_back(id);
        }
        Ok(Appended {
            partition,
            offset,
            duplicate: false,
        })
    }

    /// Reads new entries; when there are none, waits until something is appended to the
    /// consumer's partition index or `block` ends, and looks once more.
    async fn read_waiting(
        &self,
        c: &Consumer,
        count: usize,
        block: Duration,
    ) -> Result<Vec<LogEntry>, IngestError> {
        let Some(wake) = self.wake.get(c.partition as usize) else {
            return self.read_now(c, count);
        };
        let notified = wake.notified();
        tokio::pin!(notified);
        // Registered before looking, so an append between the look and the wait still wakes.
        notified.as_mut().enable();
        let found = self.read_now(c, count)?;
        if !found.is_empty() || block.as_millis() <= 0 {
            return Ok(found);
        }
        let block = StdDuration::from_millis(block.as_millis() as u64);
        let _ = tokio::time::timeout(block, notified).await;
        self.read_now(c, count)
    }

    fn with_group<T>(
        &self,
        c: &Consumer,
        f: impl FnOnce(&BTreeMap<u64, Stored>, &mut Group) -> T,
    ) -> Result<T, IngestError> {
        let mut inner = self.lock()?;
        let part = inner
            .parts
            .entry((c.workspace.clone(), c.partition))
            .or_default();
        let group = part.groups.entry(c.group.clone()).or_default();
        Ok(f(&part.entries, group))
    }

    fn read_now(&self, c: &Consumer, count: usize) -> Result<Vec<LogEntry>, IngestError> {
        let now = self.clock.now();
        self.with_group(c, |entries, group| {
            let fresh: Vec<u64> = entries
                .range(group.next..)
                .take(count)
                .map(|(s, _)| *s)
                .collect();
            if let Some(last) = fresh.last() {
                group.next = last + 1;
            }
            for seq in &fresh {
                group.pending.insert(*seq, (c.name.clone(), now));
            }
            fresh.iter().filter_map(|s| entry(entries, *s)).collect()
        })
    }

    fn pending_now(&self, c: &Consumer, count: usize) -> Result<Vec<LogEntry>, IngestError> {
        self.with_group(c, |entries, group| {
            group
                .pending
                .iter()
                .filter(|(_, (owner, _))| *owner == c.name)
                .take(count)
                .filter_map(|(seq, _)| entry(entries, *seq))
                .collect()
        })
    }

    fn ack_now(&self, c: &Consumer, offsets: &[String]) -> Result<u64, IngestError> {
        let mut inner = self.lock()?;
        let Some(part) = inner.parts.get_mut(&(c.workspace.clone(), c.partition)) else {
            return Ok(0);
        };
        let Some(group) = part.groups.get_mut(&c.group) else {
            return Ok(0);
        };
        let mut acked = 0;
        for seq in offsets.iter().filter_map(|o| seq_of(o)) {
            if group.pending.remove(&seq).is_some() {
                acked += 1;
            }
            // Like XDEL: an acknowledged entry is gone, applied or not by other groups.
            part.entries.remove(&seq);
        }
        Ok(acked)
    }

    fn reclaim_now(
        &self,
        c: &Consumer,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<LogEntry>, IngestError> {
        let now = self.clock.now();
        self.with_group(c, |entries, group| {
            let idle: Vec<u64> = group
                .pending
                .iter()
                .filter(|(_, (_, at))| now.0.saturating_sub(at.0) >= min_idle.as_millis())
                .take(count)
                .map(|(seq, _)| *seq)
                .collect();
            for seq in &idle {
                group.pending.insert(*seq, (c.name.clone(), now));
            }
            idle.iter().filter_map(|s| entry(entries, *s)).collect()
        })
    }
}

fn offset_of(seq: u64) -> String {
    format!("{seq}-0")
}

fn seq_of(offset: &str) -> Option<u64> {
    offset.split('-').next()?.parse().ok()
}

fn entry(entries: &BTreeMap<u64, Stored>, seq: u64) -> Option<LogEntry> {
    entries.get(&seq).map(|s| LogEntry {
        offset: offset_of(seq),
        workspace: s.workspace.clone(),
        trigger: Ok(s.trigger.clone()),
        traceparent: s.traceparent.clone(),
    })
}

impl EventLog for MemoryLog {
    fn append<'a>(
        &'a self,
        workspace: &'a str,
        event: &'a Event,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Appended, IngestError>> {
        let result = self.append_now(
            workspace,
            &event.user,
            Some(format!("event:{}", event.message_id)),
            Trigger::Event(event.clone()),
            traceparent,
        );
        Box::pin(async move { result })
    }

    fn append_fired<'a>(
        &'a self,
        timer: &'a Timer,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Appended, IngestError>> {
        let result = self.append_now(
            &timer.workspace,
            &timer.user,
            Some(format!("timer:{}", fired_id(timer))),
            Trigger::Timer(timer.clone()),
            traceparent,
        );
        Box::pin(async move { result })
    }

    fn append_trigger<'a>(
        &'a self,
        workspace: &'a str,
        key: &'a str,
        trigger: &'a Trigger,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Appended, IngestError>> {
        let result = self.append_now(
            workspace,
            trigger.user(),
            Some(format!("forward:{key}")),
            trigger.clone(),
            traceparent,
        );
        Box::pin(async move { result })
    }

    fn append_forget<'a>(
        &'a self,
        workspace: &'a str,
        forget: &'a Forget,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Appended, IngestError>> {
        let result = self.append_now(
            workspace,
            &forget.user,
            None,
            Trigger::Forget(forget.clone()),
            traceparent,
        );
        Box::pin(async move { result })
    }

    fn ensure_group<'a>(
        &'a self,
        consumer: &'a Consumer,
    ) -> BoxFuture<'a, Result<(), IngestError>> {
        let result = self.with_group(consumer, |_, _| ());
        Box::pin(async move { result })
    }

    fn read<'a>(
        &'a self,
        consumer: &'a Consumer,
        count: usize,
        block: Duration,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IngestError>> {
        Box::pin(self.read_waiting(consumer, count, block))
    }

    fn pending<'a>(
        &'a self,
        consumer: &'a Consumer,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IngestError>> {
        let result = self.pending_now(consumer, count);
        Box::pin(async move { result })
    }

    fn ack<'a>(
        &'a self,
        consumer: &'a Consumer,
        offsets: &'a [String],
    ) -> BoxFuture<'a, Result<u64, IngestError>> {
        let result = self.ack_now(consumer, offsets);
        Box::pin(async move { result })
    }

    fn reclaim<'a>(
        &'a self,
        consumer: &'a Consumer,
        min_idle: Duration,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IngestError>> {
        let result = self.reclaim_now(consumer, min_idle, count);
        Box::pin(async move { result })
    }
    fn backlog<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<Option<u64>, IngestError>> {
        let result = self.lock().map(|inner| {
            let key = (workspace.to_string(), partition);
            Some(inner.parts.get(&key).map_or(0, |p| p.entries.len() as u64))
        });
        Box::pin(async move { result })
    }
}
