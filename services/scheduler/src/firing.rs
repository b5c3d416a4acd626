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
use tokio::sync::{Notify, watch};
use tracing::Instrument as _;

use crate::AsyncTimerStore;
use crate::error::SchedulerError;

/// Where fired timers go (the partition log, in a deployment). `deliver` runs inside the
/// timer's `timer.fire` span, so a sink that stores trace context stores that span's.
pub trait FiredSink: Send + Sync + 'static {
    fn deliver<'a>(&'a self, timer: &'a Timer) -> BoxFuture<'a, Result<(), SchedulerError>>;
}

#[derive(Clone, Debug)]
pub struct FiringConfig {
    pub workspaces: Vec<String>,
    pub partitions: u32,
    /// Timers claimed per partition per round.
    pub batch: usize,
    /// Longest sleep between rounds; bounds lateness for timers set through another
    /// scheduler instance, which cannot wake this one.
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
}

/// Fires every due timer of every partition once. Stops at the first batch with a delivery
/// failure, leaving what was not delivered claimed (it comes due again at its claim
/// deadline).
pub async fn fire_round(
    store: &dyn AsyncTimerStore,
    sink: &dyn FiredSink,
    clock: &dyn Clock,
    config: &FiringConfig,
) -> Result<Round, SchedulerError> {
    let mut round = Round::default();
    for workspace in &config.workspaces {
        for p in 0..config.partitions {
            loop {
                let now = clock.now();
                let due = store.claim_due(workspace, p, now, config.batch).await?;
                let full = due.len() >= config.batch;

                // A claimed batch is delivered and acknowledged concurrently: one round trip
                // of waiting per batch instead of two per timer. The requests still leave in
                // claim order, so a user's timers reach its log in due order.
                let delivered = join_all(
                    due.iter()
                        .map(|t| sink.deliver(t).instrument(fire_span(t, p))),
                )
                .await;
                let (done, failed): (Vec<_>, Vec<_>) = due
                    .iter()
                    .zip(delivered)
                    .partition(|(_, result)| result.is_ok());
                let acked = join_all(done.iter().map(|(t, _)| store.ack(t))).await;
                for ((timer, _), ack) in done.iter().zip(acked) {
                    ack?;
                    round.fired += 1;
                    round
                        .lateness_ms
                        .push(now.as_millis() - timer.due.as_millis());
                    config.metrics.record_timer_lateness(timer.due, now);
                }
                // Timers not delivered stay claimed and come due again with their claim.
                if let Some((_, Err(e))) = failed.into_iter().next() {
                    return Err(e);
                }
                if !full {
                    break;
                }
            }
        }
    }
    Ok(round)
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
    let idle = StdDuration::from_millis(config.max_idle_ms.max(1));
    let mut counted = Ts::MIN;
    while !*shutdown.borrow() {
        let now = clock.now();
        if now.as_millis().saturating_sub(counted.as_millis()) >= config.pending_every_ms {
            counted = now;
            if let Err(e) = record_pending(store.as_ref(), &config).await {
                tracing::debug!(error = %e, "pending timers not counted");
            }
        }

        match fire_round(store.as_ref(), sink.as_ref(), clock.as_ref(), &config).await {
            Ok(round) => {
                if round.fired > 0 {
                    tracing::debug!(fired = round.fired, "timers fired");
                }
                on_round(&round);
            }
            Err(e) => tracing::warn!(error = %e, "timer round failed; retrying"),
        }

        tokio::select! {
            _ = shutdown.changed() => {},
            _ = wake.notified() => {},
            _ = tokio::time::sleep(idle) => {},
        }
    }
    tracing::info!("timer firing stopped");
}
