//! Firing due timers: claim, deliver, acknowledge.
//!
//! Delivery puts the fired timer into the user's partition log, so it reaches the actor by
//! the same path as an event. A timer is acknowledged only after delivery succeeded; a
//! scheduler that dies in between leaves a claim that comes due again, so every timer fires
//! at least once, and the actor's check of its pending timer id makes the effect apply once.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use beckon_core::{Clock, Timer, Ts};
use beckon_telemetry::Metrics;
use futures::future::{BoxFuture, join_all};
use futures::stream::{self, StreamExt as _};
use tokio::sync::{Notify, watch};
use tracing::Instrument as _;

use crate::AsyncTimerStore;
use crate::error::SchedulerError;

/// Where fired timers go (the partition log, in a deployment). `deliver` runs inside the
/// timer's `timer.fire` span, so a sink that stores trace context stores that span's.
pub trait FiredSink: Send + Sync + 'static {
    fn deliver<'a>(&'a self, timer: &'a Timer) -> BoxFuture<'a, Result<(), SchedulerError>>;

    /// Delivers a batch of one partition's timers in order, each in its span (`spans[i]` is
    /// `timers[i]`'s); one result per timer. Sinks that talk to a server send the batch in
    /// few requests.
    fn deliver_many<'a>(
        &'a self,
        timers: &'a [Timer],
        spans: &'a [tracing::Span],
    ) -> BoxFuture<'a, Vec<Result<(), SchedulerError>>> {
        Box::pin(join_all(
            timers
                .iter()
                .zip(spans)
                .map(|(t, span)| self.deliver(t).instrument(span.clone())),
        ))
    }
}

#[derive(Clone, Debug)]
pub struct FiringConfig {
    pub workspaces: Vec<String>,
    pub partitions: u32,
    /// Timers claimed per partition per round.
    pub batch: usize,
    /// Partitions fired at once: their requests share the connection's round trips.
    pub concurrency: usize,
    /// Longest sleep between rounds; bounds lateness for timers set through another
    /// scheduler instance, which cannot wake this one. A round sleeps less when a timer
    /// comes due sooner.
    pub max_idle_ms: u64,
    /// How often `beckon.timers.pending` is refreshed, in clock milliseconds: counting
    /// costs one call per partition, too much for every round.
    pub pending_every_ms: i64,
    pub metrics: Metrics,
}

impl Default for FiringConfig {
    fn default() -> Self {
        FiringConfig {
            workspaces: vec!["default".into()],
            partitions: beckon_core::partition::DEFAULT_PARTITIONS,
            batch: 512,
            concurrency: 16,
            max_idle_ms: 50,
            pending_every_ms: 1_000,
            metrics: Metrics::global(),
        }
    }
}

/// How one round went.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Round {
    pub fired: u64,
    /// Milliseconds each fired timer was late by.
    pub lateness_ms: Vec<i64>,
    /// When the earliest timer left (or claim deadline) comes due, over every partition.
    pub next: Option<Ts>,
}

impl Round {
    fn add(&mut self, other: Round) {
        self.fired += other.fired;
        self.lateness_ms.extend(other.lateness_ms);
        self.next = match (self.next, other.next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Fires every due timer of every partition once, `config.concurrency` partitions at a time.
/// A partition stops at its first batch with a delivery failure, leaving what was not
/// delivered claimed (it comes due again at its claim deadline); the round then reports the
/// first failure.
pub async fn fire_round(
    store: &dyn AsyncTimerStore,
    sink: &dyn FiredSink,
    clock: &dyn Clock,
    config: &FiringConfig,
) -> Result<Round, SchedulerError> {
    let mut partitions: Vec<BoxFuture<'_, Result<Round, SchedulerError>>> = Vec::new();
    for workspace in &config.workspaces {
        for p in 0..config.partitions {
            partitions.push(Box::pin(fire_partition(
                store, sink, clock, config, workspace, p,
            )));
        }
    }
    let results: Vec<_> = stream::iter(partitions)
        .buffer_unordered(config.concurrency.max(1))
        .collect()
        .await;
    let mut round = Round::default();
    let mut failure = None;
    for result in results {
        match result {
            Ok(r) => round.add(r),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(round),
    }
}

/// Fires one partition's due timers, batch after batch, so a user's timers reach its log in
/// due order.
async fn fire_partition(
    store: &dyn AsyncTimerStore,
    sink: &dyn FiredSink,
    clock: &dyn Clock,
    config: &FiringConfig,
    workspace: &str,
    p: u32,
) -> Result<Round, SchedulerError> {
    let mut round = Round::default();
    loop {
        let now = clock.now();
        let claimed = store
            .claim_due_next(workspace, p, now, config.batch)
            .await?;
        round.next = claimed.next;
        let due = claimed.timers;
        if due.is_empty() {
            return Ok(round);
        }
        let full = due.len() >= config.batch;

        // The batch is delivered and acknowledged in one request each when the stores allow.
        let spans: Vec<tracing::Span> = due.iter().map(|t| fire_span(t, p)).collect();
        let delivered = sink.deliver_many(&due, &spans).await;
        let failure = delivered.iter().position(Result::is_err);
        let some_delivered: Vec<Timer>;
        let done = match failure {
            None => &due[..],
            Some(_) => {
                some_delivered = due
                    .iter()
                    .zip(&delivered)
                    .filter(|(_, r)| r.is_ok())
                    .map(|(t, _)| t.clone())
                    .collect();
                &some_delivered[..]
            }
        };
        store.ack_many(done).await?;
        for timer in done {
            round.fired += 1;
            round
                .lateness_ms
                .push(now.as_millis() - timer.due.as_millis());
            config.metrics.record_timer_lateness(timer.due, now);
        }

        // Timers not delivered stay claimed and come due again with their claim.
        if let Some(Err(e)) = failure.and_then(|i| delivered.into_iter().nth(i)) {
            return Err(e);
        }
        if !full {
            return Ok(round);
        }
    }
}

/// The span of one firing. The work that set the timer finished long ago, so the firing
/// starts a trace of its own and links to that work's span instead of joining its trace.
fn fire_span(timer: &Timer, partition: u32) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "timer.fire",
        otel.kind = "producer",
        messaging.system = "beckon",
        messaging.operation.type = "publish",
        messaging.destination.partition.id = partition,
        beckon.workspace = %timer.workspace,
        beckon.journey = %timer.journey,
        beckon.timer.id = %timer.id,
    );
    if let Some(trace) = &timer.trace {
        beckon_telemetry::link_to_trace_string(&span, trace);
    }
    span
}

/// Counts timers not yet fired per partition (all workspaces together) into
/// `beckon.timers.pending`.
pub async fn record_pending(
    store: &dyn AsyncTimerStore,
    config: &FiringConfig,
) -> Result<(), SchedulerError> {
    for p in 0..config.partitions {
        let mut pending = 0;
        for workspace in &config.workspaces {
            pending += store.len(workspace, p).await?;
        }
        let pending = i64::try_from(pending).unwrap_or(i64::MAX);
        config.metrics.set_timers_pending(p, pending);
    }
    Ok(())
}

/// Fires timers until `shutdown` turns true. `wake` is notified when a timer is set, so a
/// short delay does not wait out a whole idle period.
pub async fn run(
    store: Arc<dyn AsyncTimerStore>,
    sink: Arc<dyn FiredSink>,
    clock: Arc<dyn Clock>,
    config: FiringConfig,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
    on_round: impl Fn(&Round) + Send,
) {
    tracing::info!(partitions = config.partitions, "timer firing started");
    let max_idle = config.max_idle_ms.max(1);
    let mut counted = Ts::MIN;
    while !*shutdown.borrow() {
        let now = clock.now();
        if now.as_millis().saturating_sub(counted.as_millis()) >= config.pending_every_ms {
            counted = now;
            if let Err(e) = record_pending(store.as_ref(), &config).await {
                tracing::debug!(error = %e, "pending timers not counted");
            }
        }

        let mut idle = max_idle;
        match fire_round(store.as_ref(), sink.as_ref(), clock.as_ref(), &config).await {
            Ok(round) => {
                if round.fired > 0 {
                    tracing::debug!(fired = round.fired, "timers fired");
                }
                on_round(&round);

                // Sleep until the earliest timer left is due, if that is sooner; at least a
                // millisecond, the clock's resolution.
                if let Some(next) = round.next {
                    let wait = next.as_millis().saturating_sub(clock.now().as_millis());
                    idle = idle.min(u64::try_from(wait).unwrap_or(0).max(1));
                }
            }
            Err(e) => tracing::warn!(error = %e, "timer round failed; retrying"),
        }

        let idle = StdDuration::from_millis(idle);
        tokio::select! {
            _ = shutdown.changed() => {},
            _ = wake.notified() => {},
            _ = tokio::time::sleep(idle) => {},
        }
    }
    tracing::info!("timer firing stopped");
}
