//! One partition's users, their actors and timers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ahash::RandomState;

use actix::{Actor, Addr};
use beckon_core::{
    Decision, DecisionKind, Duration, Effect, Event, OutboundMessage, Timer, Trigger, Ts, UserState,
};
use beckon_journey::CurrentEngine;
use beckon_telemetry::{Admit, LogRateLimiter, Metrics};
use futures::StreamExt as _;
use tracing::{Instrument as _, Span};

use crate::actor::{Apply, Hibernate, Snapshot, UserActor};
use crate::dormant::{self, Dormitory, Woken};
use crate::error::StateError;
use crate::outlet::{Forwarder, Outlet, TimerSink, Timers};
use crate::stats::Stats;
use crate::store::{LogAck, StateStore, Write, Written};

/// Timers fired per batch while catching up; bounds the work between two checks.
const TIMER_BATCH: usize = 256;

/// A change to the scheduler's timers, held until the batch's users are written, with the
/// span of the entry that asked for it.
enum TimerOp {
    Set(Timer, Span),
    Cancel {
        workspace: String,
        user: String,
        id: String,
        span: Span,
    },
}

struct Active {
    addr: Addr<UserActor>,
    /// Version last written to the store; the next write expects it.
    stored: u64,
    dirty: bool,
    /// Partition time of the user's last trigger, for stopping idle actors.
    last_used: Ts,
}

/// Drives the users of one partition through triggers in order.
///
/// Time in a partition only moves forward: before an event at time `t` is applied, every timer
/// due at or before `t` fires, so a timer and an event in the same millisecond resolve with
/// the timer first. Must run inside an actix arbiter, since it starts actors.
pub struct PartitionWorker {
    partition: u32,
    engine: CurrentEngine,
    store: Arc<dyn StateStore>,
    timers: Timers,
    outlet: Arc<dyn Outlet>,
    forwarder: Option<Arc<dyn Forwarder>>,
    /// Timer changes for the scheduler, in the order the evaluations asked for them, sent
    /// together before the users are written: one request per run instead of one per timer.
    timer_ops: Vec<TimerOp>,
    /// Users whose held messages are sent at once; 0 sends each message when it is produced.
    send_concurrency: usize,
    /// Messages produced and not yet sent, in the order produced.
    held_sends: Vec<(OutboundMessage, Span)>,
    /// Live actors by workspace, then user: two levels so lookups borrow, not allocate.
    /// Hashed with ahash, keyed at random per process: user ids come from clients, and
    /// SipHash cost more than the lookup itself on every trigger.
    actors: HashMap<String, HashMap<String, Active, RandomState>, RandomState>,
    /// Written users idle long enough to sleep in compact form, actor stopped.
    dormant: Dormitory,
    /// When hibernated users are next looked at for forgetting: a sweep over all of them
    /// after every batch would cost more than the batch.
    next_forget: Ts,
    now: Ts,
    /// The lease's fencing token, when a lease grants the partition: every write checks it.
    fence: Option<u64>,
    /// The store keeps the partition's log too (one Redis), so a batch's acknowledgement can
    /// go with a state write.
    log_in_store: bool,
    stats: Stats,
    metrics: Metrics,
    /// Limits warnings about users over the event-name limit; without it they are logged at
    /// `debug`, as a replay wants.
    warnings: Option<Arc<LogRateLimiter>>,
}

impl PartitionWorker {
    pub fn new(
        partition: u32,
        engine: impl Into<CurrentEngine>,
        store: Arc<dyn StateStore>,
        timers: Timers,
        outlet: Arc<dyn Outlet>,
    ) -> PartitionWorker {
        PartitionWorker {
            partition,
            engine: engine.into(),
            store,
            timers,
            outlet,
            forwarder: None,
            timer_ops: Vec::new(),
            send_concurrency: 0,
            held_sends: Vec::new(),
            actors: HashMap::default(),
            dormant: Dormitory::default(),
            next_forget: Ts::MIN,
            now: Ts::MIN,
            fence: None,
            log_in_store: false,
            stats: Stats::default(),
            metrics: Metrics::global(),
            warnings: None,
        }
    }

    /// Warns about users whose event names went past the limit, at most as often as
    /// `warnings` lets through.
    pub fn with_warnings(mut self, warnings: Arc<LogRateLimiter>) -> PartitionWorker {
        self.warnings = Some(warnings);
        self
    }

    /// Where triggers addressed to users of other partitions go (merges). Without one, a
    /// batch that needs to forward fails and is retried.
    pub fn with_forwarder(mut self, forwarder: Arc<dyn Forwarder>) -> PartitionWorker {
        self.forwarder = Some(forwarder);
        self
    }

    /// Holds messages until the batch's users are written, then sends them with up to
    /// `users` users' messages in flight at once, each user's in the order produced. For a
    /// partition loop, whose batch ends with [`PartitionWorker::flush`]: a batch then waits
    /// for its slowest user's messages, not for the sum of everyone's. Without it (a replay)
    /// each message is sent when it is produced.
    pub fn with_concurrent_sends(mut self, users: usize) -> PartitionWorker {
        self.send_concurrency = users;
        self
    }

    /// Records actors, applied events, journey and segment changes on `metrics` instead of
    /// the global meter.
    pub fn with_metrics(mut self, metrics: Metrics) -> PartitionWorker {
        self.metrics = metrics;
        self
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Makes every state write of this worker conditional on the partition's lease still
    /// carrying `token`, so a worker that lost its lease unnoticed cannot overwrite the new
    /// owner's writes.
    pub fn with_fence(mut self, token: u64) -> PartitionWorker {
        self.fence = Some(token);
        self
    }

    /// Says that the store holds the partition's log as well (the same Redis, the same key
    /// layout), so [`PartitionWorker::flush_acking`] acknowledges a batch in the same script
    /// as a state write instead of in a call of its own.
    pub fn with_log_in_store(mut self) -> PartitionWorker {
        self.log_in_store = true;
        self
    }

    /// The partition's current time: the latest event or timer it has applied.
    pub fn now(&self) -> Ts {
        self.now
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Users with a live actor.
    pub fn users(&self) -> usize {
        self.actors.values().map(HashMap::len).sum()
    }

    /// Users hibernated: actor stopped, state kept in compact form.
    pub fn hibernated(&self) -> usize {
        self.dormant.len()
    }

    /// Bytes of the hibernated users' compact records.
    pub fn hibernated_bytes(&self) -> usize {
        self.dormant.record_bytes()
    }

    /// Timers waiting in the worker; remote timers are counted by the scheduler.
    pub fn pending_timers(&self) -> usize {
        match &self.timers {
            Timers::Local(t) => t.len(),
            Timers::Remote(_) => 0,
        }
    }

    /// Fires due local timers, then applies the event.
    pub async fn on_event(&mut self, workspace: &str, event: Event) -> Result<(), StateError> {
        self.advance(event.timestamp).await?;
        let user = event.user.clone();
        self.apply(workspace, &user, Trigger::Event(event)).await
    }

    /// Applies a trigger read from the partition's log: an event, a timer the scheduler
    /// fired, a step of a merge, or the order to forget a user. Local timers due by then fire
    /// first. A redelivered entry the user already applied changes nothing.
    pub async fn on_trigger(
        &mut self,
        workspace: &str,
        trigger: Trigger,
    ) -> Result<(), StateError> {
        if let Trigger::Forget(f) = &trigger {
            // The order's time is the wall clock's when it was accepted, not the partition's
            // event time: it must not fire timers ahead of the events around it.
            return self.forget(workspace, &f.user).await.map(drop);
        }
        self.advance(trigger.at()).await?;
        // Events are counted by the partition loop once acknowledged, so that a batch applied
        // again after a failure does not count them again.
        if let Trigger::Timer(_) = &trigger {
            self.stats.timers_fired += 1;
        }
        let user = trigger.user().to_string();
        self.apply(workspace, &user, trigger).await
    }

    /// Moves partition time to `to`, firing every local timer due by then (including timers
    /// that firing sets for no later than `to`).
    pub async fn advance(&mut self, to: Ts) -> Result<(), StateError> {
        while let Timers::Local(timers) = &mut self.timers {
            let due = timers.pop_due(to, TIMER_BATCH);
            if due.is_empty() {
                break;
            }
            for timer in due {
                self.now = self.now.max(timer.due);
                self.stats.timers_fired += 1;
                let (workspace, user) = (timer.workspace.clone(), timer.user.clone());
                self.apply(&workspace, &user, Trigger::Timer(timer)).await?;
            }
        }
        self.now = self.now.max(to);
        Ok(())
    }

    /// Lets go of a user, in log order: the live actor (with whatever it applied and did not
    /// write) and the hibernated record are dropped, local timers cancelled, and what the
    /// store keeps of the user erased again, since triggers ordered before this one may have
    /// written it after the ForgetUser call erased it. The next trigger for the id starts
    /// from an empty user. Returns whether anything was held in memory.
    ///
    /// With a fence, the erase is refused with [`StateError::Fenced`] once the partition's
    /// lease has passed to another instance.
    pub async fn forget(&mut self, workspace: &str, user: &str) -> Result<bool, StateError> {
        // Effects asked for before the order go out first, so none of them sets a timer for
        // the user after the store's copy is erased.
        self.settle().await?;
        let live = self
            .actors
            .get_mut(workspace)
            .and_then(|users| users.remove(user))
            .is_some();
        if live {
            self.actors_stopped(1);
        }
        let hibernated = self.dormant.remove(workspace, user);
        let timers = match &mut self.timers {
            Timers::Local(t) => t.cancel_user(workspace, user),
            // The scheduler's timers are erased with the rest of the user in the store.
            Timers::Remote(_) => 0,
        };

        // Fenced like every write: a late forget from an owner that lost the partition must
        // not erase what the new owner wrote since.
        let removed = match self.fence {
            Some(token) => self.store.forget_fenced(workspace, user, token).await?,
            None => self.store.forget(workspace, user).await?,
        };
        tracing::debug!(
            partition = self.partition,
            beckon.workspace = %workspace,
            live,
            hibernated,
            timers,
            removed,
            "user let go of"
        );
        Ok(live || hibernated)
    }

    /// When the next local timer is due, if any.
    pub fn next_due(&self) -> Option<Ts> {
        match &self.timers {
            Timers::Local(t) => t.next_due(),
            Timers::Remote(_) => None,
        }
    }

    /// Performs the effects held back so far (messages, timer changes), then writes every
    /// changed user's state to the store. Users are written concurrently: each write is its
    /// own compare-and-set on its own key, so their order does not matter, and one round trip
    /// carries many.
    pub async fn flush(&mut self) -> Result<usize, StateError> {
        self.write(None).await.map(|(written, _)| written)
    }

    /// Like [`PartitionWorker::flush`], and acknowledges the log entries of `ack` with the
    /// last changed user's write when the store keeps the log
    /// ([`PartitionWorker::with_log_in_store`]): the batch then costs one round trip less,
    /// and its acknowledgement happens only if that write does. The other users are written
    /// first, so nothing is acknowledged before every write of the batch has succeeded.
    /// Answers the users written and the log's backlog after the acknowledgement, or `None`
    /// when the caller must acknowledge through the log (no user changed, or a store without
    /// the log).
    pub async fn flush_acking(&mut self, ack: &LogAck) -> Result<(usize, Option<u64>), StateError> {
        let ack = self.log_in_store.then_some(ack);
        self.write(ack).await
    }

    async fn write(&mut self, ack: Option<&LogAck>) -> Result<(usize, Option<u64>), StateError> {
        self.settle().await?;

        let mut dirty: Vec<&mut Active> = self
            .actors
            .values_mut()
            .flat_map(|m| m.values_mut())
            .filter(|a| a.dirty)
            .collect();
        if dirty.is_empty() {
            return Ok((0, None));
        }
        let states =
            futures::future::try_join_all(dirty.iter().map(|a| a.addr.send(Snapshot))).await?;

        let writes: Vec<Write<'_>> = states
            .iter()
            .zip(dirty.iter())
            .map(|(state, active)| Write {
                state,
                expected: active.stored,
            })
            .collect();
        let Written { results, backlog } = self.store.save_all(&writes, self.fence, ack).await;

        // The users written keep their new version even when others failed: a retried batch
        // finds them up to date and skips the entries they applied.
        let mut written = 0;
        let mut failure: Option<StateError> = None;
        for ((active, state), result) in dirty.iter_mut().zip(&states).zip(results) {
            match result {
                Ok(()) => {
                    active.stored = state.version;
                    active.dirty = false;
                    written += 1;
                }
                // Being fenced off decides what the loop does next, so it wins over others;
                // the user held back for another's failure says least.
                Err(e) if failure.is_none() || matches!(e, StateError::Fenced { .. }) => {
                    failure = Some(e);
                }
                Err(_) => {}
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok((written, backlog)),
        }
    }

    /// Sends the held messages and timer changes, the two side by side: they go to different
    /// targets, and each keeps its own order.
    async fn settle(&mut self) -> Result<(), StateError> {
        let sends = std::mem::take(&mut self.held_sends);
        let ops = std::mem::take(&mut self.timer_ops);
        let sink = match &self.timers {
            Timers::Remote(sink) => Some(sink.as_ref()),
            Timers::Local(_) => None,
        };
        let (sent, set) = futures::join!(
            send_chains(self.outlet.as_ref(), sends, self.send_concurrency),
            settle_timers(sink, ops),
        );
        sent.and(set)
    }

    /// Stops the actors of users with no trigger for `idle` of partition time whose state is
    /// written, and forgets hibernated users as idle; their next trigger loads them again
    /// from the store. Returns how many live actors stopped.
    ///
    /// Time is the partition's, not the wall clock's, so a replay evicts by event time and a
    /// live partition by the time of its latest trigger.
    pub fn evict_idle(&mut self, idle: Duration) -> usize {
        self.evict_idle_at(self.now, idle)
    }

    /// [`PartitionWorker::evict_idle`] as of `at` rather than partition time: for a partition
    /// with no entries, whose time stands still while its users keep idling (see
    /// [`crate::live`]). An `at` before partition time counts as partition time.
    pub fn evict_idle_at(&mut self, at: Ts, idle: Duration) -> usize {
        let at = at.max(self.now);
        let horizon = at.saturating_sub(idle);
        let before = self.users();
        for users in self.actors.values_mut() {
            users.retain(|_, a| a.dirty || a.last_used > horizon);
            dormant::shrink(users);
        }
        let stopped = before - self.users();
        if stopped > 0 {
            self.actors_stopped(stopped);
            tracing::debug!(partition = self.partition, stopped, "idle actors stopped");
        }

        if at >= self.next_forget {
            let forgotten = self.dormant.forget_idle(horizon);
            let period = Duration((idle.0 / 2).max(1));
            self.next_forget = at.saturating_add(period);
            if forgotten > 0 {
                tracing::debug!(
                    partition = self.partition,
                    forgotten,
                    "idle hibernated users forgotten"
                );
            }
        }
        stopped
    }

    /// Hibernates written users with no trigger for `after` of partition time: their actor
    /// stops and their state stays in memory in compact form, so their next trigger needs no
    /// store read. Users with unwritten changes keep their actor. Returns how many hibernated.
    pub async fn hibernate_idle(&mut self, after: Duration) -> Result<usize, StateError> {
        self.hibernate_idle_at(self.now, after).await
    }

    /// [`PartitionWorker::hibernate_idle`] as of `at` rather than partition time, as
    /// [`PartitionWorker::evict_idle_at`] is for eviction.
    pub async fn hibernate_idle_at(
        &mut self,
        at: Ts,
        after: Duration,
    ) -> Result<usize, StateError> {
        let horizon = at.max(self.now).saturating_sub(after);
        let mut sleepers = Vec::new();
        for (workspace, users) in &mut self.actors {
            let idle: Vec<String> = users
                .iter()
                .filter(|(_, a)| !a.dirty && a.last_used <= horizon)
                .map(|(u, _)| u.clone())
                .collect();
            for user in idle {
                if let Some(active) = users.remove(&user) {
                    sleepers.push((workspace.clone(), active));
                }
            }
            dormant::shrink(users);
        }

        let count = sleepers.len();
        for (workspace, active) in sleepers {
            let state = active.addr.send(Hibernate).await?;
            if let Err(e) = self.dormant.put(&state, active.stored, active.last_used) {
                // The store holds this state: the user is only loaded from there next time.
                tracing::warn!(
                    partition = self.partition,
                    beckon.workspace = %workspace,
                    error = %e,
                    "user not hibernated"
                );
            }
        }
        if count > 0 {
            self.actors_stopped(count);
            tracing::debug!(partition = self.partition, count, "idle users hibernated");
        }
        Ok(count)
    }

    /// Writes the users with no trigger for `idle` of partition time and stops their actors,
    /// leaving active users alone, written or not. For a replay, whose store needs nothing
    /// until the end except what leaves memory. Returns how many stopped.
    pub async fn retire_idle(&mut self, idle: Duration) -> Result<usize, StateError> {
        let horizon = self.now.saturating_sub(idle);
        let mut stopped = 0;
        for users in self.actors.values_mut() {
            let idle_users: Vec<String> = users
                .iter()
                .filter(|(_, a)| a.last_used <= horizon)
                .map(|(u, _)| u.clone())
                .collect();
            for user in idle_users {
                let Some(active) = users.remove(&user) else {
                    continue;
                };
                if active.dirty {
                    // The actor stops either way, so it hands its state over rather than
                    // copying it.
                    let state = active.addr.send(Hibernate).await?;
                    if let Err(e) = self.store.save(&state, active.stored).await {
                        // Written before it is forgotten: a failed write keeps the user live.
                        let addr = UserActor::new(state, self.engine.clone()).start();
                        users.insert(user, Active { addr, ..active });
                        return Err(e);
                    }
                }
                stopped += 1;
            }
        }
        if stopped > 0 {
            tracing::debug!(partition = self.partition, stopped, "idle actors retired");
        }
        Ok(stopped)
    }

    /// Stops every actor whose state changed since it was last written, so the next trigger
    /// reloads it from the store. After a failed batch this puts users back where the log's
    /// unacknowledged entries expect them, and applying those entries again is exact.
    pub fn discard_unsaved(&mut self) -> usize {
        // The entries that asked for them are applied again, and ask again.
        self.timer_ops.clear();
        self.held_sends.clear();
        let before = self.users();
        for users in self.actors.values_mut() {
            users.retain(|_, a| !a.dirty);
        }
        let stopped = before - self.users();
        self.actors_stopped(stopped);
        stopped
    }

    fn actors_stopped(&self, n: usize) {
        for _ in 0..n {
            self.metrics.actor_stopped();
        }
    }

    /// The live state of a user, loading it when no actor holds it.
    pub async fn user(&mut self, workspace: &str, user: &str) -> Result<UserState, StateError> {
        match self.actor(workspace, user, false).await? {
            Some(addr) => Ok(addr.send(Snapshot).await?),
            None => Err(StateError::NotFound(user.to_string())),
        }
    }

    async fn apply(
        &mut self,
        workspace: &str,
        user: &str,
        trigger: Trigger,
    ) -> Result<(), StateError> {
        // A timer belongs to the state that set it, a delivery outcome to the state that sent
        // the message. With no state held or stored, the user was forgotten since, and the
        // trigger has nothing to act on: applying it would only bring the id back into the
        // store, as a new user that journeys could enter.
        let known_only = match &trigger {
            Trigger::Timer(_) => true,
            Trigger::Event(e) => beckon_gateway::events::is_delivery_outcome(e),
            _ => false,
        };
        let Some(addr) = self.actor(workspace, user, known_only).await? else {
            tracing::debug!(
                partition = self.partition,
                beckon.workspace = %workspace,
                "trigger for a user with no state dropped"
            );
            return Ok(());
        };
        let applied = addr.send(Apply::new(trigger)).await?;
        if let Some(active) = self.actors.get_mut(workspace).and_then(|m| m.get_mut(user)) {
            active.dirty = true;
            active.last_used = self.now;
        }
        if applied.names_evicted > 0 {
            self.names_evicted(workspace, user, applied.names_evicted);
        }
        if applied.traits_dropped > 0 {
            self.traits_dropped(workspace, user, applied.traits_dropped);
        }
        self.perform(workspace, applied.effects).await
    }

    /// Counts names a user's statistics forgot, and says so: a client that makes up event
    /// names (an id in the name, say) does it on every event, so the line is rate-limited.
    fn names_evicted(&self, workspace: &str, user: &str, evicted: u64) {
        self.metrics.event_names_evicted(evicted);
        let limit = self.engine.get().state_limits().event_names;
        let admit = self
            .warnings
            .as_ref()
            .map(|w| w.admit("state.event_names_evicted"));
        match admit {
            Some(Admit::Log { suppressed }) => tracing::warn!(
                partition = self.partition,
                beckon.workspace = %workspace,
                enduser.id = %user,
                limit,
                evicted,
                suppressed,
                "user has more distinct event names than the limit; least recently seen forgotten"
            ),
            Some(Admit::Suppress) => {}
            None => tracing::debug!(
                partition = self.partition,
                beckon.workspace = %workspace,
                enduser.id = %user,
                limit,
                evicted,
                "user has more distinct event names than the limit; least recently seen forgotten"
            ),
        }
    }

    /// Counts trait changes dropped to keep a user's traits within their limit, and says so:
    /// a client that adds a new trait on every identify does it on every event, so the line
    /// is rate-limited.
    fn traits_dropped(&self, workspace: &str, user: &str, dropped: u64) {
        self.metrics.traits_dropped(dropped);
        let limit = self.engine.get().state_limits().trait_bytes;
        let admit = self
            .warnings
            .as_ref()
            .map(|w| w.admit("state.traits_dropped"));
        match admit {
            Some(Admit::Log { suppressed }) => tracing::warn!(
                partition = self.partition,
                beckon.workspace = %workspace,
                enduser.id = %user,
                limit_bytes = limit,
                dropped,
                suppressed,
                "trait changes would take the user's traits past the limit; dropped"
            ),
            Some(Admit::Suppress) => {}
            None => tracing::debug!(
                partition = self.partition,
                beckon.workspace = %workspace,
                enduser.id = %user,
                limit_bytes = limit,
                dropped,
                "trait changes would take the user's traits past the limit; dropped"
            ),
        }
    }

    /// The user's actor, started from the hibernated record or the store when there is none.
    /// With `known_only`, a user with neither gets no actor (`None`) instead of a new one.
    async fn actor(
        &mut self,
        workspace: &str,
        user: &str,
        known_only: bool,
    ) -> Result<Option<Addr<UserActor>>, StateError> {
        if let Some(active) = self.actors.get(workspace).and_then(|m| m.get(user)) {
            return Ok(Some(active.addr.clone()));
        }

        // A woken user keeps its idle time: only a trigger makes it recent.
        let (state, stored, last_used) = match self.dormant.take(workspace, user) {
            Some(Ok(Woken {
                state,
                stored,
                last_used,
            })) => (state, stored, last_used),
            Some(Err(e)) => {
                // The store holds what was hibernated; read it from there instead.
                tracing::warn!(partition = self.partition, error = %e, "hibernated user unreadable");
                self.load(workspace, user).await?
            }
            None => self.load(workspace, user).await?,
        };
        if known_only && stored == 0 {
            return Ok(None);
        }
        let addr = UserActor::new(state, self.engine.clone()).start();
        self.metrics.actor_started();
        self.metrics.actor_activated();
        tracing::trace!(partition = self.partition, "actor started");
        self.actors
            .entry(workspace.to_string())
            .or_default()
            .insert(
                user.to_string(),
                Active {
                    addr: addr.clone(),
                    stored,
                    dirty: false,
                    last_used,
                },
            );
        Ok(Some(addr))
    }

    /// A user's state from the store, or a new user's, with the version stored.
    async fn load(&self, workspace: &str, user: &str) -> Result<(UserState, u64, Ts), StateError> {
        let loaded = self.store.load(workspace, user).await?;
        let stored = loaded.as_ref().map_or(0, |s| s.version);
        let state = loaded.unwrap_or_else(|| UserState::new(workspace, user));
        Ok((state, stored, self.now))
    }

    /// Performs effects in order. Every target is idempotent, so a failure part-way is
    /// repaired by applying the trigger again: the user's state was not yet written, so the
    /// same effects come out with the same ids.
    async fn perform(&mut self, workspace: &str, effects: Vec<Effect>) -> Result<(), StateError> {
        for effect in effects {
            match effect {
                Effect::SetTimer(mut timer) => {
                    if !timer.due.in_calendar() {
                        // A wait that ends past the calendar never ends: the user stays in
                        // the step until an event moves them on. Setting such a timer would
                        // be refused, and retrying it would hold up the whole partition.
                        tracing::warn!(
                            partition = self.partition,
                            beckon.workspace = %timer.workspace,
                            journey = %timer.journey,
                            due_ms = timer.due.as_millis(),
                            "timer due past the calendar not set"
                        );
                        continue;
                    }
                    self.stats.timers_set += 1;
                    match &mut self.timers {
                        Timers::Local(t) => t.schedule(timer),
                        Timers::Remote(_) => {
                            // The firing, much later and elsewhere, links back to this work.
                            timer.trace = beckon_telemetry::current_trace_string();
                            self.timer_ops.push(TimerOp::Set(timer, Span::current()));
                        }
                    }
                }
                Effect::CancelTimer {
                    workspace,
                    user,
                    id,
                } => match &mut self.timers {
                    Timers::Local(t) => {
                        t.cancel(&workspace, &user, &id);
                    }
                    Timers::Remote(_) => self.timer_ops.push(TimerOp::Cancel {
                        workspace,
                        user,
                        id,
                        span: Span::current(),
                    }),
                },
                Effect::Send(message) => {
                    self.stats.message(&message);
                    if self.send_concurrency > 0 {
                        self.held_sends.push((message, Span::current()));
                    } else {
                        self.outlet.send(&message).await?;
                    }
                }
                Effect::Record(decision) => {
                    record_decision(&self.metrics, &decision);
                    self.stats.decision(&decision);
                }
                Effect::Forward { key, trigger } => {
                    let Some(forwarder) = &self.forwarder else {
                        return Err(StateError::Unavailable(format!(
                            "partition {} cannot forward {key}: no log to forward to",
                            self.partition
                        )));
                    };
                    forwarder.forward(workspace, &key, &trigger).await?;
                }
            }
        }
        Ok(())
    }
}

impl Drop for PartitionWorker {
    /// The worker's actors stop with it.
    fn drop(&mut self) {
        self.actors_stopped(self.users());
    }
}

/// The domain metrics a decision stands for.
fn record_decision(metrics: &Metrics, d: &Decision) {
    match d.kind {
        DecisionKind::Entered => metrics.journey_entered(&d.journey),
        DecisionKind::ExitedOnGoal => {
            metrics.journey_exited(&d.journey, "goal");
        }
        DecisionKind::Exited => metrics.journey_exited(&d.journey, "exit"),
        DecisionKind::Completed => metrics.journey_exited(&d.journey, "completed"),
        DecisionKind::Converted => metrics.journey_converted(&d.journey),
        DecisionKind::SegmentEntered => metrics.segment_entered(&d.journey),
        DecisionKind::SegmentLeft => metrics.segment_exited(&d.journey),
        DecisionKind::NotEntered
        | DecisionKind::Step
        | DecisionKind::Sent
        | DecisionKind::Skipped
        | DecisionKind::Deferred
        | DecisionKind::Merged
        // Delivery outcomes are counted by the gateway, in `beckon.deliveries`.
        | DecisionKind::DeliveryDeferred
        | DecisionKind::DeliveredLater
        | DecisionKind::DeliveryWithdrawn
        | DecisionKind::DeliveryFailed => {}
    }
}

/// Applies a batch's timer changes. Only the last change the batch asked for of each timer
/// (workspace, user, id) is sent: a set replaces the timer and a cancel removes it, so what
/// came before it changes nothing, and changes to different timers do not depend on each
/// other's order. The sets then go in one request and the cancels in one per workspace, side
/// by side. Sent in order instead, a wait that restarts on every event (a cancel, then a set)
/// cost two round trips per event, one after the other, and a busy user held its partition.
///
/// A request serves the entries of many traces: it continues the first one's. Every timer
/// still carries the traceparent of the entry that set it, which its firing links back to.
async fn settle_timers(sink: Option<&dyn TimerSink>, ops: Vec<TimerOp>) -> Result<(), StateError> {
    let Some(sink) = sink else {
        return Ok(());
    };
    let last = last_change_of_each_timer(&ops);

    let mut sets: Vec<Timer> = Vec::new();
    let mut set_span: Option<Span> = None;
    let mut cancels: Vec<CancelRun> = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        if !last[i] {
            continue;
        }
        match op {
            TimerOp::Set(timer, span) => {
                set_span.get_or_insert(span);
                sets.push(timer);
            }
            TimerOp::Cancel {
                workspace,
                user,
                id,
                span,
            } => match cancels.iter_mut().find(|(w, ..)| *w == workspace) {
                Some((_, run, _)) => run.push((user, id)),
                None => cancels.push((workspace, vec![(user, id)], span)),
            },
        }
    }

    let set = async {
        match set_span {
            Some(span) => sink.schedule_many(&sets).instrument(span).await,
            None => Ok(()),
        }
    };
    let cancel =
        futures::future::try_join_all(cancels.iter().map(|(workspace, run, span)| {
            sink.cancel_many(workspace, run).instrument(span.clone())
        }));
    let (set, cancel) = futures::join!(set, cancel);
    set.and(cancel.map(drop))
}

/// A workspace's timers to cancel, as (user, id), with the span of the first.
type CancelRun = (String, Vec<(String, String)>, Span);

/// For each change of `ops`, whether it is the last the list holds of its timer.
fn last_change_of_each_timer(ops: &[TimerOp]) -> Vec<bool> {
    let mut seen: HashSet<(&str, &str, &str), RandomState> = HashSet::default();
    let mut last = vec![false; ops.len()];
    for (i, op) in ops.iter().enumerate().rev() {
        let key = match op {
            TimerOp::Set(t, _) => (t.workspace.as_str(), t.user.as_str(), t.id.as_str()),
            TimerOp::Cancel {
                workspace,
                user,
                id,
                ..
            } => (workspace.as_str(), user.as_str(), id.as_str()),
        };
        last[i] = seen.insert(key);
    }
    last
}

/// Sends `messages` as one chain per user, each in the order produced, with up to
/// `concurrency` chains in flight, each message in the span of the entry that produced it.
/// Every chain runs to its end or its first failure, so no send is abandoned part-way; the
/// first failure is returned once all have stopped.
async fn send_chains(
    outlet: &dyn Outlet,
    messages: Vec<(OutboundMessage, Span)>,
    concurrency: usize,
) -> Result<(), StateError> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut chains: Vec<Vec<(OutboundMessage, Span)>> = Vec::new();
    let mut by_user: HashMap<(String, String), usize, RandomState> = HashMap::default();
    for m in messages {
        let key = (m.0.workspace.clone(), m.0.user_id.clone());
        let i = *by_user.entry(key).or_insert_with(|| {
            chains.push(Vec::new());
            chains.len() - 1
        });
        chains[i].push(m);
    }

    let results: Vec<Result<(), StateError>> = futures::stream::iter(chains)
        .map(|chain| async move {
            for (m, span) in chain {
                outlet.send(&m).instrument(span).await?;
            }
            Ok(())
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use std::sync::Mutex;

    use futures::future::BoxFuture;

    use super::*;

    /// A timer sink that records each request it is given.
    #[derive(Default)]
    struct Requests(Mutex<Vec<String>>);

    impl TimerSink for Requests {
        fn schedule<'a>(&'a self, timer: &'a Timer) -> BoxFuture<'a, Result<(), StateError>> {
            self.schedule_many(std::slice::from_ref(timer))
        }

        fn cancel<'a>(
            &'a self,
            workspace: &'a str,
            user: &'a str,
            id: &'a str,
        ) -> BoxFuture<'a, Result<(), StateError>> {
            Box::pin(async move {
                let one = [(user.to_string(), id.to_string())];
                self.cancel_many(workspace, &one).await
            })
        }

        fn schedule_many<'a>(
            &'a self,
            timers: &'a [Timer],
        ) -> BoxFuture<'a, Result<(), StateError>> {
            let set: Vec<String> = timers
                .iter()
                .map(|t| format!("{}/{}@{}", t.user, t.id, t.due.0))
                .collect();
            self.0
                .lock()
                .unwrap()
                .push(format!("set {}", set.join(" ")));
            Box::pin(async { Ok(()) })
        }

        fn cancel_many<'a>(
            &'a self,
            workspace: &'a str,
            timers: &'a [(String, String)],
        ) -> BoxFuture<'a, Result<(), StateError>> {
            let gone: Vec<String> = timers.iter().map(|(u, id)| format!("{u}/{id}")).collect();
            let request = format!("cancel {workspace}: {}", gone.join(" "));
            self.0.lock().unwrap().push(request);
            Box::pin(async { Ok(()) })
        }
    }

    fn set(workspace: &str, user: &str, id: &str, due: i64) -> TimerOp {
        let timer = Timer {
            id: id.into(),
            workspace: workspace.into(),
            user: user.into(),
            due: Ts(due),
            journey: "j".into(),
            instance: 1,
            trace: None,
        };
        TimerOp::Set(timer, Span::none())
    }

    fn cancel(workspace: &str, user: &str, id: &str) -> TimerOp {
        TimerOp::Cancel {
            workspace: workspace.into(),
            user: user.into(),
            id: id.into(),
            span: Span::none(),
        }
    }

    #[tokio::test]
    async fn a_batch_sends_the_last_change_of_each_timer_in_one_request_of_each_kind() {
        let sink = Requests::default();
        // A wait restarted by three events (cancel the old timer, set the new one), a timer
        // set then cancelled, one cancelled then set again, and another workspace's cancel.
        let ops = vec![
            cancel("w", "ada", "wait#0"),
            set("w", "ada", "wait#1", 10),
            cancel("w", "ada", "wait#1"),
            set("w", "ada", "wait#2", 20),
            cancel("w", "ada", "wait#2"),
            set("w", "ada", "wait#3", 30),
            set("w", "bob", "gone", 5),
            cancel("w", "bob", "gone"),
            cancel("w", "cy", "back"),
            set("w", "cy", "back", 40),
            cancel("v", "ada", "wait#0"),
        ];
        settle_timers(Some(&sink), ops).await.unwrap();

        let mut requests = sink.0.into_inner().unwrap();
        requests.sort();
        assert_eq!(
            requests,
            [
                "cancel v: ada/wait#0",
                "cancel w: ada/wait#0 ada/wait#1 ada/wait#2 bob/gone",
                "set ada/wait#3@30 cy/back@40",
            ]
        );
    }

    #[tokio::test]
    async fn no_changes_no_requests() {
        let sink = Requests::default();
        settle_timers(Some(&sink), Vec::new()).await.unwrap();
        assert!(sink.0.into_inner().unwrap().is_empty());
        settle_timers(None, vec![set("w", "ada", "t", 1)])
            .await
            .unwrap();
    }
}
