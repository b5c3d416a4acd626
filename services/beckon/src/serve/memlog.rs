//! The embedded event log: per-partition queues in memory, for `serve all` without Redis and
//! for tests. It has the same contract as the Redis Streams log: appends are deduplicated by
//! message id, reads return unacknowledged entries first, and acknowledged entries are gone.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use beckon_core::partition::partition_of;
use beckon_core::{Event, Timer, Trigger};
use beckon_ingest::grpc::{Appended, Appender};
use beckon_ingest::{Deduper, IngestError, MemoryDeduper};
use beckon_scheduler::SchedulerError;
use beckon_scheduler::firing::FiredSink;
use beckon_user_state::StateError;
use beckon_user_state::live::{LogEntry, PartitionLog};
use futures::future::BoxFuture;
use tokio::sync::Notify;

/// Message ids remembered for deduplication.
const DEDUP_CAPACITY: usize = 1_000_000;

#[derive(Default)]
struct Partition {
    entries: VecDeque<LogEntry>,
    next_seq: u64,
}

/// Partitions by (workspace, partition), and the message ids seen.
type Shared = (HashMap<(String, u32), Partition>, MemoryDeduper);

pub struct MemoryLog {
    partitions: u32,
    state: Mutex<Shared>,
    /// One notifier per partition index, shared by workspaces: a spurious wake-up only costs
    /// an empty read.
    wake: Vec<Arc<Notify>>,
}

impl MemoryLog {
    pub fn new(partitions: u32) -> MemoryLog {
        let partitions = partitions.max(1);
        MemoryLog {
            partitions,
            state: Mutex::new((HashMap::new(), MemoryDeduper::new(DEDUP_CAPACITY))),
            wake: (0..partitions).map(|_| Arc::new(Notify::new())).collect(),
        }
    }

    fn push(&self, workspace: &str, partition: u32, trigger: Trigger, tp: Option<&str>) -> String {
        let seq = {
            let Ok(mut guard) = self.state.lock() else {
                return String::new();
            };
            let part = guard
                .0
                .entry((workspace.to_string(), partition))
                .or_default();
            let seq = part.next_seq;
            part.next_seq += 1;
            part.entries.push_back(LogEntry {
                id: seq.to_string(),
                trigger,
                traceparent: tp.map(str::to_string),
            });
            seq
        };
        if let Some(n) = self.wake.get(partition as usize) {
            n.notify_waiters();
            n.notify_one();
        }
        seq.to_string()
    }

    /// Entries waiting in a partition, delivered or not.
    pub fn backlog(&self, workspace: &str, partition: u32) -> usize {
        self.state
            .lock()
            .ok()
            .and_then(|g| {
                g.0.get(&(workspace.to_string(), partition))
                    .map(|p| p.entries.len())
            })
            .unwrap_or(0)
    }
}

impl Appender for MemoryLog {
    fn append<'a>(
        &'a self,
        workspace: &'a str,
        event: &'a Event,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Appended, IngestError>> {
        Box::pin(async move {
            let partition = partition_of(workspace, &event.user, self.partitions);
            let first = self
                .state
                .lock()
                .map_err(|_| IngestError::LogUnavailable("log lock poisoned".into()))?
                .1
                .first_time(workspace, &event.message_id);
            if !first {
                return Ok(Appended {
                    partition,
                    offset: String::new(),
                    duplicate: true,
                });
            }
            let offset = self.push(
                workspace,
                partition,
                Trigger::Event(event.clone()),
                traceparent,
            );
            Ok(Appended {
                partition,
                offset,
                duplicate: false,
            })
        })
    }
}

impl FiredSink for MemoryLog {
    fn deliver<'a>(&'a self, timer: &'a Timer) -> BoxFuture<'a, Result<(), SchedulerError>> {
        Box::pin(async move {
            let partition = partition_of(&timer.workspace, &timer.user, self.partitions);
            self.push(
                &timer.workspace,
                partition,
                Trigger::Timer(timer.clone()),
                None,
            );
            Ok(())
        })
    }
}

impl PartitionLog for MemoryLog {
    fn read<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
        max: usize,
        block_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, StateError>> {
        Box::pin(async move {
            let take = || -> Vec<LogEntry> {
                self.state
                    .lock()
                    .ok()
                    .and_then(|g| {
                        g.0.get(&(workspace.to_string(), partition))
                            .map(|p| p.entries.iter().take(max).cloned().collect())
                    })
                    .unwrap_or_default()
            };
            let Some(wake) = self.wake.get(partition as usize).cloned() else {
                return Ok(Vec::new());
            };
            let notified = wake.notified();
            let found = take();
            if !found.is_empty() || block_ms == 0 {
                return Ok(found);
            }
            let _ = tokio::time::timeout(StdDuration::from_millis(block_ms), notified).await;
            Ok(take())
        })
    }

    fn ack<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let mut guard = self
                .state
                .lock()
                .map_err(|_| StateError::Unavailable("log lock poisoned".into()))?;
            if let Some(p) = guard.0.get_mut(&(workspace.to_string(), partition)) {
                // Batches are acknowledged in the order they were read: from the front.
                let acked: std::collections::HashSet<&str> =
                    ids.iter().map(String::as_str).collect();
                while p
                    .entries
                    .front()
                    .is_some_and(|e| acked.contains(e.id.as_str()))
                {
                    p.entries.pop_front();
                }
            }
            Ok(())
        })
    }
}
