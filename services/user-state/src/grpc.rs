//! The `beckon.v1.UserState` gRPC service: reading, exporting and forgetting users, and
//! explaining what was decided for them, from the state store.
//!
//! Segment members are listed from the index the state store keeps with every write, paged
//! partition by partition with an opaque page token.
//!
//! Reads see the state as of the last write of the user's partition loop, which writes after
//! every batch it applies.
//!
//! Forgetting goes through the store and the user's partition log: ForgetUser erases what the
//! store keeps, then appends a forget entry for the user (and for each id merged into it),
//! answering only once both are durable. The erase is what the answer guarantees about
//! Redis; the entry is what reaches the copy in memory: the partition's owner, whichever
//! instance it is, drops its live actor and hibernated record when it applies the entry, in
//! log order, and erases the store again for anything triggers ordered before the forget
//! wrote meanwhile. Triggers appended after the forget find an empty user.
//!
//! Answers may be large: GetUser and ExportUser carry a user's whole record. The service
//! sends answers up to [`MAX_ANSWER_BYTES`], and clients of it (`beckon user`) accept as much.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use beckon_core::{Clock, Forget, UserState};
use beckon_ingest::log::EventLog;
use beckon_journey::CurrentEngine;
use beckon_proto::convert::millis_to_timestamp;
use beckon_proto::v1::user_state_server::{UserState as UserStateRpc, UserStateServer};
use beckon_proto::v1::{
    Decision, Explanation, ForgetUserResponse, GetUserRequest, JourneyPosition,
    ListSegmentMembersRequest, ListSegmentMembersResponse, SegmentSizesRequest,
    SegmentSizesResponse, UserExport, UserView,
};
use tonic::{Request, Response, Status};

use crate::error::StateError;
use crate::store::{MAX_MEMBERS_PAGE, MemberCursor, StateStore, merged_away_into};

/// Members per page when the request leaves `page_size` at 0. Larger requests are cut to
/// [`MAX_MEMBERS_PAGE`].
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// What a `page_token` stands for: where the next page of one segment's members starts. The
/// token is opaque to clients (URL-safe base64); it carries the workspace and segment so a
/// token cannot be replayed against another listing.
#[derive(Debug, PartialEq, Eq)]
struct PageToken {
    workspace: String,
    segment: String,
    at: MemberCursor,
}

impl PageToken {
    const VERSION: &str = "m1";

    fn encode(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n{}",
            Self::VERSION,
            self.workspace,
            self.segment,
            self.at.partition
        );
        if let Some(after) = &self.at.after {
            text.push('\n');
            text.push_str(after);
        }
        URL_SAFE_NO_PAD.encode(text)
    }

    fn decode(token: &str) -> Option<PageToken> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(5, '\n');
        if parts.next()? != Self::VERSION {
            return None;
        }
        let workspace = parts.next()?.to_string();
        let segment = parts.next()?.to_string();
        let partition = parts.next()?.parse().ok()?;
        let after = parts.next().map(str::to_string);
        if after.as_deref() == Some("") {
            return None;
        }
        Some(PageToken {
            workspace,
            segment,
            at: MemberCursor { partition, after },
        })
    }
}

/// Tombstones followed when reading a merged id; a longer chain means the ids were merged in
/// circles, which merges never do.
const MAX_MERGE_HOPS: usize = 8;

/// The largest answer the service sends and its clients accept. A user's record is bounded
/// (traits by `max_trait_bytes`, at most 4 MiB; event names by `max_event_names`; histories
/// by constants), but records written before those bounds, or with generous settings, run to
/// tens of megabytes, and the data-subject export must still reach the caller whole.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

pub struct UserStateService {
    store: Arc<dyn StateStore>,
    /// The partition logs, where forgets go so the users' owners let go of them in order.
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
    /// The workspaces this deployment runs. A forget for any other would append to a log no
    /// one reads, where it stays, so requests naming one are refused. `None` takes every
    /// workspace.
    served: Option<Vec<String>>,
    /// The definitions in force, so a listing can tell a segment nobody is in from one that
    /// does not exist. Without them every segment name is taken as it comes.
    definitions: Option<CurrentEngine>,
}

impl UserStateService {
    pub fn new(
        store: Arc<dyn StateStore>,
        log: Arc<dyn EventLog>,
        clock: Arc<dyn Clock>,
    ) -> UserStateService {
        UserStateService {
            store,
            log,
            clock,
            served: None,
            definitions: None,
        }
    }

    /// Answers NOT_FOUND for a segment these definitions do not have and nobody is in.
    pub fn with_definitions(mut self, definitions: CurrentEngine) -> UserStateService {
        self.definitions = Some(definitions);
        self
    }

    /// The gRPC server for this service, sending answers up to [`MAX_ANSWER_BYTES`].
    pub fn into_server(self) -> UserStateServer<UserStateService> {
        UserStateServer::new(self).max_encoding_message_size(MAX_ANSWER_BYTES)
    }

    /// Whether `segment` is known here: defined now, or (when no definitions are at hand)
    /// taken on trust.
    fn defines(&self, segment: &str) -> bool {
        self.definitions
            .as_ref()
            .is_none_or(|d| d.get().segments().iter().any(|s| s.id == segment))
    }

    /// Refuses requests for workspaces other than these.
    pub fn with_workspaces(mut self, workspaces: Vec<String>) -> UserStateService {
        self.served = Some(workspaces);
        self
    }

    fn check_workspace(&self, workspace: &str) -> Result<(), Status> {
        if workspace.is_empty() {
            return Err(Status::invalid_argument("workspace: must not be empty"));
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

    /// The id and the ids merged into it whose tombstones still point at it: the ids a
    /// forget must reach, each in its own partition.
    async fn ids_to_forget(&self, workspace: &str, user: &str) -> Result<Vec<String>, Status> {
        let mut ids = vec![user.to_string()];
        let merged = match self.store.load(workspace, user).await {
            Ok(state) => state.map(|s| s.merged).unwrap_or_default(),
            // A record that cannot be read is still erased; it names no merged ids then.
            Err(StateError::Corrupt { .. }) => Default::default(),
            Err(e) => return Err(e.into()),
        };
        for id in merged.keys() {
            let points_here = match self.store.load(workspace, id).await {
                Ok(state) => state.is_some_and(|s| merged_away_into(&s, user, &merged)),
                Err(StateError::Corrupt { .. }) => false,
                Err(e) => return Err(e.into()),
            };
            if points_here {
                ids.push(id.clone());
            }
        }
        Ok(ids)
    }

    /// The user a forget of `user` is about: for an id merged into another user, that user,
    /// as reads resolve it. Every id of a person names them, so a request naming an old id
    /// erases the person, with every id merged into them. An id whose chain leads to no
    /// stored user (or loops) is forgotten as it is.
    async fn forget_target(&self, workspace: &str, user: &str) -> Result<String, Status> {
        // A record that cannot be read leads nowhere; it is forgotten as it is.
        let readable = |loaded: Result<Option<UserState>, StateError>| match loaded {
            Ok(state) => Ok(state),
            Err(StateError::Corrupt { .. }) => Ok(None),
            Err(e) => Err(Status::from(e)),
        };
        let mut target = user.to_string();
        let mut state = readable(self.store.load(workspace, user).await)?;
        for _ in 0..MAX_MERGE_HOPS {
            let Some(into) = state.and_then(|s| s.merged_into) else {
                break;
            };
            state = readable(self.store.load(workspace, &into).await)?;
            if state.is_none() {
                break;
            }
            target = into;
        }
        Ok(target)
    }

    /// The stored record of the id, as it is (a merged id's tombstone included).
    async fn load(&self, req: &GetUserRequest) -> Result<UserState, Status> {
        self.check_workspace(&req.workspace)?;
        check_user_id(&req.user_id)?;
        self.store
            .load(&req.workspace, &req.user_id)
            .await?
            .ok_or_else(|| Status::not_found(format!("user_id: no user {:?}", req.user_id)))
    }

    /// The user behind the id: for an id merged into another user, that user.
    async fn resolve(&self, req: &GetUserRequest) -> Result<UserState, Status> {
        let mut state = self.load(req).await?;
        for _ in 0..MAX_MERGE_HOPS {
            let Some(into) = state.merged_into.clone() else {
                return Ok(state);
            };
            let next = GetUserRequest {
                workspace: req.workspace.clone(),
                user_id: into,
            };
            state = self.load(&next).await?;
        }
        Err(Status::failed_precondition(format!(
            "user_id: {:?} was merged more than {MAX_MERGE_HOPS} times over",
            req.user_id
        )))
    }
}

/// Refuses a user id that no event could have given: ingest's rule (at most
/// [`MAX_ID_BYTES`](beckon_ingest::segment::MAX_ID_BYTES), not blank, no control characters),
/// so a request cannot make the service look up, log or echo an id of any size.
fn check_user_id(id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("user_id: must not be empty"));
    }
    match beckon_ingest::segment::id_problem(id) {
        Some(why) => Err(Status::invalid_argument(format!("user_id: {why}"))),
        None => Ok(()),
    }
}

/// The user as the API shows it.
pub fn view(state: &UserState) -> UserView {
    let behaviour = serde_json::json!({
        "first_seen": state.first_seen.map(|t| t.to_string()),
        "last_seen": state.last_seen.map(|t| t.to_string()),
        "total_events": state.total_events,
        "traits": state.traits.iter().map(|(k, v)| (k.clone(), v.value.clone()))
            .collect::<serde_json::Map<_, _>>(),
        // Times as RFC 3339, as `first_seen` and `last_seen` above; the record keeps
        // milliseconds.
        "events": state.events.iter().map(|(name, e)| {
            (name.clone(), serde_json::json!({
                "count": e.count,
                "first": e.first.to_string(),
                "last": e.last.to_string(),
            }))
        }).collect::<serde_json::Map<_, _>>(),
        "event_names_evicted": state.event_names_evicted,
        "traits_dropped": state.traits_dropped,
    });
    UserView {
        user_id: state.user.clone(),
        state_json: behaviour.to_string(),
        segments: state
            .segments
            .iter()
            .filter(|(_, m)| m.member)
            .map(|(id, _)| id.clone())
            .collect(),
        journeys: state
            .journeys
            .iter()
            .map(|j| JourneyPosition {
                journey: j.journey.clone(),
                version: j.version,
                step: j.step.clone(),
                entered_at: Some(millis_to_timestamp(j.entered_at.as_millis())),
                key: j.key.clone().unwrap_or_default(),
            })
            .collect(),
        version: state.version,
    }
}

#[tonic::async_trait]
impl UserStateRpc for UserStateService {
    async fn get_user(&self, req: Request<GetUserRequest>) -> Result<Response<UserView>, Status> {
        let state = self.resolve(req.get_ref()).await?;
        Ok(Response::new(view(&state)))
    }

    async fn export_user(
        &self,
        req: Request<GetUserRequest>,
    ) -> Result<Response<UserExport>, Status> {
        let state = self.load(req.get_ref()).await?;
        let json = serde_json::to_string_pretty(&state)
            .map_err(|e| Status::internal(format!("export failed: {e}")))?;
        Ok(Response::new(UserExport { json }))
    }

    async fn forget_user(
        &self,
        req: Request<GetUserRequest>,
    ) -> Result<Response<ForgetUserResponse>, Status> {
        let r = req.into_inner();
        self.check_workspace(&r.workspace)?;
        check_user_id(&r.user_id)?;

        // The merged ids are read before the erase removes the record naming them. Erasing
        // before appending makes the count this call's own: once the entry is in the log the
        // owner may erase first. A failure in between leaves the entries to a retried call.
        let user = self.forget_target(&r.workspace, &r.user_id).await?;
        let ids = self.ids_to_forget(&r.workspace, &user).await?;
        let keys_removed = self.store.forget(&r.workspace, &user).await?;

        let at = self.clock.now();
        let traceparent = beckon_telemetry::current_trace_string();
        for id in &ids {
            let forget = Forget {
                user: id.clone(),
                at,
            };
            self.log
                .append_forget(&r.workspace, &forget, traceparent.as_deref())
                .await
                .map_err(|e| StateError::Unavailable(e.to_string()))?;
        }
        tracing::info!(
            beckon.workspace = %r.workspace,
            ids = ids.len(),
            keys_removed,
            "user forgotten"
        );
        Ok(Response::new(ForgetUserResponse { keys_removed }))
    }

    async fn list_segment_members(
        &self,
        req: Request<ListSegmentMembersRequest>,
    ) -> Result<Response<ListSegmentMembersResponse>, Status> {
        let r = req.into_inner();
        self.check_workspace(&r.workspace)?;
        if r.segment.is_empty() {
            return Err(Status::invalid_argument("segment: must not be empty"));
        }
        let limit = match r.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => (n as usize).min(MAX_MEMBERS_PAGE),
        };
        let from = if r.page_token.is_empty() {
            MemberCursor::default()
        } else {
            let cursor = PageToken::decode(&r.page_token)
                .ok_or_else(|| Status::invalid_argument("page_token: not a token of this API"))?;
            if cursor.workspace != r.workspace || cursor.segment != r.segment {
                return Err(Status::invalid_argument(format!(
                    "page_token: issued for segment {:?} of workspace {:?}, not this one",
                    cursor.segment, cursor.workspace
                )));
            }
            let partitions = self.store.partitions();
            if cursor.at.partition >= partitions {
                return Err(Status::invalid_argument(format!(
                    "page_token: names partition {} of a store with {partitions}",
                    cursor.at.partition
                )));
            }
            cursor.at
        };

        let page = self
            .store
            .members(&r.workspace, &r.segment, from, limit)
            .await?;

        // A segment no longer defined keeps listing the members it still has; an empty
        // listing of a name nothing defines is a mistyped name, not an empty segment.
        let first = r.page_token.is_empty();
        if first && page.users.is_empty() && page.next.is_none() && !self.defines(&r.segment) {
            return Err(Status::not_found(format!(
                "segment: {:?} is not defined in workspace {:?}",
                r.segment, r.workspace
            )));
        }
        let next_page_token = page
            .next
            .map(|at| {
                PageToken {
                    workspace: r.workspace.clone(),
                    segment: r.segment.clone(),
                    at,
                }
                .encode()
            })
            .unwrap_or_default();
        Ok(Response::new(ListSegmentMembersResponse {
            user_ids: page.users,
            next_page_token,
        }))
    }

    async fn segment_sizes(
        &self,
        req: Request<SegmentSizesRequest>,
    ) -> Result<Response<SegmentSizesResponse>, Status> {
        let r = req.into_inner();
        self.check_workspace(&r.workspace)?;
        let sizes = self.store.segment_sizes(&r.workspace).await?;
        Ok(Response::new(SegmentSizesResponse {
            sizes: sizes.into_iter().collect(),
        }))
    }

    async fn explain(&self, req: Request<GetUserRequest>) -> Result<Response<Explanation>, Status> {
        let state = self.resolve(req.get_ref()).await?;
        // A `sent` is told by what the gateway reported of its message since.
        let recorded: Vec<_> = state.decisions.iter().cloned().collect();
        let told = beckon_core::delivery::told(&recorded);
        let decisions = recorded
            .iter()
            .zip(told)
            .map(|(d, (kind, reason))| Decision {
                at: Some(millis_to_timestamp(d.at.as_millis())),
                journey: d.journey.clone(),
                step: d.step.clone(),
                kind,
                reason,
            })
            .collect();
        let notes = match &self.definitions {
            Some(engine) => engine.get().notes(&state),
            None => beckon_journey::Engine::default().notes(&state),
        };
        Ok(Response::new(Explanation {
            user_id: state.user,
            decisions,
            notes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_gives_event_times_as_rfc3339_like_the_other_times() {
        let mut state = UserState::new("w", "u1");
        let at = beckon_core::Ts::parse_rfc3339("2026-03-02T09:00:00Z").expect("instant");
        state.events.insert(
            "Pricing".into(),
            beckon_core::state::EventStats {
                count: 2,
                first: at,
                last: at.saturating_add(beckon_core::Duration::from_millis(300_000)),
            },
        );
        let shown: serde_json::Value =
            serde_json::from_str(&view(&state).state_json).expect("JSON");
        assert_eq!(
            shown["events"]["Pricing"],
            serde_json::json!({
                "count": 2,
                "first": "2026-03-02T09:00:00.000Z",
                "last": "2026-03-02T09:05:00.000Z",
            })
        );
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_garbage() {
        let token = PageToken {
            workspace: "w".into(),
            segment: "vip".into(),
            at: MemberCursor {
                partition: 7,
                after: Some("user\nwith newline".into()),
            },
        };
        assert_eq!(PageToken::decode(&token.encode()), Some(token));
        assert_eq!(PageToken::decode("not base64!"), None);
        assert_eq!(
            PageToken::decode(&URL_SAFE_NO_PAD.encode("m2\nw\nvip\n0")),
            None
        );
        assert_eq!(
            PageToken::decode(&URL_SAFE_NO_PAD.encode("m1\nw\nvip\nx")),
            None
        );
    }
}
