//! The live loop of a user-state instance: hold partition leases, read each held partition's
//! log, apply what it says, and acknowledge only what is applied and written.
//!
//! Order of work for a batch read from a partition's log:
//! 1. apply each entry (event or fired timer) to its user's actor;
//! 2. perform the effects (timers to the scheduler, messages to the gateway), each
//!    idempotent by its id;
//! 3. write every changed user's state with compare-and-set;
//! 4. acknowledge the batch in the log.
//!
//! A crash anywhere before step 4 redelivers the batch. Users whose state was written skip
//! the entries they already applied (by message id, or by timer id); users whose state was not
//! written apply them again from the stored state and produce the same effects with the same
//! ids, which their targets accept once. An acknowledged event is therefore applied exactly
//! once, and no message is delivered twice.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use beckon_core::Trigger;
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::error::StateError;
use crate::worker::PartitionWorker;

/// One entry of a partition's log.
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// The log's id for the entry, used to acknowledge it.
    pub id: String,
    pub trigger: Trigger,
    /// W3C trace context of the call that appended the entry.
    pub traceparent: Option<String>,
}

/// What the live loop needs from the partitioned event log.
pub trait PartitionLog: Send + Sync + 'static {
    /// Entries not yet acknowledged for the partition: first any that were delivered before
    /// and never acknowledged (a crashed owner's), then new ones. A partition has one owner at
    /// a time (its lease), so the log needs no consumer name from the caller. Waits up to
    /// `block_ms` when there are none.
    fn read<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
        max: usize,
        block_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, StateError>>;

    fn ack<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<(), StateError>>;
}

#[derive(Clone, Debug)]
pub struct LoopConfig {
    pub workspace: String,
    pub consumer: String,
    pub batch: usize,
    pub block_ms: u64,
    /// Pause after a failed batch before it is read again.
    pub retry_ms: u64,
    /// Actors of users idle this long (partition time) are stopped after a written batch.
    pub idle: beckon_core::Duration,
}

/// Counts a partition loop reports when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopReport {
    pub applied: u64,
    pub batches: u64,
    pub failures: u64,
}

/// Runs one partition until `stop` turns true, then writes what it holds and returns.
pub async fn run_partition(
    mut worker: PartitionWorker,
    log: Arc<dyn PartitionLog>,
    config: LoopConfig,
    mut stop: watch::Receiver<bool>,
) -> LoopReport {
    let p = worker.partition();
    let mut report = LoopReport::default();
    tracing::info!(partition = p, consumer = %config.consumer, "partition started");

    while !*stop.borrow() {
        let read = log.read(&config.workspace, p, config.batch, config.block_ms);
        let entries = tokio::select! {
            r = read => r,
            _ = stop.changed() => break,
        };
        let result = match entries {
            Ok(entries) if entries.is_empty() => continue,
            Ok(entries) => apply_batch(&mut worker, log.as_ref(), &config, entries).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(n) => {
                report.applied += n;
                report.batches += 1;
                worker.evict_idle(config.idle);
            }
            Err(e) => {
                report.failures += 1;
                let discarded = worker.discard_unsaved();
                tracing::warn!(partition = p, error = %e, discarded, "batch failed; retrying");
                tokio::time::sleep(StdDuration::from_millis(config.retry_ms)).await;
            }
        }
    }

    if let Err(e) = worker.flush().await {
        tracing::warn!(partition = p, error = %e, "final write failed; the log redelivers");
    }
    tracing::info!(partition = p, applied = report.applied, "partition stopped");
    report
}

async fn apply_batch(
    worker: &mut PartitionWorker,
    log: &dyn PartitionLog,
    config: &LoopConfig,
    entries: Vec<LogEntry>,
) -> Result<u64, StateError> {
    let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
    let n = entries.len() as u64;
    for entry in entries {
        tracing::debug!(partition = worker.partition(), entry = %entry.id, "applying");
        worker.on_trigger(&config.workspace, entry.trigger).await?;
    }
    worker.flush().await?;
    log.ack(&config.workspace, worker.partition(), &ids).await?;
    Ok(n)
}
