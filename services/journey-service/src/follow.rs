//! Keeping an evaluator on the newest published definitions.
//!
//! A user-state instance reads the current release before it takes any partition (an engine
//! without the published journeys would let events pass without entering them), then follows
//! new releases as they are published and swaps its engine whole between two evaluations.
//!
//! Any release number other than the one in force is taken, not only a higher one: a number
//! that goes down means the store lost its data and was published to again, and what it holds
//! now is what the journey service lists and what must be evaluated.

use std::sync::Arc;
use std::time::Duration;

use beckon_journey::CurrentEngine;
use beckon_proto::v1 as pb;
use beckon_proto::v1::journeys_client::JourneysClient;
use futures::StreamExt as _;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::documents;
use crate::error::DefinitionError;
use crate::service::{MAX_RELEASE_BYTES, MAX_REQUEST_BYTES};
use crate::store::DefinitionStore;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Builds the engine of a release and puts it in force. A release that cannot be built leaves
/// the engine in force as it was: stopping evaluation would be worse than evaluating the
/// previous release.
fn install(engine: &CurrentEngine, workspace: &str, number: u64, docs: &[(String, String)]) {
    match documents::engine(workspace, docs) {
        Ok(e) => {
            let journeys = e.journeys().len();
            engine.replace(Arc::new(e));
            tracing::info!(
                beckon.workspace = workspace,
                release = number,
                journeys,
                "definitions in force"
            );
        }
        Err(e) => {
            tracing::error!(
                beckon.workspace = workspace,
                release = number,
                error = %e,
                "release cannot be built; the previous one stays in force"
            );
        }
    }
}

fn documents_of(release: pb::Release) -> Vec<(String, String)> {
    release
        .documents
        .into_iter()
        .map(|f| (f.name, f.yaml))
        .collect()
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Whether the service answered that the release is larger than a follower reads: the
/// service's own refusal (`ResourceExhausted`), or this side's decoding limit (`OutOfRange`,
/// from a service that sends more than it should). Either way the service is there, and
/// retrying will not help until the release is smaller.
fn too_large(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
    )
}

/// Logs why a release could not be read, in the words that fit what happened.
fn warn_unread(status: &tonic::Status, waiting: &str) {
    if too_large(status) {
        tracing::error!(
            code = ?status.code(),
            message = status.message(),
            limit = MAX_RELEASE_BYTES,
            "release too large to follow; {waiting}"
        );
    } else {
        tracing::warn!(
            code = ?status.code(),
            message = status.message(),
            "journey service not answering; {waiting}"
        );
    }
}

/// Follows the journey service at `channel`. Returns once the current release is in force
/// (retrying while the service is unreachable), or with an error when `stop` comes first.
pub async fn follow_service(
    channel: Channel,
    workspace: &str,
    engine: CurrentEngine,
    mut stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, DefinitionError> {
    // Calls carry trace context: fetching the definitions is one trace from the follower
    // into the journey service.
    let mut client = JourneysClient::with_interceptor(channel, beckon_telemetry::TraceInterceptor)
        .max_decoding_message_size(MAX_RELEASE_BYTES)
        .max_encoding_message_size(MAX_REQUEST_BYTES);
    let request = pb::GetReleaseRequest {
        workspace: workspace.to_string(),
    };

    let mut backoff = FIRST_BACKOFF;
    let first = loop {
        let fetch = tracing::info_span!(
            "definitions.fetch",
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = "beckon.v1.Journeys",
            rpc.method = "GetRelease",
            beckon.workspace = %workspace,
        );
        match client.get_release(request.clone()).instrument(fetch).await {
            Ok(r) => break r.into_inner(),
            Err(status) => warn_unread(&status, "retrying before taking partitions"),
        }
        tokio::select! {
            () = stopped(&mut stop) => {
                let reason = "stopped before definitions arrived".to_string();
                return Err(DefinitionError::Unavailable(reason));
            }
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    let mut in_force = first.number;
    install(&engine, workspace, first.number, &documents_of(first));

    let workspace = workspace.to_string();
    Ok(tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let session = async {
                let mut stream = client.watch_releases(request.clone()).await?.into_inner();
                while let Some(release) = stream.next().await {
                    let release = release?;
                    backoff = FIRST_BACKOFF;
                    if release.number != in_force {
                        in_force = release.number;
                        install(&engine, &workspace, release.number, &documents_of(release));
                    }
                }
                Ok::<(), tonic::Status>(())
            };
            tokio::select! {
                () = stopped(&mut stop) => return,
                result = session => match result {
                    Ok(()) => tracing::warn!("release stream ended; reconnecting"),
                    Err(status) if too_large(&status) => {
                        warn_unread(&status, "the release in force stays; reconnecting");
                    }
                    Err(status) => tracing::warn!(
                        code = ?status.code(),
                        message = status.message(),
                        "release stream interrupted; reconnecting"
                    ),
                },
            }
            tokio::select! {
                () = stopped(&mut stop) => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }))
}

/// Follows a store in the same process (`serve all`). The current release is in force when
/// this returns.
pub async fn follow_store(
    store: Arc<dyn DefinitionStore>,
    workspace: &str,
    engine: CurrentEngine,
    mut stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, DefinitionError> {
    let mut announcements = store.announcements();
    let first = store.release(workspace).await?;
    let mut in_force = first.number;
    install(&engine, workspace, first.number, &first.documents);

    let workspace = workspace.to_string();
    Ok(tokio::spawn(async move {
        loop {
            let heard = tokio::select! {
                () = stopped(&mut stop) => return,
                heard = announcements.recv() => heard,
            };
            match heard {
                Ok(a) if a.workspace != workspace || a.release == in_force => continue,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
            match store.release(&workspace).await {
                Ok(r) if r.number != in_force => {
                    in_force = r.number;
                    install(&engine, &workspace, r.number, &r.documents);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading a new release failed"),
            }
        }
    }))
}
