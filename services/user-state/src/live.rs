//! The live loop of a user-state instance: hold partition leases, read each held partition's
//! log, apply what it says, and acknowledge only what is applied and written.
//!
//! Order of work for a batch read from a partition's log:
//! 1. apply each entry (event, fired timer, merge step or forget) to its user's actor;
//! 2. perform the effects, each idempotent by its id: merge steps as they come; messages and
//!    timer changes once every entry is applied, messages of many users at once but each
//!    user's in order, and each run of timer sets or cancels as one request;
//! 3. write every changed user's state with compare-and-set, many users at once;
//! 4. acknowledge the batch in the log. When the log and the users share one Redis, the
//!    acknowledgement goes in the same script as the last user's write, after the others.
//!
//! A crash anywhere before step 4 redelivers the batch. Users whose state was written skip
//! the entries they already applied (by message id, or by timer id); users whose state was not
//! written apply them again from the stored state and produce the same effects with the same
//! ids, which their targets accept once. An acknowledged event is therefore applied exactly
//! once, and no message is delivered twice.
//!
//! A forget entry splits its batch: the entries before it are written and acknowledged first,
//! so a redelivery never applies them to the user the forget erased.
//!
//! Users idle long enough hibernate, and later leave memory, after every written batch and,
//! on a partition with nothing to read, every so often in between. Idleness is measured on
//! the partition's idle clock: partition time (the latest event or timer applied) plus the
//! wall time, from the loop's clock, that the partition has gone without entries since its
//! latest batch. In a live partition event times follow the wall clock and both measures
//! agree; a partition working through old entries idles its users by event time only; and a
//! partition that goes quiet lets its users hibernate and leave as wall time passes, instead
//! of keeping them live until the next entry arrives. Once entries arrive again the idle
//! clock is partition time again: a trigger's time is what makes a user recent.
//!
//! Writes and erases carry the lease's fencing token. One refused as fenced means another
//! instance owns the partition now: the loop stops, acknowledging nothing more, and the new
//! owner applies what was left.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use beckon_core::{Clock, Duration, Trigger, Ts};
use beckon_ingest::log::{Consumer, EventLog, LogEntry};
use beckon_telemetry::{Admit, LogRateLimiter, Metrics};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::error::StateError;
use crate::lease::LeaseWindow;
use crate::store::LogAck;
use crate::worker::PartitionWorker;

/// The log's consumer group of user-state instances.
pub const GROUP: &str = "user-state";

/// The consumer a partition's owner reads as. A partition has one owner at a time (its
/// lease), so the name is the partition's, not the instance's: a new owner's first look at
/// its pending entries finds exactly what the previous owner read and never acknowledged.
pub fn consumer(workspace: &str, partition: u32) -> Consumer {
    Consumer::new(workspace, partition, GROUP, &format!("p{partition}"))
}

#[derive(Clone)]
pub struct LoopConfig {
    pub workspace: String,
    pub consumer: String,
    pub batch: usize,
    pub block_ms: u64,
    /// Pause after a failed batch before it is read again.
    pub retry_ms: u64,
    /// Users idle this long (on the idle clock, see the module's documentation) hibernate:
    /// their actor stops and their state stays in memory in compact form.
    pub hibernate: beckon_core::Duration,
    /// Users idle this long (on the idle clock) leave memory altogether; their next trigger
    /// loads them from the store.
    pub idle: beckon_core::Duration,
    /// Wall time, for how long the partition has gone without entries.
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    /// Shared by the partitions of an instance: an outage fails every partition at once, and
    /// one line a few seconds says so as well as hundreds.
    pub warnings: Arc<LogRateLimiter>,
    /// The partition's lease, when one grants it: no entry is applied once it has lapsed.
    pub lease: Option<LeaseWindow>,
}

impl std::fmt::Debug for LoopConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The clock, metrics and rate limiter are handles with nothing to show.
        f.debug_struct("LoopConfig")
            .field("workspace", &self.workspace)
            .field("consumer", &self.consumer)
            .field("batch", &self.batch)
            .field("block_ms", &self.block_ms)
            .field("retry_ms", &self.retry_ms)
            .field("hibernate", &self.hibernate)
            .field("idle", &self.idle)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
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
    let mut unread = Unacknowledged::new(config.clock.as_ref());
    let mut report = LoopReport::default();
    let mut idle_clock = IdleClock::new(&config);
    // The partition's series is there from the start, not from its first sweep.
    config.metrics.set_users_hibernated(p, 0);
    tracing::info!(partition = p, consumer = %config.consumer, "partition started");

    while !*stop.borrow() {
        let read = next_batch(
            log.as_ref(),
            &reader,
            &config,
            &mut group_ready,
            &mut unread,
        );
        let entries = tokio::select! {
            r = read => r,
            _ = stop.changed() => break,
        };
        let result = match entries {
            Ok(entries) if entries.is_empty() => {
                // Nothing unread and nothing unacknowledged: this partition is caught up.
                config.metrics.set_log_lag(p, 0);
                if let Some(at) = idle_clock.quiet_sweep_due(worker.now()) {
                    sweep(&mut worker, &config, at).await;
                }
                continue;
            }
            Ok(entries) => apply_batch(&mut worker, log.as_ref(), &config, entries).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(Applied { entries, backlog }) => {
                report.applied += entries;
                report.batches += 1;
                let now = worker.now();
                idle_clock.batch_applied(now);
                sweep(&mut worker, &config, now).await;
                match backlog {
                    Some(n) => config.metrics.set_log_lag(p, gauge_value(n)),
                    None => record_lag(log.as_ref(), &reader, &config).await,
                }
            }
            Err(e @ StateError::Fenced { .. }) => {
                // Another instance owns the partition now; retrying could only fail again.
                report.failures += 1;
                let discarded = worker.discard_unsaved();
                tracing::warn!(partition = p, error = %e, discarded, "fenced off; stopping");
                config.metrics.set_users_hibernated(p, 0);
                return report;
            }
            Err(e) => {
                report.failures += 1;
                unread.batch_failed();
                let discarded = worker.discard_unsaved();
                if let Admit::Log { suppressed } = config.warnings.admit("batch_failed") {
                    tracing::warn!(
                        partition = p,
                        error = %e,
                        discarded,
                        suppressed,
                        "batch failed; retrying"
                    );
                }
                // A partition stuck on a batch (a downstream service down) is exactly when
                // the lag must show: what it cannot apply stays in the log and adds up.
                record_lag(log.as_ref(), &reader, &config).await;
                tokio::time::sleep(StdDuration::from_millis(config.retry_ms)).await;
            }
        }
    }

    if let Err(e) = worker.flush().await {
        tracing::warn!(partition = p, error = %e, "final write failed; the log redelivers");
    }
    // The worker and its hibernated users go with the partition.
    config.metrics.set_users_hibernated(p, 0);
    tracing::info!(partition = p, applied = report.applied, "partition stopped");
    report
}

fn gauge_value(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Hibernates and evicts the users idle as of `at` on the idle clock, and updates the gauge.
async fn sweep(worker: &mut PartitionWorker, config: &LoopConfig, at: Ts) {
    let p = worker.partition();
    worker.evict_idle_at(at, config.idle);
    if let Err(e) = worker.hibernate_idle_at(at, config.hibernate).await {
        // Only the actor system stopping fails this; the loop ends with it.
        tracing::debug!(partition = p, error = %e, "hibernation stopped");
    }
    config
        .metrics
        .set_users_hibernated(p, gauge_value(worker.hibernated()));
}

/// The partition's idle clock (see the module's documentation) and when it was last swept.
struct IdleClock {
    clock: Arc<dyn Clock>,
    /// Wall time of the latest applied batch, or of the loop's start.
    last_batch: Ts,
    /// Idle-clock time of the latest sweep.
    last_swept: Ts,
    /// How far the idle clock moves between two sweeps of a quiet partition: a quarter of the
    /// shorter idle period, so idle actors stop at most a quarter of it late while a quiet
    /// partition looks through its users a few times per period, not at every empty read.
    /// (Hibernated users are looked at for leaving on a period of their own; see
    /// [`PartitionWorker::evict_idle`].)
    period: Duration,
}

impl IdleClock {
    fn new(config: &LoopConfig) -> IdleClock {
        let shorter = config.hibernate.0.min(config.idle.0);
        IdleClock {
            clock: config.clock.clone(),
            last_batch: config.clock.now(),
            last_swept: Ts::MIN,
            period: Duration((shorter / 4).max(1)),
        }
    }

    /// A batch was applied and its users swept as of partition time `now`.
    fn batch_applied(&mut self, now: Ts) {
        self.last_batch = self.clock.now();
        self.last_swept = now;
    }

    /// The idle-clock time to sweep a quiet partition at, when a period has passed since the
    /// latest sweep; `now` is partition time.
    fn quiet_sweep_due(&mut self, now: Ts) -> Option<Ts> {
        // A wall clock set back counts as no time passed, not as negative idleness.
        let quiet = self.clock.now().0.saturating_sub(self.last_batch.0).max(0);
        let at = now.saturating_add(Duration(quiet));
        if at < self.last_swept.saturating_add(self.period) {
            return None;
        }
        self.last_swept = at;
        Some(at)
    }
}

/// When the partition's consumer may hold entries read and never acknowledged, which must be
/// applied before anything new.
///
/// They come from a failed batch, from a previous owner that crashed, or from an owner whose
/// lease lapsed while it still read (it is fenced off at its next write, leaving what it read
/// pending under the partition's consumer name). The first two are known to the loop; the
/// third is not, so the loop also looks every [`Unacknowledged::EVERY_MS`]. Looking before
/// every read would cost a round trip per batch, most of the work of a small batch.
struct Unacknowledged {
    /// A look is owed: at the start, and after a failed batch.
    owed: bool,
    /// Wall time of the latest look that found nothing.
    looked: Ts,
}

impl Unacknowledged {
    const EVERY_MS: i64 = 1_000;

    fn new(clock: &dyn Clock) -> Unacknowledged {
        Unacknowledged {
            owed: true,
            looked: clock.now(),
        }
    }

    fn due(&self, clock: &dyn Clock) -> bool {
        self.owed || clock.now().0.saturating_sub(self.looked.0) >= Self::EVERY_MS
    }

    fn none_found(&mut self, clock: &dyn Clock) {
        self.owed = false;
        self.looked = clock.now();
    }

    fn batch_failed(&mut self) {
        self.owed = true;
    }
}

/// Entries read before and never acknowledged (a failed batch, or a previous owner's) come
/// first, in order, when a look for them is due; then new ones, waiting up to `block_ms`.
async fn next_batch(
    log: &dyn EventLog,
    reader: &Consumer,
    config: &LoopConfig,
    group_ready: &mut bool,
    unread: &mut Unacknowledged,
) -> Result<Vec<LogEntry>, StateError> {
    if !*group_ready {
        log.ensure_group(reader).await.map_err(log_error)?;
        *group_ready = true;
    }
    if unread.due(config.clock.as_ref()) {
        let pending = log.pending(reader, config.batch).await.map_err(log_error)?;
        if !pending.is_empty() {
            return Ok(pending);
        }
        unread.none_found(config.clock.as_ref());
    }
    let block = Duration(config.block_ms as i64);
    log.read(reader, config.batch, block)
        .await
        .map_err(log_error)
}

fn log_error(e: beckon_ingest::IngestError) -> StateError {
    StateError::Unavailable(e.to_string())
}

/// What a batch came to.
struct Applied {
    entries: u64,
    /// The partition's backlog as its acknowledgement left it, when the log counted it.
    backlog: Option<u64>,
}

async fn apply_batch(
    worker: &mut PartitionWorker,
    log: &dyn EventLog,
    config: &LoopConfig,
    entries: Vec<LogEntry>,
) -> Result<Applied, StateError> {
    let reader = consumer(&config.workspace, worker.partition());
    let n = entries.len() as u64;
    let mut unacked: Vec<String> = Vec::with_capacity(entries.len());
    let mut events = 0;
    for entry in entries {
        if let Some(lease) = &config.lease
            && !lease.is_open()
        {
            // Renewals fell behind: another instance may own the partition by now. What was
            // applied and not written is redone from the stored state by whoever owns it.
            return Err(StateError::Unavailable(
                "the partition's lease was not renewed in time".into(),
            ));
        }
        if matches!(entry.trigger, Ok(Trigger::Forget(_))) && !unacked.is_empty() {
            // What came before a forget is written and acknowledged before the user is
            // erased. Otherwise a retry of this batch would apply those entries again to the
            // erased, empty user, and act on them as it would for a newcomer.
            worker.flush().await?;
            log.ack(&reader, &unacked).await.map_err(log_error)?;
            config.metrics.events_applied(events);
            unacked.clear();
            events = 0;
        }
        unacked.push(entry.offset.clone());
        if matches!(entry.trigger, Ok(Trigger::Event(_))) {
            events += 1;
        }

        let span = entry_span(&config.workspace, worker.partition(), &entry);
        apply_entry(worker, &config.workspace, entry)
            .instrument(span)
            .await?;
    }
    let ack = LogAck {
        group: reader.group.clone(),
        entry_ids: unacked,
    };
    let backlog = match worker.flush_acking(&ack).await?.1 {
        Some(left) => Some(left),
        None => {
            log.ack_counting(&reader, &ack.entry_ids)
                .await
                .map_err(log_error)?
                .1
        }
    };
    config.metrics.events_applied(events);
    Ok(Applied {
        entries: n,
        backlog,
    })
}

async fn apply_entry(
    worker: &mut PartitionWorker,
    workspace: &str,
    entry: LogEntry,
) -> Result<(), StateError> {
    tracing::debug!(partition = worker.partition(), entry = %entry.offset, "applying");
    match entry.trigger {
        Ok(trigger) => worker.on_trigger(workspace, trigger).await,
        // Stored by another version, or damaged: nothing to apply, and stalling the
        // partition on it would help nobody. It is acknowledged with the batch.
        Err(reason) => {
            tracing::error!(
                partition = worker.partition(),
                entry = %entry.offset,
                %reason,
                "unreadable log entry skipped"
            );
            Ok(())
        }
    }
}

/// The span of applying one log entry: a child of the span that appended it (ingest's call
/// for an event, the scheduler's firing for a timer), so an event's trace runs on through the
/// actor.
fn entry_span(workspace: &str, partition: u32, entry: &LogEntry) -> tracing::Span {
    let (kind, journey, user) = match &entry.trigger {
        Ok(Trigger::Event(e)) => ("event", "", e.user.as_str()),
        Ok(Trigger::Timer(t)) => ("timer", t.journey.as_str(), t.user.as_str()),
        Ok(Trigger::Api(a)) => ("api", a.journey.as_str(), a.user.as_str()),
        Ok(t @ (Trigger::MergeOut(_) | Trigger::MergeIn(_))) => ("merge", "", t.user()),
        Ok(Trigger::Forget(f)) => ("forget", "", f.user.as_str()),
        Err(_) => ("unreadable", "", ""),
    };
    let span = tracing::info_span!(
        "user_state.apply",
        otel.name = %format_args!("process {kind}"),
        otel.kind = "consumer",
        messaging.system = "beckon",
        messaging.operation.type = "process",
        messaging.destination.partition.id = partition,
        messaging.message.id = %entry.offset,
        beckon.workspace = %workspace,
        beckon.trigger = kind,
        beckon.journey = journey,
        beckon.user.id = tracing::field::Empty,
    );
    if beckon_telemetry::user_ids_exported() {
        span.record("beckon.user.id", user);
    }

    let parented = entry
        .traceparent
        .as_deref()
        .is_some_and(|tp| beckon_telemetry::set_parent_from_trace_string(&span, tp));
    // A timer appended without the firing's context still points back to its setting.
    if !parented && let Some(trace) = entry.timer().and_then(|t| t.trace.as_deref()) {
        beckon_telemetry::link_to_trace_string(&span, trace);
    }
    span
}

/// Sets the lag gauge to the entries not yet acknowledged, read or not. One call to the log a
/// loop turn, after a batch applied or failed; a turn that reads nothing sets it to zero.
async fn record_lag(log: &dyn EventLog, reader: &Consumer, config: &LoopConfig) {
    match log.backlog(&reader.workspace, reader.partition).await {
        Ok(Some(n)) => config
            .metrics
            .set_log_lag(reader.partition, i64::try_from(n).unwrap_or(i64::MAX)),
        Ok(None) => {}
        Err(e) => tracing::debug!(partition = reader.partition, error = %e, "log lag not measured"),
    }
}
