//! Timers behind an async interface, for stores that do input and output (Redis).
//!
//! Firing is claim-then-acknowledge: [`AsyncTimerStore::claim_due`] hands out due timers and
//! remembers them as claimed until a deadline; [`AsyncTimerStore::ack`] forgets a timer once
//! its effect is applied. A scheduler that dies between the two leaves claims that come due
//! again at their deadline, so a timer fires at least once. The effect must therefore be
//! idempotent by timer id, which the actor's check of its pending timer id provides.

use std::collections::HashMap;
use std::sync::Mutex;

use beckon_core::partition::partition_of;
use beckon_core::{Timer, Ts};
use futures::future::BoxFuture;

use crate::error::SchedulerError;
use crate::{MemoryTimers, TimerStore};

pub trait AsyncTimerStore: Send + Sync + 'static {
    /// Sets or replaces the timer with this (workspace, user, id).
    fn schedule<'a>(&'a self, timer: &'a Timer) -> BoxFuture<'a, Result<(), SchedulerError>>;

    /// Removes a timer, pending or claimed; returns whether it existed.
    fn cancel<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, SchedulerError>>;

    /// Claims up to `limit` timers of the partition due at or before `now`, earliest first,
    /// including claims whose deadline passed without an acknowledgement.
    fn claim_due<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
        now: Ts,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Timer>, SchedulerError>>;

    /// Forgets a fired timer. Returns false when it was rescheduled or cancelled meanwhile
    /// (then nothing is removed).
    fn ack<'a>(&'a self, timer: &'a Timer) -> BoxFuture<'a, Result<bool, SchedulerError>>;

    /// When the partition's earliest pending timer is due.
    fn next_due<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<Option<Ts>, SchedulerError>>;

    /// Pending plus claimed timers of the partition.
    fn len<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<u64, SchedulerError>>;
}

/// [`MemoryTimers`] per (workspace, partition) behind the async interface. Nothing outlives
/// the process, so a claim is final and `ack` has nothing left to do.
pub struct MemoryAsyncTimers {
    partitions: u32,
    inner: Mutex<HashMap<(String, u32), MemoryTimers>>,
}

impl MemoryAsyncTimers {
    pub fn new(partitions: u32) -> MemoryAsyncTimers {
        MemoryAsyncTimers {
            partitions: partitions.max(1),
            inner: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(
        &self,
        workspace: &str,
        partition: u32,
        f: impl FnOnce(&mut MemoryTimers) -> T,
    ) -> Result<T, SchedulerError> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| SchedulerError::Unavailable("memory timer lock poisoned".into()))?;
        let timers = inner.entry((workspace.to_string(), partition)).or_default();
        Ok(f(timers))
    }

    fn partition(&self, workspace: &str, user: &str) -> u32 {
        partition_of(workspace, user, self.partitions)
    }
}

impl AsyncTimerStore for MemoryAsyncTimers {
    fn schedule<'a>(&'a self, timer: &'a Timer) -> BoxFuture<'a, Result<(), SchedulerError>> {
        let p = self.partition(&timer.workspace, &timer.user);
        let result = self.with(&timer.workspace, p, |t| t.schedule(timer.clone()));
        Box::pin(async move { result })
    }

    fn cancel<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, SchedulerError>> {
        let p = self.partition(workspace, user);
        let result = self.with(workspace, p, |t| t.cancel(workspace, user, id));
        Box::pin(async move { result })
    }

    fn claim_due<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
        now: Ts,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Timer>, SchedulerError>> {
        let result = self.with(workspace, partition, |t| t.pop_due(now, limit));
        Box::pin(async move { result })
    }

    fn ack<'a>(&'a self, _timer: &'a Timer) -> BoxFuture<'a, Result<bool, SchedulerError>> {
        Box::pin(async move { Ok(true) })
    }

    fn next_due<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<Option<Ts>, SchedulerError>> {
        let result = self.with(workspace, partition, |t| t.next_due());
        Box::pin(async move { result })
    }

    fn len<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<u64, SchedulerError>> {
        let result = self.with(workspace, partition, |t| t.len() as u64);
        Box::pin(async move { result })
    }
}
