//! One partition's users, their actors and timers.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, Addr};
use beckon_core::{Effect, Event, Trigger, Ts, UserState};
use beckon_gateway::Gateway;
use beckon_journey::Engine;
use beckon_scheduler::TimerStore;

use crate::actor::{Apply, Snapshot, UserActor};
use crate::error::StateError;
use crate::stats::Stats;
use crate::store::StateStore;

/// Timers fired per batch while catching up; bounds the work between two checks.
const TIMER_BATCH: usize = 256;

struct Active {
    addr: Addr<UserActor>,
    /// Version last written to the store; the next write expects it.
    stored: u64,
    dirty: bool,
}

/// Drives the users of one partition through triggers in order.
///
/// Time in a partition only moves forward: before an event at time `t` is applied, every timer
/// due at or before `t` fires, so a timer and an event in the same millisecond resolve with
/// the timer first. Must run inside an actix arbiter, since it starts actors.
pub struct PartitionWorker {
    partition: u32,
    engine: Arc<Engine>,
    store: Arc<dyn StateStore>,
    timers: Box<dyn TimerStore>,
    gateway: Gateway,
    actors: HashMap<(String, String), Active>,
    now: Ts,
    stats: Stats,
}

impl PartitionWorker {
    pub fn new(
        partition: u32,
        engine: Arc<Engine>,
        store: Arc<dyn StateStore>,
        timers: Box<dyn TimerStore>,
        gateway: Gateway,
    ) -> PartitionWorker {
        PartitionWorker {
            partition,
            engine,
            store,
            timers,
            gateway,
            actors: HashMap::new(),
            now: Ts::MIN,
            stats: Stats::default(),
        }
    }

    pub fn partition(&self) -> u32 {
        self.partition
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
        self.actors.len()
    }

    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Fires due timers, then applies the event.
    pub async fn on_event(&mut self, workspace: &str, event: Event) -> Result<(), StateError> {
        self.advance(event.timestamp).await?;
        let user = event.user.clone();
        self.apply(workspace, &user, Trigger::Event(event)).await
    }

    /// Moves partition time to `to`, firing every timer due by then (including timers that
    /// firing sets for no later than `to`).
    pub async fn advance(&mut self, to: Ts) -> Result<(), StateError> {
        loop {
            let due = self.timers.pop_due(to, TIMER_BATCH);
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

    /// When the next timer is due, if any.
    pub fn next_due(&self) -> Option<Ts> {
        self.timers.next_due()
    }

    /// Writes every changed user's state to the store.
    pub async fn flush(&mut self) -> Result<usize, StateError> {
        let mut written = 0;
        for active in self.actors.values_mut().filter(|a| a.dirty) {
            let state = active.addr.send(Snapshot).await?;
            self.store.save(&state, active.stored).await?;
            active.stored = state.version;
            active.dirty = false;
            written += 1;
        }
        Ok(written)
    }

    /// The live state of a user, loading it when no actor holds it.
    pub async fn user(&mut self, workspace: &str, user: &str) -> Result<UserState, StateError> {
        let addr = self.actor(workspace, user).await?;
        Ok(addr.send(Snapshot).await?)
    }

    async fn apply(&mut self, workspace: &str, user: &str, trigger: Trigger) -> Result<(), StateError> {
        let addr = self.actor(workspace, user).await?;
        let effects = addr.send(Apply(trigger)).await?;
        if let Some(active) = self.actors.get_mut(&(workspace.to_string(), user.to_string())) {
            active.dirty = true;
        }
        self.perform(effects).await;
        Ok(())
    }

    async fn actor(&mut self, workspace: &str, user: &str) -> Result<Addr<UserActor>, StateError> {
        let key = (workspace.to_string(), user.to_string());
        if let Some(active) = self.actors.get(&key) {
            return Ok(active.addr.clone());
        }

        let loaded = self.store.load(workspace, user).await?;
        let stored = loaded.as_ref().map_or(0, |s| s.version);
        let state = loaded.unwrap_or_else(|| UserState::new(workspace, user));
        let addr = UserActor::new(state, self.engine.clone()).start();
        tracing::trace!(partition = self.partition, user, "actor started");
        self.actors.insert(
            key,
            Active {
                addr: addr.clone(),
                stored,
                dirty: false,
            },
        );
        Ok(addr)
    }

    async fn perform(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::SetTimer(timer) => {
                    self.stats.timers_set += 1;
                    self.timers.schedule(timer);
                }
                Effect::CancelTimer {
                    workspace,
                    user,
                    id,
                } => {
                    self.timers.cancel(&workspace, &user, &id);
                }
                Effect::Send(message) => {
                    self.stats.message(&message);
                    if let Err(e) = self.gateway.send(&message).await {
                        tracing::warn!(
                            journey = %message.journey,
                            channel = %message.channel,
                            error = %e,
                            "message not delivered"
                        );
                    }
                }
                Effect::Record(decision) => self.stats.decision(&decision),
            }
        }
    }
}
