//! Where a partition worker sends what its users' evaluations ask for.
//!
//! In one process (replay, tests, `serve all` on the embedded store) timers stay in the
//! worker and fire as its clock passes them, and messages go straight to a [`Gateway`]. As
//! separate services, timers go to the scheduler and messages to the gateway over gRPC. Every
//! target accepts a repeated request without acting twice (timers by id, messages by
//! idempotency key), which is what lets a worker redo effects after a crash.

use std::sync::Arc;

use beckon_core::{OutboundMessage, Timer, Trigger};
use beckon_gateway::Gateway;
use beckon_scheduler::{AsyncTimerStore, TimerStore};
use futures::future::BoxFuture;

use crate::error::StateError;

/// Durable timers held outside the worker; due ones come back through the event log.
pub trait TimerSink: Send + Sync + 'static {
    fn schedule<'a>(&'a self, timer: &'a Timer) -> BoxFuture<'a, Result<(), StateError>>;

    fn cancel<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>>;

    /// Sets every timer, as [`TimerSink::schedule`] would one after another. Sinks behind a
    /// server send them in one request.
    fn schedule_many<'a>(&'a self, timers: &'a [Timer]) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            for timer in timers {
                self.schedule(timer).await?;
            }
            Ok(())
        })
    }

    /// Cancels every (user, timer id) of `workspace`, as [`TimerSink::cancel`] would one after
    /// another. Sinks behind a server send them in one request.
    fn cancel_many<'a>(
        &'a self,
        workspace: &'a str,
        timers: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            for (user, id) in timers {
                self.cancel(workspace, user, id).await?;
            }
            Ok(())
        })
    }
}

/// The way into other users' partition logs, for triggers one user's evaluation addresses to
/// another user (the steps of a merge, and what a merged id's tombstone passes on).
///
/// An append must be idempotent by `key`: a batch that failed part-way runs again and forwards
/// the same triggers under the same keys, and each must land once.
pub trait Forwarder: Send + Sync + 'static {
    fn forward<'a>(
        &'a self,
        workspace: &'a str,
        key: &'a str,
        trigger: &'a Trigger,
    ) -> BoxFuture<'a, Result<(), StateError>>;
}

/// Forwards through the partitioned log, to the partition of the trigger's user.
pub struct LogForwarder(pub Arc<dyn beckon_ingest::log::EventLog>);

impl Forwarder for LogForwarder {
    fn forward<'a>(
        &'a self,
        workspace: &'a str,
        key: &'a str,
        trigger: &'a Trigger,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            // Forwarded from inside the evaluation's span: the other user's actor continues
            // this trace.
            let tp = beckon_telemetry::current_trace_string();
            self.0
                .append_trigger(workspace, key, trigger, tp.as_deref())
                .await
                .map(|_| ())
                .map_err(|e| StateError::Downstream {
                    service: "event log",
                    reason: e.to_string(),
                })
        })
    }
}

/// How a worker keeps its timers.
pub enum Timers {
    /// In the worker: fired by [`crate::PartitionWorker::advance`] as its clock moves.
    Local(Box<dyn TimerStore>),
    /// Elsewhere (the scheduler): fired by appending to the partition's log.
    Remote(Arc<dyn TimerSink>),
}

/// The way out for rendered messages.
pub trait Outlet: Send + Sync + 'static {
    fn send<'a>(&'a self, message: &'a OutboundMessage) -> BoxFuture<'a, Result<(), StateError>>;
}

impl Outlet for Gateway {
    fn send<'a>(&'a self, message: &'a OutboundMessage) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            match Gateway::send(self, message).await {
                Ok(_) => Ok(()),
                // A provider's final refusal is an outcome, not a reason to redo the trigger.
                Err(e) if !e.is_retryable() => {
                    tracing::warn!(
                        journey = %message.journey,
                        channel = %message.channel,
                        error = %e,
                        "message refused"
                    );
                    Ok(())
                }
                Err(e) => Err(StateError::Downstream {
                    service: "gateway",
                    reason: e.to_string(),
                }),
            }
        })
    }
}

/// An in-process timer store shared with a scheduler loop.
impl TimerSink for Arc<dyn AsyncTimerStore> {
    fn schedule<'a>(&'a self, timer: &'a Timer) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            AsyncTimerStore::schedule(self.as_ref(), timer)
                .await
                .map_err(|e| StateError::Unavailable(e.to_string()))
        })
    }

    fn cancel<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            AsyncTimerStore::cancel(self.as_ref(), workspace, user, id)
                .await
                .map(|_| ())
                .map_err(|e| StateError::Unavailable(e.to_string()))
        })
    }

    fn schedule_many<'a>(&'a self, timers: &'a [Timer]) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            AsyncTimerStore::schedule_many(self.as_ref(), timers)
                .await
                .map_err(|e| StateError::Unavailable(e.to_string()))
        })
    }

    fn cancel_many<'a>(
        &'a self,
        workspace: &'a str,
        timers: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            AsyncTimerStore::cancel_many(self.as_ref(), workspace, timers)
                .await
                .map(|_| ())
                .map_err(|e| StateError::Unavailable(e.to_string()))
        })
    }
}
