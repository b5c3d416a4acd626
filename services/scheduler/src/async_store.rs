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
use futures::future::{BoxFuture, join_all};

use crate::error::SchedulerError;
use crate::{MemoryTimers, TimerStore};

/// What a claim handed out, and when the partition has work again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Claimed {
    pub timers: Vec<Timer>,
    /// The earliest due time or claim deadline left in the partition after the claim.
    pub next: Option<Ts>,
}

pub trait AsyncTimerStore: Send + Sync + 'static {
    /// Sets or replaces the timer with this (workspace, user, id).
    fn schedule<'a>(&'a self, timer: &'a Timer) -> BoxFuture<'a, Result<(), SchedulerError>>;

    /// Sets or replaces each timer, as [`AsyncTimerStore::schedule`] does one after another.
    /// Stores that talk to a server send them in few requests.
    fn schedule_many<'a>(
        &'a self,
        timers: &'a [Timer],
    ) -> BoxFuture<'a, Result<(), SchedulerError>> {
        Box::pin(async move {
            for timer in timers {
                self.schedule(timer).await?;
            }
            Ok(())
        })
    }

    /// Removes a timer, pending or claimed; returns whether it existed.
    fn cancel<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, SchedulerError>>;

    /// Removes each (user, timer id) of `workspace`, as [`AsyncTimerStore::cancel`] does one
    /// after another; answers how many existed. Stores that talk to a server send them in few
    /// requests.
    fn cancel_many<'a>(
        &'a self,
        workspace: &'a str,
        timers: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<u32, SchedulerError>> {
        Box::pin(async move {
            let mut cancelled = 0;
            for (user, id) in timers {
                if self.cancel(workspace, user, id).await? {
                    cancelled += 1;
                }
            }
            Ok(cancelled)
        })
    }

    /// Claims up to `limit` timers of the partition due at or before `now`, earliest first,
    /// including claims whose deadline passed without an acknowledgement.
    fn claim_due<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
        now: Ts,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Timer>, SchedulerError>>;

    /// Claims as [`AsyncTimerStore::claim_due`] does, and tells when the partition has work
    /// again, so a firing loop can sleep until then.
    fn claim_due_next<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
        now: Ts,
        limit: usize,
    ) -> BoxFuture<'a, Result<Claimed, SchedulerError>> {
        Box::pin(async move {
            let timers = self.claim_due(workspace, partition, now, limit).await?;
            let next = self.next_due(workspace, partition).await?;
            Ok(Claimed { timers, next })
        })
    }

    /// Forgets a fired timer. Returns false when it was rescheduled or cancelled meanwhile
    /// (then nothing is removed).
    fn ack<'a>(&'a self, timer: &'a Timer) -> BoxFuture<'a, Result<bool, SchedulerError>>;

    /// Forgets fired timers as [`AsyncTimerStore::ack`] does each; one answer per timer.
    fn ack_many<'a>(
        &'a self,
        timers: &'a [Timer],
    ) -> BoxFuture<'a, Result<Vec<bool>, SchedulerError>> {
        Box::pin(async move {
            join_all(timers.iter().map(|t| self.ack(t)))
                .await
                .into_iter()
                .collect()
        })
    }

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
