//! The `beckon.v1.Scheduler` gRPC service.

use std::sync::Arc;

use beckon_core::{Timer, Ts};
use beckon_proto::convert::millis_to_timestamp;
use beckon_proto::v1::scheduler_server::Scheduler;
use beckon_proto::v1::{
    CancelTimersRequest, CancelTimersResponse, PendingRequest, PendingResponse, SetTimersRequest,
    SetTimersResponse,
};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::AsyncTimerStore;

pub struct SchedulerService {
    store: Arc<dyn AsyncTimerStore>,
    partitions: u32,
    /// Woken when a timer is set, so the firing loop re-plans at once.
    wake: Arc<Notify>,
    /// The workspaces whose timers fire here, when known: a timer set for any other would be
    /// kept and never fire.
    served: Option<Vec<String>>,
}

impl SchedulerService {
    pub fn new(store: Arc<dyn AsyncTimerStore>, partitions: u32, wake: Arc<Notify>) -> Self {
        SchedulerService {
            store,
            partitions: partitions.max(1),
            wake,
            served: None,
        }
    }

    /// Refuses requests for workspaces other than these, the ones the firing loop serves.
    pub fn with_workspaces(mut self, workspaces: Vec<String>) -> Self {
        self.served = Some(workspaces);
        self
    }

    /// A workspace name a store key can hold, and one this deployment serves.
    fn check_workspace(&self, workspace: &str) -> Result<(), Status> {
        if !beckon_core::ids::workspace_is_valid(workspace) {
            return Err(Status::invalid_argument(format!(
                "workspace: {}, found {workspace:?}",
                beckon_core::ids::WORKSPACE_RULE
            )));
        }
        match &self.served {
            Some(served) if !served.iter().any(|w| w == workspace) => {
                Err(Status::invalid_argument(format!(
                    "workspace: {workspace:?} is not served here (this deployment serves \
                     {served:?})"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Partitions a request names, each one this deployment has.
    fn check_partitions(&self, partitions: &[u32]) -> Result<(), Status> {
        match partitions.iter().find(|p| **p >= self.partitions) {
            Some(p) => Err(Status::invalid_argument(format!(
                "partitions: {p} is out of range (this deployment has partitions 0 to {})",
                self.partitions - 1
            ))),
            None => Ok(()),
        }
    }
}

/// Longest stored trace context: a `traceparent` is 55 characters, and `tracestate` is capped
/// at 512 by the W3C recommendation.
const MAX_TRACE_LEN: usize = 600;

/// A timer from its protobuf form, with the field that is wrong when it is invalid.
pub fn timer_from_proto(workspace: &str, t: beckon_proto::v1::Timer) -> Result<Timer, Status> {
    if t.id.is_empty() {
        return Err(Status::invalid_argument("timers.id: missing"));
    }
    if t.user_id.is_empty() {
        return Err(Status::invalid_argument("timers.user_id: missing"));
    }
    let due = t
        .due
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("timers.due: missing"))?;
    // Out of range is refused, not saturated: a timer due at the end of time never fires.
    let due = Ts::from_parts(due.seconds, due.nanos)
        .map_err(|e| Status::invalid_argument(format!("timers.due: {e}")))?;
    if t.traceparent.len() > MAX_TRACE_LEN {
        return Err(Status::invalid_argument(format!(
            "timers.traceparent: longer than {MAX_TRACE_LEN} characters"
        )));
    }
    Ok(Timer {
        id: t.id,
        workspace: workspace.to_string(),
        user: t.user_id,
        due,
        journey: t.journey,
        instance: t.instance,
        trace: Some(t.traceparent).filter(|tp| !tp.is_empty()),
    })
}

pub fn timer_to_proto(t: &Timer) -> beckon_proto::v1::Timer {
    beckon_proto::v1::Timer {
        id: t.id.clone(),
        user_id: t.user.clone(),
        due: Some(millis_to_timestamp(t.due.as_millis())),
        journey: t.journey.clone(),
        step: String::new(),
        traceparent: t.trace.clone().unwrap_or_default(),
        instance: t.instance,
    }
}

#[tonic::async_trait]
impl Scheduler for SchedulerService {
    async fn set_timers(
        &self,
        req: Request<SetTimersRequest>,
    ) -> Result<Response<SetTimersResponse>, Status> {
        let r = req.into_inner();
        self.check_workspace(&r.workspace)?;
        let mut timers = r
            .timers
            .into_iter()
            .map(|t| timer_from_proto(&r.workspace, t))
            .collect::<Result<Vec<_>, _>>()?;

        // A caller that did not say which work set the timer is that work: this call's span
        // continues the caller's trace.
        let here = beckon_telemetry::current_trace_string();
        for timer in timers.iter_mut().filter(|t| t.trace.is_none()) {
            timer.trace.clone_from(&here);
        }
        self.store.schedule_many(&timers).await?;
        self.wake.notify_one();
        Ok(Response::new(SetTimersResponse {
            created: timers.len() as u32,
        }))
    }

    async fn cancel_timers(
        &self,
        req: Request<CancelTimersRequest>,
    ) -> Result<Response<CancelTimersResponse>, Status> {
        let r = req.into_inner();
        self.check_workspace(&r.workspace)?;
        let timers: Vec<(String, String)> =
            r.timers.into_iter().map(|t| (t.user_id, t.id)).collect();
        let cancelled = self.store.cancel_many(&r.workspace, &timers).await?;
        Ok(Response::new(CancelTimersResponse { cancelled }))
    }

    async fn pending(
        &self,
        req: Request<PendingRequest>,
    ) -> Result<Response<PendingResponse>, Status> {
        let r = req.into_inner();
        self.check_workspace(&r.workspace)?;
        self.check_partitions(&r.partitions)?;
        let partitions: Vec<u32> = if r.partitions.is_empty() {
            (0..self.partitions).collect()
        } else {
            r.partitions
        };
        let mut pending = 0;
        for p in partitions {
            pending += self.store.len(&r.workspace, p).await?;
        }
        Ok(Response::new(PendingResponse { pending }))
    }
}
