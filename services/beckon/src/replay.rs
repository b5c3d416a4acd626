//! Replaying a Segment-spec event file through the whole engine, in one process.
//!
//! Events run through the same validation (ingest), user actors and partition workers
//! (user-state), evaluator (journey), timer store (scheduler) and gateway code the services
//! use, on the embedded in-memory store. Time is virtual: each partition's clock follows the
//! timestamps of its events, and timers fire as that clock passes them; nothing sleeps.
//!
//! Output does not depend on thread timing: users never share state, each partition applies
//! its events in file order, and messages are sorted before they are written.
//!
//! Merges (an `alias`, or an event carrying both a `userId` and an `anonymousId`) take the same
//! steps as in the services, through the same evaluator: the known user asks the other id to
//! hand over, that id becomes a tombstone and hands its state to the known user. Here the
//! steps are run one after the other at the event that asked for the merge, while other
//! partitions keep going, so every partition still sees its triggers in file order. After a
//! merge the reader sends the old id's events straight to the known user, which is what the
//! tombstone would do.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use actix::Arbiter;
use anyhow::Context as _;
use beckon_core::partition::partition_of;
use beckon_core::{Duration, Event, EventKind, OutboundMessage, StateLimits, Trigger, Ts};
use beckon_gateway::{Gateway, RecordingChannel};
use beckon_ingest::{Deduper, MemoryDeduper};
use beckon_journey::Engine;
use beckon_scheduler::MemoryTimers;
use beckon_user_state::{
    Forwarder, MemoryStore, Outlet, PartitionWorker, StateError, StateStore, Stats, Timers,
};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use crate::input::EventLines;
use crate::report::{EventCounts, JourneyReport, RejectedLine, Report, StepReport, TimerCounts};

/// Rejected lines listed one by one in the report; the rest are only counted.
const MAX_LISTED_REJECTIONS: usize = 1000;
/// Message ids remembered for deduplication across the whole file.
const DEDUP_CAPACITY: usize = 4_000_000;
/// Events handed to a worker thread at once.
const BATCH: usize = 512;

#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// Segment-spec JSON lines: a file or a pipe, plain or gzip-compressed; `-` is standard
    /// input ([`crate::input`]).
    pub events: PathBuf,
    pub journeys: PathBuf,
    pub workspace: String,
    /// Partitions users are spread over; results do not depend on it.
    pub partitions: u32,
    /// Worker threads (actix arbiters).
    pub workers: usize,
    /// How long virtual time runs on after the last event, so pending timers can fire.
    pub drain: Duration,
    /// Stop virtual time here instead (overrides `drain`).
    pub until: Option<Ts>,
    /// Draw a progress bar on standard error when it is a terminal.
    pub progress: bool,
    /// Users with no event or timer for this long (event time) have their state written to
    /// the store and their actor stopped, so memory follows the active users, not all users
    /// ever seen. `None` keeps every actor to the end.
    pub idle: Option<Duration>,
    /// Bounds on each user's state, as the services are configured.
    pub limits: StateLimits,
}

impl ReplayConfig {
    pub fn new(events: PathBuf, journeys: PathBuf) -> ReplayConfig {
        ReplayConfig {
            events,
            journeys,
            workspace: "default".into(),
            partitions: beckon_core::partition::DEFAULT_PARTITIONS,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            drain: Duration::hours(7 * 24),
            until: None,
            progress: true,
            idle: Some(Duration::hours(24)),
            limits: StateLimits::default(),
        }
    }
}

/// What a replay produced.
pub struct ReplayOutcome {
    pub report: Report,
    /// Every rendered message, sorted by send time, user, journey and step.
    pub messages: Vec<OutboundMessage>,
}

enum Work {
    Events(Vec<(u32, Event)>),
    /// One step of a merge, answered once applied.
    Trigger {
        partition: u32,
        trigger: Box<Trigger>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Finish {
        until: Ts,
        done: oneshot::Sender<WorkerResult>,
    },
}

#[derive(Default)]
struct WorkerResult {
    stats: Stats,
    users: u64,
    pending: u64,
    errors: Vec<String>,
}

/// Runs a replay to the end. Blocks the calling thread; starts its own actor system.
pub fn run(config: &ReplayConfig) -> anyhow::Result<ReplayOutcome> {
    let defs = beckon_journey::load_definitions(&config.journeys)
        .with_context(|| format!("loading journeys from {}", config.journeys.display()))?
        .for_workspace(&config.workspace);
    if defs.journeys.is_empty() {
        tracing::warn!(workspace = %config.workspace, "no journeys for this workspace");
    }
    let engine = Arc::new(Engine::from_definitions(defs).with_state_limits(config.limits));

    #[allow(clippy::disallowed_methods)] // elapsed time is reported, never used in logic
    let started = std::time::Instant::now();

    let system = actix::System::new();
    let mut outcome = system.block_on(replay(config, engine))?;
    outcome.report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(outcome)
}

async fn replay(config: &ReplayConfig, engine: Arc<Engine>) -> anyhow::Result<ReplayOutcome> {
    let mut input = EventLines::open(&config.events)?;

    let recorder = RecordingChannel::new();
    let mut gateway = Gateway::new();
    for channel in ["push", "in_app", "email", "sms", "webhook"] {
        gateway = gateway.with(channel, Arc::new(recorder.clone()));
    }
    let memory = MemoryStore::new();
    let store: Arc<dyn StateStore> = Arc::new(memory.clone());

    let workers = config.workers.max(1);
    let partitions = config.partitions.max(1);
    let (forward_tx, mut forwarded) = mpsc::unbounded_channel();
    let forwarder: Arc<dyn Forwarder> = Arc::new(ToReader(forward_tx));
    let mut arbiters = Vec::with_capacity(workers);
    let mut senders = Vec::with_capacity(workers);
    for w in 0..workers {
        let (tx, rx) = mpsc::channel::<Work>(16);
        let arbiter = Arbiter::new();
        let owned: Vec<u32> = (0..partitions)
            .filter(|p| *p as usize % workers == w)
            .collect();
        let shared = Shared {
            engine: engine.clone(),
            store: store.clone(),
            gateway: gateway.clone(),
            forwarder: forwarder.clone(),
            workspace: config.workspace.clone(),
            idle: config.idle,
        };
        arbiter.spawn_fn(move || {
            actix::spawn(drive(rx, owned, shared));
        });
        arbiters.push(arbiter);
        senders.push(tx);
    }

    let progress = progress_bar(config.progress, input.size());
    let mut counts = EventCounts::default();
    let mut dedup = MemoryDeduper::new(DEDUP_CAPACITY);
    let mut batches: Vec<Vec<(u32, Event)>> = vec![Vec::with_capacity(BATCH); workers];
    let (mut first, mut last) = (Ts::MAX, Ts::MIN);
    let mut merges = Merges::default();

    // Lines are read as bytes, so one that is not UTF-8 is counted, read and rejected like
    // any other bad line, and the replay goes on with the next. A failure to read (a failing
    // disk, a compressed file cut short) would fail the same way forever, and ends the replay
    // with no report: one of part of the input would pass for the whole.
    let mut raw: Vec<u8> = Vec::with_capacity(4096);
    while let Some(line_no) = input.next_line(&mut raw)? {
        let line = match std::str::from_utf8(&raw) {
            Ok(line) => line,
            Err(e) => {
                counts.read += 1;
                let detail = format!(
                    "not UTF-8 text: invalid byte at column {}",
                    e.valid_up_to() + 1
                );
                reject(&mut counts, line_no, "malformed_json", "", &detail);
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        counts.read += 1;
        if line_no.is_multiple_of(8192) {
            progress.set_position(input.consumed());
        }

        let event = match beckon_ingest::parse_line(line) {
            Ok(e) => e,
            Err(r) => {
                reject(&mut counts, line_no, r.reason.as_str(), &r.field, &r.detail);
                continue;
            }
        };
        // A repeated id is how a sender's retry looks, as in the services: taken once, and
        // counted apart from the lines refused as bad input.
        if !dedup.first_time(&config.workspace, &event.message_id) {
            counts.duplicates += 1;
            continue;
        }

        counts.applied += 1;
        first = first.min(event.timestamp);
        last = last.max(event.timestamp);
        let mut event = event;
        if let Some(into) = merges.resolve(&event.user) {
            event.user = into;
        }
        let p = partition_of(&config.workspace, &event.user, partitions);
        let w = p as usize % workers;
        if merges.asks_for_merge(&event) {
            let route = Route {
                workspace: &config.workspace,
                partitions,
                senders: &senders,
            };
            route.flush(&mut batches, w).await?;
            route.apply(p, Trigger::Event(event)).await?;
            merges.settle(&route, &mut batches, &mut forwarded).await?;
            continue;
        }
        batches[w].push((p, event));
        if batches[w].len() >= BATCH {
            let batch = std::mem::replace(&mut batches[w], Vec::with_capacity(BATCH));
            senders[w]
                .send(Work::Events(batch))
                .await
                .context("a replay worker stopped")?;
        }
    }
    progress.finish_and_clear();

    let until = config.until.unwrap_or_else(|| {
        if last == Ts::MIN {
            Ts(0)
        } else {
            last.saturating_add(config.drain)
        }
    });
    let mut results = Vec::new();
    for (w, tx) in senders.iter().enumerate() {
        let batch = std::mem::take(&mut batches[w]);
        if !batch.is_empty() {
            tx.send(Work::Events(batch))
                .await
                .context("a replay worker stopped")?;
        }
        let (done, rx) = oneshot::channel();
        tx.send(Work::Finish { until, done })
            .await
            .context("a replay worker stopped")?;
        results.push(rx);
    }

    let mut stats = Stats::default();
    let (mut live, mut pending) = (0, 0);
    for rx in results {
        let r = rx
            .await
            .context("a replay worker stopped before finishing")?;
        if let Some(e) = r.errors.first() {
            anyhow::bail!("replay worker failed: {e}");
        }
        stats.merge(r.stats);
        live += r.users;
        pending += r.pending;
    }
    // Every user is written and stopped by the end.
    let users = (memory.len() as u64).max(live);
    for arbiter in arbiters {
        arbiter.stop();
    }

    let mut messages = recorder.take();
    messages.sort_by(|a, b| {
        (a.at, &a.user_id, &a.journey, &a.step, &a.idempotency_key).cmp(&(
            b.at,
            &b.user_id,
            &b.journey,
            &b.step,
            &b.idempotency_key,
        ))
    });

    let report = Report {
        events: counts,
        users,
        journeys: journey_reports(&engine, &stats),
        timers: TimerCounts {
            set: stats.timers_set,
            fired: stats.timers_fired,
            pending,
        },
        virtual_from: (first != Ts::MAX).then(|| first.to_string()),
        virtual_until: (last != Ts::MIN).then(|| until.to_string()),
        elapsed_ms: 0,
    };
    Ok(ReplayOutcome { report, messages })
}

/// Triggers forwarded by the workers, back to the reader, which runs merges.
struct ToReader(mpsc::UnboundedSender<(String, Trigger)>);

impl Forwarder for ToReader {
    fn forward<'a>(
        &'a self,
        _workspace: &'a str,
        key: &'a str,
        trigger: &'a Trigger,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let sent = self.0.send((key.to_string(), trigger.clone()));
        Box::pin(async move {
            sent.map_err(|_| StateError::Unavailable("the replay reader stopped".into()))
        })
    }
}

/// How the reader reaches the partition workers.
struct Route<'a> {
    workspace: &'a str,
    partitions: u32,
    senders: &'a [mpsc::Sender<Work>],
}

impl Route<'_> {
    /// Hands worker `w` the events batched for it, so they apply before what comes next.
    async fn flush(&self, batches: &mut [Vec<(u32, Event)>], w: usize) -> anyhow::Result<()> {
        let batch = std::mem::replace(&mut batches[w], Vec::with_capacity(BATCH));
        if !batch.is_empty() {
            self.senders[w]
                .send(Work::Events(batch))
                .await
                .context("a replay worker stopped")?;
        }
        Ok(())
    }

    /// Applies one trigger on its partition's worker and waits until it is applied.
    async fn apply(&self, partition: u32, trigger: Trigger) -> anyhow::Result<()> {
        let (done, answer) = oneshot::channel();
        let w = partition as usize % self.senders.len();
        self.senders[w]
            .send(Work::Trigger {
                partition,
                trigger: Box::new(trigger),
                done,
            })
            .await
            .context("a replay worker stopped")?;
        answer
            .await
            .context("a replay worker stopped")?
            .map_err(|e| anyhow::anyhow!("replay worker failed: {e}"))
    }
}

/// What the reader knows about merges: pairs already asked for, and ids merged away.
#[derive(Default)]
struct Merges {
    asked: HashSet<(String, String)>,
    merged_into: HashMap<String, String>,
    forwarded: HashSet<String>,
}

impl Merges {
    /// The user `user` was merged into, when it was; its events go there.
    fn resolve(&self, user: &str) -> Option<String> {
        if self.merged_into.is_empty() {
            return None;
        }
        let mut id = user;
        // Bounded: a merge never points back at an id that was merged away.
        for _ in 0..self.merged_into.len() {
            match self.merged_into.get(id) {
                Some(next) => id = next,
                None => break,
            }
        }
        (id != user).then(|| id.to_string())
    }

    /// Whether the event names a second id not yet asked about for this user.
    fn asks_for_merge(&mut self, event: &Event) -> bool {
        let other = match event.kind {
            EventKind::Alias => event.previous_id.as_deref(),
            _ => event.anonymous_id.as_deref(),
        };
        let Some(other) = other.filter(|o| !o.is_empty() && *o != event.user) else {
            return false;
        };
        self.asked.insert((event.user.clone(), other.to_string()))
    }

    /// Runs the triggers the last one forwarded, and those they forward, one at a time.
    async fn settle(
        &mut self,
        route: &Route<'_>,
        batches: &mut [Vec<(u32, Event)>],
        forwarded: &mut mpsc::UnboundedReceiver<(String, Trigger)>,
    ) -> anyhow::Result<()> {
        while let Ok((key, trigger)) = forwarded.try_recv() {
            if !self.forwarded.insert(key) {
                continue;
            }
            if let Trigger::MergeIn(m) = &trigger {
                self.merged_into.insert(m.from.clone(), m.user.clone());
            }
            let p = partition_of(route.workspace, trigger.user(), route.partitions);
            route
                .flush(batches, p as usize % route.senders.len())
                .await?;
            route.apply(p, trigger).await?;
        }
        Ok(())
    }
}

/// What every worker thread shares.
struct Shared {
    engine: Arc<Engine>,
    store: Arc<dyn StateStore>,
    gateway: Gateway,
    forwarder: Arc<dyn Forwarder>,
    workspace: String,
    idle: Option<Duration>,
}

/// One worker thread: owns some partitions, applies their events in arrival order.
async fn drive(mut rx: mpsc::Receiver<Work>, owned: Vec<u32>, shared: Shared) {
    let Shared {
        engine,
        store,
        gateway,
        forwarder,
        workspace,
        idle,
    } = shared;
    let mut workers: BTreeMap<u32, PartitionWorker> = owned
        .into_iter()
        .map(|p| {
            let timers = Timers::Local(Box::new(MemoryTimers::new()));
            let outlet: Arc<dyn Outlet> = Arc::new(gateway.clone());
            let w = PartitionWorker::new(p, engine.clone(), store.clone(), timers, outlet)
                .with_forwarder(forwarder.clone());
            (p, w)
        })
        .collect();
    let mut errors = Vec::new();
    // When each partition next looks for idle users: every half idle period of its time.
    let mut sweeps: BTreeMap<u32, Ts> = BTreeMap::new();

    while let Some(work) = rx.recv().await {
        match work {
            Work::Trigger {
                partition,
                trigger,
                done,
            } => {
                let result = match workers.get_mut(&partition) {
                    Some(worker) => worker
                        .on_trigger(&workspace, *trigger)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err(format!("partition {partition} is not on this worker")),
                };
                let _ = done.send(result);
            }
            Work::Events(batch) => {
                for (p, event) in batch {
                    let Some(worker) = workers.get_mut(&p) else {
                        continue;
                    };
                    if let Err(e) = worker.on_event(&workspace, event).await {
                        errors.push(e.to_string());
                    }
                }
                if let Some(idle) = idle
                    && let Err(e) = sweep(&mut workers, &mut sweeps, idle).await
                {
                    errors.push(e.to_string());
                }
            }
            Work::Finish { until, done } => {
                let mut result = WorkerResult::default();
                for worker in workers.values_mut() {
                    if let Err(e) = worker.advance(until).await {
                        errors.push(e.to_string());
                    }
                    // Every user leaves memory for the store now: retiring hands each state
                    // over instead of copying it, as flushing would.
                    if let Err(e) = worker.retire_idle(Duration::from_millis(0)).await {
                        errors.push(e.to_string());
                    }
                    result.stats.merge(worker.stats().clone());
                    result.users += worker.users() as u64;
                    result.pending += worker.pending_timers() as u64;
                }
                result.errors = std::mem::take(&mut errors);
                let _ = done.send(result);
                return;
            }
        }
    }
}

/// Writes and stops idle users' actors in partitions whose time passed their next sweep.
/// Stopping depends only on event time, and a stopped user reloads exactly what was written,
/// so the output is the same with or without it.
async fn sweep(
    workers: &mut BTreeMap<u32, PartitionWorker>,
    sweeps: &mut BTreeMap<u32, Ts>,
    idle: Duration,
) -> Result<(), StateError> {
    let period = Duration::from_millis((idle.as_millis() / 2).max(1));
    for (p, worker) in workers.iter_mut() {
        let now = worker.now();
        let next = sweeps
            .entry(*p)
            .or_insert_with(|| now.saturating_add(period));
        if now < *next {
            continue;
        }
        worker.retire_idle(idle).await?;
        *next = now.saturating_add(period);
    }
    Ok(())
}

/// The longest reason listed in a report. Reasons name what was refused and why, and are
/// short; the bound only keeps a line full of garbage from filling the report.
const MAX_DETAIL_CHARS: usize = 1000;

/// `detail` whole, or its start and a mark that the rest was left out.
fn bounded(detail: &str) -> String {
    match detail.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((cut, _)) => format!("{}…", &detail[..cut]),
        None => detail.to_string(),
    }
}

fn reject(counts: &mut EventCounts, line: u64, reason: &str, field: &str, detail: &str) {
    counts.rejected += 1;
    *counts
        .rejected_by_reason
        .entry(reason.to_string())
        .or_default() += 1;
    if counts.rejected_lines.len() < MAX_LISTED_REJECTIONS {
        counts.rejected_lines.push(RejectedLine {
            line,
            reason: reason.to_string(),
            field: field.to_string(),
            detail: bounded(detail),
        });
    }
}

fn journey_reports(engine: &Engine, stats: &Stats) -> Vec<JourneyReport> {
    engine
        .journeys()
        .iter()
        .map(|j| {
            let s = stats.journeys.get(&j.id).cloned().unwrap_or_default();
            JourneyReport {
                id: j.id.clone(),
                version: j.version,
                entered: s.entered,
                not_entered: s.not_entered,
                exited_on_goal: s.exited_on_goal,
                exited: s.exited,
                completed: s.completed,
                skipped_messages: s.skipped,
                messages: s.messages.clone(),
                steps: j
                    .steps
                    .iter()
                    .map(|step| StepReport {
                        id: step.id.clone(),
                        entered: s.steps.get(&step.id).copied().unwrap_or(0),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// A bar over the input's bytes, or, for a pipe, whose size nobody knows, a count of the
/// bytes read so far.
fn progress_bar(wanted: bool, size: Option<u64>) -> indicatif::ProgressBar {
    // CI has no terminal: draw nothing there rather than filling logs with escape codes.
    if !wanted || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let (bar, template) = match size {
        Some(size) => (
            indicatif::ProgressBar::new(size),
            "{spinner} replay [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} replay {bytes} read {bytes_per_sec}",
        ),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The JSON form of a recorded message in the `--messages` file.
pub fn message_json(m: &OutboundMessage) -> serde_json::Value {
    let mut obj = serde_json::json!({
        "user_id": m.user_id,
        "journey": m.journey,
        "version": m.version,
        "step": m.step,
        "channel": m.channel,
        "at": m.at.to_string(),
        "body": m.body,
        "idempotency_key": m.idempotency_key,
    });
    if let Some(map) = obj.as_object_mut() {
        if let Some(t) = &m.title {
            map.insert("title".into(), t.clone().into());
        }
        if let Some(s) = &m.subject {
            map.insert("subject".into(), s.clone().into());
        }
    }
    obj
}
