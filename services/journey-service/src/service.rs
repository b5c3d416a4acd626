//! The `beckon.v1.Journeys` gRPC service: lint, publish, list and follow definitions.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use beckon_journey::SpecError;
use beckon_proto::v1 as pb;
use beckon_proto::v1::journeys_server::{Journeys, JourneysServer};
use futures::Stream;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

use crate::documents;
use crate::error::DefinitionError;
use crate::store::{Announcement, DefinitionStore, Published, Release};

/// Files in one request at most, and bytes of YAML in all of them.
const MAX_FILES: usize = 1_000;
const MAX_BYTES: usize = 16 * 1024 * 1024;

/// The largest request the service reads, in encoded bytes: the YAML limit plus room for file
/// names and framing. Clients that publish encode up to this.
pub const MAX_REQUEST_BYTES: usize = MAX_BYTES + 64 * 1024;

/// The largest release, in encoded bytes, the service sends and a follower reads. A release
/// carries every version ever published (users in flight stay on the version they entered),
/// so it grows with every publication; gRPC's default of 4 MiB is reached by about a hundred
/// versions of a journey with a large email body. 64 MiB leaves room for thousands of
/// ordinary versions while keeping a follower's copy of it in memory cheap. A publication
/// that would take a release past it is refused, so followers never meet a release they
/// cannot read.
pub const MAX_RELEASE_BYTES: usize = 64 * 1024 * 1024;

pub struct JourneysService {
    store: Arc<dyn DefinitionStore>,
    max_release_bytes: usize,
    /// The workspaces this deployment serves; `None` serves any.
    served: Option<Vec<String>>,
}

impl JourneysService {
    pub fn new(store: Arc<dyn DefinitionStore>) -> JourneysService {
        JourneysService {
            store,
            max_release_bytes: MAX_RELEASE_BYTES,
            served: None,
        }
    }

    /// Refuses calls for workspaces other than these, as the other services do: a mistyped
    /// workspace is said to be one, instead of listing nothing or publishing where nothing
    /// runs.
    pub fn with_workspaces(mut self, workspaces: Vec<String>) -> JourneysService {
        self.served = Some(workspaces);
        self
    }

    /// `ws`, when it is a workspace this deployment serves.
    fn workspace<'r>(&self, ws: &'r str) -> Result<&'r str, DefinitionError> {
        let ws = workspace(ws)?;
        match &self.served {
            Some(served) if !served.iter().any(|w| w == ws) => {
                Err(DefinitionError::InvalidArgument {
                    field: "workspace",
                    reason: format!(
                        "{ws:?} is not served here (this deployment serves {served:?})"
                    ),
                })
            }
            _ => Ok(ws),
        }
    }

    /// Refuses publications past `bytes` of release, a lower bound than followers accept.
    /// A limit above [`MAX_RELEASE_BYTES`] is held to it: followers would not read more.
    pub fn with_release_limit(mut self, bytes: usize) -> JourneysService {
        self.max_release_bytes = bytes.min(MAX_RELEASE_BYTES);
        self
    }

    pub fn into_server(self) -> JourneysServer<JourneysService> {
        JourneysServer::new(self)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_RELEASE_BYTES)
    }
}

fn workspace(ws: &str) -> Result<&str, DefinitionError> {
    if ws.is_empty() {
        return Err(DefinitionError::InvalidArgument {
            field: "workspace",
            reason: "must not be empty".into(),
        });
    }
    Ok(ws)
}

fn files(files: Vec<pb::SpecFile>) -> Result<Vec<(String, String)>, DefinitionError> {
    if files.is_empty() {
        return Err(DefinitionError::InvalidArgument {
            field: "files",
            reason: "must hold at least one spec file".into(),
        });
    }
    if files.len() > MAX_FILES {
        return Err(DefinitionError::InvalidArgument {
            field: "files",
            reason: format!("{} files; at most {MAX_FILES} per request", files.len()),
        });
    }
    let bytes: usize = files.iter().map(|f| f.yaml.len()).sum();
    if bytes > MAX_BYTES {
        return Err(DefinitionError::InvalidArgument {
            field: "files",
            reason: format!("{bytes} bytes of YAML; at most {MAX_BYTES} per request"),
        });
    }
    Ok(files
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let name = if f.name.is_empty() {
                format!("files[{i}]")
            } else {
                f.name
            };
            (name, f.yaml)
        })
        .collect())
}

fn spec_error(e: SpecError) -> pb::SpecError {
    pb::SpecError {
        file: e.file,
        line: e.line,
        column: e.column,
        field: e.field,
        message: e.message,
    }
}

fn release_message(r: Release) -> pb::Release {
    pb::Release {
        workspace: r.workspace,
        number: r.number,
        documents: r
            .documents
            .into_iter()
            .map(|(name, yaml)| pb::SpecFile { name, yaml })
            .collect(),
    }
}

/// A release to send, or the reason it cannot be: one stored before the limit was enforced
/// (or under a higher one) would otherwise fail in the transport with a message that names
/// neither the release nor what to do.
fn sendable(r: Release, limit: usize) -> Result<pb::Release, DefinitionError> {
    let message = release_message(r);
    let bytes = prost::Message::encoded_len(&message);
    if bytes > limit {
        return Err(DefinitionError::ReleaseTooLarge {
            workspace: message.workspace,
            release: message.number,
            bytes,
            limit,
        });
    }
    Ok(message)
}

/// The encoded size the release would have with `docs` published into it.
fn release_size_with(current: &Release, docs: &[documents::Document]) -> usize {
    let mut message = release_message(current.clone());
    let known: std::collections::HashSet<&str> =
        current.documents.iter().map(|(k, _)| k.as_str()).collect();
    for d in docs {
        let key = d.key();
        if !known.contains(key.as_str()) {
            message.documents.push(pb::SpecFile {
                name: key,
                yaml: d.canonical.clone(),
            });
        }
    }
    prost::Message::encoded_len(&message)
}

/// Journeys in a release, every version, the newest of each marked active.
fn summaries(release: &Release) -> Result<Vec<pb::JourneySummary>, DefinitionError> {
    let defs = documents::load_stored(&release.documents)?;
    let mut newest: HashMap<&str, u32> = HashMap::new();
    for j in &defs.journeys {
        let v = newest.entry(j.id.as_str()).or_insert(j.version);
        *v = (*v).max(j.version);
    }
    let mut out: Vec<pb::JourneySummary> = defs
        .journeys
        .iter()
        .map(|j| pb::JourneySummary {
            id: j.id.clone(),
            version: j.version,
            steps: u32::try_from(j.steps.len()).unwrap_or(u32::MAX),
            status: if newest.get(j.id.as_str()) == Some(&j.version) {
                "active".into()
            } else {
                "superseded".into()
            },
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id).then(a.version.cmp(&b.version)));
    Ok(out)
}

type ReleaseStream = Pin<Box<dyn Stream<Item = Result<pb::Release, Status>> + Send>>;

#[tonic::async_trait]
impl Journeys for JourneysService {
    async fn lint(
        &self,
        request: Request<pb::LintRequest>,
    ) -> Result<Response<pb::LintResponse>, Status> {
        let r = request.into_inner();
        let ws = self.workspace(&r.workspace)?.to_string();
        let files = files(r.files)?;
        let current = self.store.release(&ws).await?;
        match documents::check_with(&ws, &files, &current.documents) {
            Ok(docs) => Ok(Response::new(pb::LintResponse {
                errors: Vec::new(),
                journeys: count(&docs, "journey"),
                segments: count(&docs, "segment"),
            })),
            Err(DefinitionError::Invalid(errors)) => Ok(Response::new(pb::LintResponse {
                errors: errors.into_iter().map(spec_error).collect(),
                journeys: 0,
                segments: 0,
            })),
            Err(e) => Err(e.into()),
        }
    }

    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let r = request.into_inner();
        let ws = self.workspace(&r.workspace)?.to_string();
        let files = files(r.files)?;
        let published = publish_within(self.store.as_ref(), &ws, &files, self.max_release_bytes)
            .await
            .map_err(invalid_with_every_error)?;
        let release = self.store.release(&ws).await?;
        let journeys = summaries(&release)?
            .into_iter()
            .filter(|s| {
                published
                    .added
                    .contains(&format!("journey/{}@{}", s.id, s.version))
            })
            .collect();
        let added = |kind: &str| {
            let n = published
                .added
                .iter()
                .filter(|k| k.starts_with(kind))
                .count();
            u32::try_from(n).unwrap_or(u32::MAX)
        };
        tracing::info!(
            beckon.workspace = %ws,
            release = published.release,
            added = published.added.len(),
            "definitions published"
        );
        Ok(Response::new(pb::ApplyResponse {
            published: journeys,
            release: published.release,
            segments: added("segment/"),
            policies: added("policy/"),
        }))
    }

    async fn list_journeys(
        &self,
        request: Request<pb::ListJourneysRequest>,
    ) -> Result<Response<pb::ListJourneysResponse>, Status> {
        let r = request.into_inner();
        let release = self.store.release(self.workspace(&r.workspace)?).await?;
        Ok(Response::new(pb::ListJourneysResponse {
            journeys: summaries(&release)?,
        }))
    }

    async fn get_release(
        &self,
        request: Request<pb::GetReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        let r = request.into_inner();
        let release = self.store.release(self.workspace(&r.workspace)?).await?;
        Ok(Response::new(sendable(release, self.max_release_bytes)?))
    }

    type WatchReleasesStream = ReleaseStream;

    async fn watch_releases(
        &self,
        request: Request<pb::GetReleaseRequest>,
    ) -> Result<Response<Self::WatchReleasesStream>, Status> {
        let ws = self.workspace(&request.get_ref().workspace)?.to_string();

        // Subscribe before reading, so a release published in between is not missed.
        let announcements = self.store.announcements();
        let first = self.store.release(&ws).await?;
        let state = Watch {
            store: self.store.clone(),
            workspace: ws,
            announcements,
            sent: None,
            first: Some(first),
            limit: self.max_release_bytes,
        };
        let stream = futures::stream::unfold(state, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Checks spec files and publishes what is new in them. The files are checked together with
/// everything published before (a new journey may use a segment published earlier), so a
/// release that is refused leaves the running one as it was.
pub async fn publish_files(
    store: &dyn DefinitionStore,
    workspace: &str,
    files: &[(String, String)],
) -> Result<Published, DefinitionError> {
    publish_within(store, workspace, files, MAX_RELEASE_BYTES).await
}

/// [`publish_files`], refusing a publication that would take the release past `limit` bytes.
async fn publish_within(
    store: &dyn DefinitionStore,
    workspace: &str,
    files: &[(String, String)],
    limit: usize,
) -> Result<Published, DefinitionError> {
    let current = store.release(workspace).await?;
    let docs = documents::check_with(workspace, files, &current.documents)?;
    let bytes = release_size_with(&current, &docs);
    if bytes > limit {
        return Err(DefinitionError::ReleaseTooLarge {
            workspace: workspace.to_string(),
            release: current.number + 1,
            bytes,
            limit,
        });
    }
    store.publish(workspace, &docs).await
}

fn count(docs: &[documents::Document], kind: &str) -> u32 {
    u32::try_from(docs.iter().filter(|d| d.kind == kind).count()).unwrap_or(u32::MAX)
}

/// Every spec error in the status message, one per line, so a client shows them all.
fn invalid_with_every_error(e: DefinitionError) -> Status {
    match e {
        DefinitionError::Invalid(errors) => {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Status::invalid_argument(lines.join("\n"))
        }
        other => other.into(),
    }
}

struct Watch {
    store: Arc<dyn DefinitionStore>,
    workspace: String,
    announcements: broadcast::Receiver<Announcement>,
    sent: Option<u64>,
    first: Option<Release>,
    limit: usize,
}

impl Watch {
    /// The next release to send: the current one first, then each newer one. `None` ends
    /// the stream (the store is gone).
    async fn next(&mut self) -> Option<Result<pb::Release, Status>> {
        if let Some(first) = self.first.take() {
            self.sent = Some(first.number);
            return Some(sendable(first, self.limit).map_err(Status::from));
        }
        loop {
            let wanted = match self.announcements.recv().await {
                Ok(a) if a.workspace == self.workspace => a.release,
                Ok(_) => continue,
                // Behind: whatever was missed, the current release covers it.
                Err(broadcast::error::RecvError::Lagged(_)) => u64::MAX,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            if self.sent == Some(wanted) {
                continue;
            }
            match self.store.release(&self.workspace).await {
                Ok(r) if self.sent == Some(r.number) => continue,
                Ok(r) => {
                    self.sent = Some(r.number);
                    return Some(sendable(r, self.limit).map_err(Status::from));
                }
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}
