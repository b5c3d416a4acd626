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

use beckon_core::Duration;
use beckon_ingest::log::{Consumer, EventLog, LogEntry};
use tokio::sync::watch;

use crate::error::StateError;
use crate::worker::PartitionWorker;

/// The log's consumer group of user-state instances.
pub const GROUP: &str = "user-state";

/// The consumer a partition's owner reads as. A partition has one owner at a time (its
/// lease), so the name is the partition's, not the instance's: a new owner's first look at
/// its pending entries finds exactly what the previous owner read and never acknowledged.
pub fn consumer(workspace: &str, partition: u32) -> Consumer {
    Consumer::new(workspace, partition, GROUP, &format!("p{partition}"))
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
    log: Arc<dyn EventLog>,
    config: LoopConfig,
    mut stop: watch::Receiver<bool>,
) -> LoopReport {
    let p = worker.partition();
    let reader = consumer(&config.workspace, p);
    let mut group_ready = false;
    let mut report = LoopReport::default();
    tracing::info!(partition = p, consumer = %config.consumer, "partition started");

    while !*stop.borrow() {
        let read = next_batch(log.as_ref(), &reader, &config, &mut group_ready);
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
            Err(e @ StateError::Fenced { .. }) => {
                // Another instance owns the partition now; retrying could only fail again.
                report.failures += 1;
                let discarded = worker.discard_unsaved();
                tracing::warn!(partition = p, error = %e, discarded, "fenced off; stopping");
                return report;
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

/// Entries read before and never acknowledged (a failed batch, or a crashed previous owner's)
/// come first, in order; then new ones, waiting up to `block_ms` for some.
async fn next_batch(
    log: &dyn EventLog,
    reader: &Consumer,
    config: &LoopConfig,
    group_ready: &mut bool,
) -> Result<Vec<LogEntry>, StateError> {
    if !*group_ready {
        log.ensure_group(reader).await.map_err(log_error)?;
        *group_ready = true;
    }
    let pending = log.pending(reader, config.batch).await.map_err(log_error)?;
    if !pending.is_empty() {
        return Ok(pending);
    }
    let block = Duration(config.block_ms as i64);
    log.read(reader, config.batch, block)
        .await
        .map_err(log_error)
}

fn log_error(e: beckon_ingest::IngestError) -> StateError {
    StateError::Unavailable(e.to_string())
}

async fn apply_batch(
    worker: &mut PartitionWorker,
    log: &dyn EventLog,
    config: &LoopConfig,
    entries: Vec<LogEntry>,
) -> Result<u64, StateError> {
    let reader = consumer(&config.workspace, worker.partition());
    let offsets: Vec<String> = entries.iter().map(|e| e.offset.clone()).collect();
    let n = entries.len() as u64;
    for entry in entries {
        tracing::debug!(partition = worker.partition(), entry = %entry.offset, "applying");
        match entry.trigger {
            Ok(trigger) => worker.on_trigger(&config.workspace, trigger).await?,
            // Stored by another version, or damaged: nothing to apply, and stalling the
            // partition on it would help nobody. It is acknowledged with the batch.
            Err(reason) => tracing::error!(
                partition = worker.partition(),
                entry = %entry.offset,
                %reason,
                "unreadable log entry skipped"
            ),
        }
    }
    worker.flush().await?;
    log.ack(&reader, &offsets).await.map_err(log_error)?;
    Ok(n)
}
