//! The `beckon.v1.UserState` gRPC service: reading, exporting and forgetting users, and
//! explaining what was decided for them, from the state store.
//!
//! Reads see the state as of the last write of the user's partition loop, which writes after
//! every batch it applies.

use std::sync::Arc;

use beckon_core::UserState;
use beckon_proto::convert::millis_to_timestamp;
use beckon_proto::v1::user_state_server::UserState as UserStateRpc;
use beckon_proto::v1::{
    Decision, Explanation, ForgetUserResponse, GetUserRequest, JourneyPosition,
    ListSegmentMembersRequest, ListSegmentMembersResponse, SegmentSizesRequest,
    SegmentSizesResponse, UserExport, UserView,
};
use tonic::{Request, Response, Status};

use crate::store::StateStore;

/// Tombstones followed when reading a merged id; a longer chain means the ids were merged in
/// circles, which merges never do.
const MAX_MERGE_HOPS: usize = 8;

pub struct UserStateService {
    store: Arc<dyn StateStore>,
}

impl UserStateService {
    pub fn new(store: Arc<dyn StateStore>) -> UserStateService {
        UserStateService { store }
    }

    /// The stored record of the id, as it is (a merged id's tombstone included).
    async fn load(&self, req: &GetUserRequest) -> Result<UserState, Status> {
        if req.workspace.is_empty() {
            return Err(Status::invalid_argument("workspace: must not be empty"));
        }
        if req.user_id.is_empty() {
            return Err(Status::invalid_argument("user_id: must not be empty"));
        }
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

/// The user as the API shows it.
pub fn view(state: &UserState) -> UserView {
    let behaviour = serde_json::json!({
        "first_seen": state.first_seen.map(|t| t.to_string()),
        "last_seen": state.last_seen.map(|t| t.to_string()),
        "total_events": state.total_events,
        "traits": state.traits.iter().map(|(k, v)| (k.clone(), v.value.clone()))
            .collect::<serde_json::Map<_, _>>(),
        "events": state.events,
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
        if r.workspace.is_empty() || r.user_id.is_empty() {
            return Err(Status::invalid_argument(
                "workspace and user_id: must not be empty",
            ));
        }
        let keys_removed = self.store.forget(&r.workspace, &r.user_id).await?;
        tracing::info!(workspace = %r.workspace, keys_removed, "user forgotten");
        Ok(Response::new(ForgetUserResponse { keys_removed }))
    }

    async fn list_segment_members(
        &self,
        _req: Request<ListSegmentMembersRequest>,
    ) -> Result<Response<ListSegmentMembersResponse>, Status> {
        Err(Status::unimplemented(
            "segment membership is kept per user; there is no member index to page through yet",
        ))
    }

    async fn segment_sizes(
        &self,
        _req: Request<SegmentSizesRequest>,
    ) -> Result<Response<SegmentSizesResponse>, Status> {
        Err(Status::unimplemented(
            "segment membership is kept per user; there is no member index to count yet",
        ))
    }

    async fn explain(&self, req: Request<GetUserRequest>) -> Result<Response<Explanation>, Status> {
        let state = self.resolve(req.get_ref()).await?;
        let decisions = state
            .decisions
            .iter()
            .map(|d| Decision {
                at: Some(millis_to_timestamp(d.at.as_millis())),
                journey: d.journey.clone(),
                step: d.step.clone(),
                kind: d.kind.to_string(),
                reason: d.reason.clone(),
            })
            .collect();
        Ok(Response::new(Explanation {
            user_id: state.user,
            decisions,
        }))
    }
}
