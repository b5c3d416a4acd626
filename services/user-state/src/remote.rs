//! Effect targets reached over gRPC: the scheduler service for timers, the gateway service for
//! messages. Calls carry a deadline and are retried with backoff on answers that may succeed
//! later; every call is idempotent (timers by id, messages by idempotency key), so a retry
//! after a lost answer does no harm.

use std::time::Duration as StdDuration;

use beckon_core::{OutboundMessage, Timer};
use beckon_proto::convert::millis_to_timestamp;
use beckon_proto::internal::InternalToken;
use beckon_proto::v1::gateway_client::GatewayClient;
use beckon_proto::v1::scheduler_client::SchedulerClient;
use beckon_proto::v1::{CancelTimersRequest, SendRequest, SetTimersRequest, TimerRef};
use beckon_telemetry::TraceInterceptor;
use futures::future::BoxFuture;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::error::StateError;
use crate::outlet::{Outlet, TimerSink};

/// Attempts per call before the failure goes back to the partition loop, which retries the
/// whole batch later.
const ATTEMPTS: u32 = 4;
const DEADLINE: StdDuration = StdDuration::from_secs(2);

/// Answers after which the call may succeed if made again. `Cancelled` is what a call gets
/// when the serving process goes away mid-call (a restart's drain closing the connection):
/// the target may or may not have acted, and its idempotency makes the repeat safe.
fn retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
    )
}

/// Answers in which the gateway itself settled the message: it refused it as invalid, or
/// found it cannot be sent and reported so. Any other answer is not the gateway's word on
/// the message: a connection that broke mid-call (`UNKNOWN`), a token the gateway does not
/// take (`UNAUTHENTICATED`, `PERMISSION_DENIED`), a port serving something else
/// (`UNIMPLEMENTED`). The message was not sent, so the batch goes again, and it with it.
fn gateway_decided(s: &Status) -> bool {
    matches!(s.code(), Code::InvalidArgument | Code::FailedPrecondition)
}

async fn with_retries<T, F, Fut>(what: &str, mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let mut backoff = StdDuration::from_millis(20);
    for attempt in 1..=ATTEMPTS {
        match call().await {
            Ok(v) => return Ok(v),
            Err(s) if retryable(&s) && attempt < ATTEMPTS => {
                tracing::debug!(call = what, attempt, code = ?s.code(), "retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 3;
            }
            Err(s) => return Err(s),
        }
    }
    Err(Status::unavailable(format!("{what}: out of attempts")))
}

/// A call to `service` that failed for good; the partition loop retries the batch.
fn unavailable(service: &'static str, what: &str, s: &Status) -> StateError {
    StateError::Downstream {
        service,
        reason: format!("{what}: {:?}: {}", s.code(), s.message()),
    }
}

fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(DEADLINE);
    r
}

/// What every call to a peer carries: the caller's W3C trace context and, when the deployment
/// has one, its internal token (timers and sends are calls only Beckon's services may make).
#[derive(Clone, Debug, Default)]
pub struct PeerMetadata {
    token: Option<InternalToken>,
}

impl PeerMetadata {
    pub fn new(token: Option<InternalToken>) -> PeerMetadata {
        PeerMetadata { token }
    }
}

impl Interceptor for PeerMetadata {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let mut request = TraceInterceptor.call(request)?;
        if let Some(token) = &self.token {
            token.attach(request.metadata_mut());
        }
        Ok(request)
    }
}

/// A channel whose calls carry [`PeerMetadata`].
type Traced = InterceptedService<Channel, PeerMetadata>;

/// Timers kept by the scheduler service.
#[derive(Clone)]
pub struct RemoteScheduler {
    client: SchedulerClient<Traced>,
}

impl RemoteScheduler {
    pub fn new(channel: Channel) -> RemoteScheduler {
        RemoteScheduler::with_token(channel, None)
    }

    /// A scheduler whose calls carry `token`, which a scheduler that has one asks of them.
    pub fn with_token(channel: Channel, token: Option<InternalToken>) -> RemoteScheduler {
        RemoteScheduler {
            client: SchedulerClient::with_interceptor(channel, PeerMetadata::new(token)),
        }
    }
}

/// Most timers one `SetTimers` or `CancelTimers` call carries; a partition's batch rarely
/// needs more than one call, and a bounded request keeps each well inside the message limit.
const TIMERS_PER_CALL: usize = 512;

impl RemoteScheduler {
    async fn set_timers(&self, workspace: &str, timers: &[Timer]) -> Result<(), StateError> {
        let protos: Vec<beckon_proto::v1::Timer> = timers.iter().map(timer_to_proto).collect();
        with_retries("SetTimers", || {
            let mut client = self.client.clone();
            let req = request(SetTimersRequest {
                workspace: workspace.to_string(),
                timers: protos.clone(),
            });
            async move { client.set_timers(req).await }
        })
        .await
        .map(|_| ())
        .map_err(|s| unavailable("scheduler", "SetTimers", &s))
    }

    async fn cancel_timers(&self, workspace: &str, refs: Vec<TimerRef>) -> Result<(), StateError> {
        with_retries("CancelTimers", || {
            let mut client = self.client.clone();
            let req = request(CancelTimersRequest {
                workspace: workspace.to_string(),
                timers: refs.clone(),
            });
            async move { client.cancel_timers(req).await }
        })
        .await
        .map(|_| ())
        .map_err(|s| unavailable("scheduler", "CancelTimers", &s))
    }
}

fn timer_to_proto(timer: &Timer) -> beckon_proto::v1::Timer {
    beckon_proto::v1::Timer {
        id: timer.id.clone(),
        user_id: timer.user.clone(),
        due: Some(millis_to_timestamp(timer.due.as_millis())),
        journey: timer.journey.clone(),
        step: String::new(),
        traceparent: timer.trace.clone().unwrap_or_default(),
        instance: timer.instance,
    }
}

impl TimerSink for RemoteScheduler {
    fn schedule<'a>(&'a self, timer: &'a Timer) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(self.set_timers(&timer.workspace, std::slice::from_ref(timer)))
    }

    fn cancel<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let refs = vec![TimerRef {
            user_id: user.to_string(),
            id: id.to_string(),
        }];
        Box::pin(self.cancel_timers(workspace, refs))
    }

    fn schedule_many<'a>(&'a self, timers: &'a [Timer]) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            // A request names one workspace: runs of the same workspace go together, in order.
            for run in timers.chunk_by(|a, b| a.workspace == b.workspace) {
                for chunk in run.chunks(TIMERS_PER_CALL) {
                    self.set_timers(&chunk[0].workspace, chunk).await?;
                }
            }
            Ok(())
        })
    }

    fn cancel_many<'a>(
        &'a self,
        workspace: &'a str,
        timers: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            for chunk in timers.chunks(TIMERS_PER_CALL) {
                let refs = chunk
                    .iter()
                    .map(|(user, id)| TimerRef {
                        user_id: user.clone(),
                        id: id.clone(),
                    })
                    .collect();
                self.cancel_timers(workspace, refs).await?;
            }
            Ok(())
        })
    }
}

/// Messages sent through the gateway service.
#[derive(Clone)]
pub struct RemoteGateway {
    client: GatewayClient<Traced>,
}

impl RemoteGateway {
    pub fn new(channel: Channel) -> RemoteGateway {
        RemoteGateway::with_token(channel, None)
    }

    /// A gateway whose sends carry `token`, which a gateway that has one asks of them.
    pub fn with_token(channel: Channel, token: Option<InternalToken>) -> RemoteGateway {
        RemoteGateway {
            client: GatewayClient::with_interceptor(channel, PeerMetadata::new(token)),
        }
    }
}

pub fn message_to_proto(m: &OutboundMessage) -> beckon_proto::v1::OutboundMessage {
    beckon_proto::v1::OutboundMessage {
        idempotency_key: m.idempotency_key.clone(),
        user_id: m.user_id.clone(),
        channel: m.channel.clone(),
        journey: m.journey.clone(),
        step: m.step.clone(),
        subject: m.subject.clone().unwrap_or_default(),
        title: m.title.clone().unwrap_or_default(),
        version: m.version,
        instance: m.instance,
        body: m.body.clone(),
        at: Some(millis_to_timestamp(m.at.as_millis())),
        to: m.to.as_ref().map(|c| beckon_proto::v1::Contacts {
            email: c.email.clone(),
            phone: c.phone.clone(),
            devices: c
                .devices
                .iter()
                .map(|(platform, tokens)| beckon_proto::v1::DeviceTokens {
                    platform: platform.clone(),
                    tokens: tokens.clone(),
                })
                .collect(),
        }),
    }
}

impl Outlet for RemoteGateway {
    fn send<'a>(&'a self, message: &'a OutboundMessage) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let proto = message_to_proto(message);
            let result = with_retries("Send", || {
                let mut client = self.client.clone();
                let req = request(SendRequest {
                    workspace: message.workspace.clone(),
                    message: Some(proto.clone()),
                });
                async move { client.send(req).await }
            })
            .await;
            match result {
                Ok(_) => Ok(()),
                // A final refusal (an invalid message, no address, a provider's rejection, a
                // send in doubt) is an outcome the gateway has already reported; redoing the
                // trigger would not change it.
                Err(s) if gateway_decided(&s) => {
                    tracing::warn!(
                        journey = %message.journey,
                        channel = %message.channel,
                        code = ?s.code(),
                        "message refused by the gateway"
                    );
                    Ok(())
                }
                Err(s) => Err(unavailable("gateway", "Send", &s)),
            }
        })
    }
}
