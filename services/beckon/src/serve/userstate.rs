//! The user-state instance: an actix system holding user actors, partition loops started and
//! stopped as leases come and go, and a drain on shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use actix::Arbiter;
use beckon_core::Clock;
use beckon_ingest::log::EventLog;
use beckon_journey::CurrentEngine;
use beckon_telemetry::{LogRateLimiter, Metrics};
use beckon_user_state::lease::{LeaseWindow, Leases};
use beckon_user_state::live::{self, LoopConfig};
use beckon_user_state::{
    LogForwarder, Outlet, PartitionWorker, StateError, StateStore, TimerSink, Timers,
};
use tokio::sync::{oneshot, watch};

/// Everything a partition loop needs, shared by all partitions of the instance.
#[derive(Clone)]
pub struct Parts {
    pub engine: CurrentEngine,
    pub store: Arc<dyn StateStore>,
    pub log: Arc<dyn EventLog>,
    /// `store` holds `log` too (the same Redis): a batch is acknowledged with a state write.
    pub log_in_store: bool,
    pub timers: Arc<dyn TimerSink>,
    pub outlet: Arc<dyn Outlet>,
    pub workspace: String,
    pub consumer: String,
    /// Users idle this long (partition time, plus wall time while a partition has no
    /// entries) hibernate in compact form.
    pub hibernate_after: beckon_core::Duration,
    /// Users idle this long (counted the same way) leave memory.
    pub evict_after: beckon_core::Duration,
    /// Wall time, for how long a partition has gone without entries.
    pub clock: Arc<dyn Clock>,
}

/// Repeated failures of one kind are logged a few times per this many milliseconds.
const WARNING_INTERVAL_MS: i64 = 10_000;

/// Users whose messages a partition sends at once at the end of a batch. A batch of new users
/// is mostly one message each; sent one after another, every one waits for the gateway's
/// round trip (and a recording file's sync) in turn.
const SEND_CHAINS: usize = 64;

struct Running {
    stop: watch::Sender<bool>,
    done: oneshot::Receiver<live::LoopReport>,
    lease: Option<LeaseWindow>,
}

/// A partition's loop asked to stop and not yet finished: it completes its batch and writes
/// what it holds. `release` gives the lease back once it has.
struct Stopping {
    done: oneshot::Receiver<live::LoopReport>,
    release: bool,
}

/// Actor threads and the partition loops on them.
pub struct Instance {
    parts: Parts,
    arbiters: Vec<Arbiter>,
    running: HashMap<u32, Running>,
    stopping: HashMap<u32, Stopping>,
    warnings: Arc<LogRateLimiter>,
    _system: std::thread::JoinHandle<()>,
}

impl Instance {
    /// Starts an actix system with `threads` arbiters on threads of its own: actors must not
    /// share a thread with the tonic runtime, and blocking one arbiter must not stall others.
    pub fn start(parts: Parts, threads: usize) -> anyhow::Result<Instance> {
        let (tx, rx) = std::sync::mpsc::channel();
        let system = std::thread::Builder::new()
            .name("beckon-actors".into())
            .spawn(move || {
                let sys = actix::System::new();
                sys.block_on(async move {
                    let arbiters: Vec<Arbiter> =
                        (0..threads.max(1)).map(|_| Arbiter::new()).collect();
                    let _ = tx.send(arbiters);
                });
                let _ = sys.run();
            })?;
        let arbiters = rx.recv()?;
        Ok(Instance {
            parts,
            arbiters,
            running: HashMap::new(),
            stopping: HashMap::new(),
            warnings: Arc::new(LogRateLimiter::new(
                system_clock(),
                3,
                beckon_core::Duration(WARNING_INTERVAL_MS),
            )),
            _system: system,
        })
    }

    /// A renewal made the partition's lease good until `until`.
    pub fn extend_lease(&self, partition: u32, until: beckon_core::Ts) {
        if let Some(window) = self.running.get(&partition).and_then(|r| r.lease.as_ref()) {
            window.extend(until);
        }
    }

    pub fn partitions(&self) -> Vec<u32> {
        let mut held: Vec<u32> = self.running.keys().copied().collect();
        held.sort_unstable();
        held
    }

    /// Starts the loop of a partition this instance now owns. `lease` is the lease's fencing
    /// token and window, when a lease grants the partition.
    pub fn start_partition(&mut self, partition: u32, lease: Option<(u64, LeaseWindow)>) {
        // A loop still finishing its last batch keeps the partition: two loops of one
        // instance never work on it at once.
        if self.running.contains_key(&partition) || self.stopping.contains_key(&partition) {
            return;
        }
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = oneshot::channel();
        let parts = self.parts.clone();
        let config = LoopConfig {
            workspace: parts.workspace.clone(),
            consumer: parts.consumer.clone(),
            batch: 256,
            block_ms: 200,
            retry_ms: 200,
            hibernate: parts.hibernate_after,
            idle: parts.evict_after,
            clock: parts.clock.clone(),
            metrics: Metrics::global(),
            warnings: self.warnings.clone(),
            lease: lease.as_ref().map(|(_, window)| window.clone()),
        };
        let fence = lease.as_ref().map(|(token, _)| *token);
        let warnings = self.warnings.clone();
        let arbiter = &self.arbiters[partition as usize % self.arbiters.len()];
        arbiter.spawn_fn(move || {
            actix::spawn(async move {
                let worker = PartitionWorker::new(
                    partition,
                    parts.engine,
                    parts.store,
                    Timers::Remote(parts.timers),
                    parts.outlet,
                )
                // Merges reach the other id's partition through the same log.
                .with_forwarder(Arc::new(LogForwarder(parts.log.clone())))
                .with_concurrent_sends(SEND_CHAINS)
                .with_warnings(warnings);
                let worker = match fence {
                    Some(token) => worker.with_fence(token),
                    None => worker,
                };
                let worker = if parts.log_in_store {
                    worker.with_log_in_store()
                } else {
                    worker
                };
                let report = live::run_partition(worker, parts.log, config, stop_rx).await;
                let _ = done_tx.send(report);
            });
        });
        self.running.insert(
            partition,
            Running {
                stop,
                done,
                lease: lease.map(|(_, window)| window),
            },
        );
    }

    /// Asks a partition's loop to stop without waiting for it, so that the caller goes on
    /// renewing the leases it keeps while the loop finishes its batch (which can take
    /// seconds on a busy machine, longer than a lease lives). With `release`, the lease is
    /// to be given back once the loop has stopped. Returns false when no loop was running
    /// or stopping.
    pub fn begin_stop(&mut self, partition: u32, release: bool) -> bool {
        if let Some(s) = self.stopping.get_mut(&partition) {
            s.release |= release;
            return true;
        }
        let Some(r) = self.running.remove(&partition) else {
            return false;
        };
        let _ = r.stop.send(true);
        self.stopping.insert(
            partition,
            Stopping {
                done: r.done,
                release,
            },
        );
        true
    }

    /// The partitions whose loops have stopped since the last call, each with whether its
    /// lease is to be released.
    pub fn stopped(&mut self) -> Vec<(u32, bool)> {
        let mut out = Vec::new();
        self.stopping.retain(|p, s| match s.done.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => true,
            // A report, or a loop that went away without one: either way it has stopped.
            _ => {
                out.push((*p, s.release));
                false
            }
        });
        out
    }

    pub async fn stop_all(&mut self) {
        // Every loop is told first, then awaited: with Redis away each can take seconds to
        // give up its batch, and one after the other they would add up.
        let held: Vec<u32> = self.running.keys().copied().collect();
        for p in held {
            self.begin_stop(p, false);
        }
        for (_, s) in self.stopping.drain() {
            let _ = s.done.await;
        }
        for a in &self.arbiters {
            a.stop();
        }
    }
}

/// Owns every partition, without leases: the embedded, single-process mode.
pub async fn run_all_partitions(
    mut instance: Instance,
    partitions: u32,
    shutdown: impl std::future::Future<Output = ()>,
) {
    for p in 0..partitions {
        instance.start_partition(p, None);
    }
    shutdown.await;
    tracing::info!("draining user-state");
    instance.stop_all().await;
}

/// How long a drain tries to give the leases back. Redis away, the connection would go on
/// retrying; the leases expire on their own, so the process exits instead of waiting.
const RELEASE_TIMEOUT: StdDuration = StdDuration::from_secs(3);

/// Follows partition leases in Redis until shutdown, then drains: stops every loop (each
/// writes what it holds), gives the leases back, and returns. An error says the leases could
/// not be given back (within [`RELEASE_TIMEOUT`]); they expire on their own.
pub async fn run_with_leases<C>(
    mut instance: Instance,
    mut leases: Leases<C>,
    ttl_ms: u64,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StateError>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync,
{
    tokio::pin!(shutdown);
    let period = StdDuration::from_millis((ttl_ms / 3).max(50));
    let clock = leases.clock();
    loop {
        // A turn waits on Redis, for seconds when Redis is away: a shutdown meanwhile ends it.
        // A lease it took and did not record yet expires on its own, as any left on exit.
        tokio::select! {
            _ = &mut shutdown => break,
            () = lease_turn(&mut instance, &mut leases, &clock) => {}
        }

        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(period) => {},
        }
    }

    tracing::info!(
        partitions = instance.partitions().len(),
        "draining user-state"
    );
    instance.stop_all().await;

    let released = tokio::time::timeout(RELEASE_TIMEOUT, leases.release_all())
        .await
        .unwrap_or_else(|_| {
            Err(StateError::Unavailable(format!(
                "the leases were not given back within {} ms",
                RELEASE_TIMEOUT.as_millis()
            )))
        });
    if let Err(e) = &released {
        tracing::warn!(error = %e, "leases not released; they expire on their own");
    }
    released.map(|_| ())
}

/// One turn of the lease loop: renew and take leases, stop the loops of partitions lost or
/// surplus, give back what they wrote, and start the loops of the partitions held.
async fn lease_turn<C>(instance: &mut Instance, leases: &mut Leases<C>, clock: &Arc<dyn Clock>)
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync,
{
    let metrics = Metrics::global();
    match leases.tick().await {
        Ok(changes) => {
            for p in &changes.lost {
                instance.begin_stop(*p, false);
            }
            for p in &changes.surplus {
                if !instance.begin_stop(*p, true) {
                    release(leases, *p).await;
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
    }
    // A surplus lease is given back only once its loop has written what it holds, so
    // two owners never work on one partition.
    for (p, give_back) in instance.stopped() {
        if give_back {
            release(leases, p).await;
        }
    }
    match leases.unowned().await {
        Ok(n) => metrics.set_partitions_unowned(i64::from(n)),
        Err(e) => tracing::debug!(error = %e, "unowned partitions not counted"),
    }

    // Work on exactly the partitions whose lease is good now. A lease renewed late (a
    // slow tick, Redis away for a moment) may have lapsed in between: its loop stops,
    // and starts again once a renewal makes the lease good again.
    for p in instance.partitions() {
        if !leases.holds(p) {
            instance.begin_stop(p, false);
        }
    }
    let good: Vec<u32> = leases
        .held()
        .keys()
        .copied()
        .filter(|p| leases.holds(*p))
        .collect();
    for p in good {
        let Some(held) = leases.held().get(&p).copied() else {
            continue;
        };
        instance.extend_lease(p, held.until);
        let window = LeaseWindow::new(clock.clone(), held.until);
        instance.start_partition(p, Some((held.token, window)));
    }
}

async fn release<C>(leases: &mut Leases<C>, partition: u32)
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync,
{
    if let Err(e) = leases.release(partition).await {
        tracing::warn!(partition, error = %e, "lease not released");
    }
}

/// The clock a live instance runs on.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(beckon_core::SystemClock)
}
