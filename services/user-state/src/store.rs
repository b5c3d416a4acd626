//! Where user state is kept between activations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use beckon_core::UserState;
use futures::future::BoxFuture;

use crate::error::StateError;

/// One versioned record per user, written with compare-and-set on the version.
pub trait StateStore: Send + Sync + 'static {
    fn load<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserState>, StateError>>;

    /// Stores `state` if the stored version is still `expected` (`0` for a new user).
    fn save<'a>(
        &'a self,
        state: &'a UserState,
        expected: u64,
    ) -> BoxFuture<'a, Result<(), StateError>>;

    /// Like [`StateStore::save`], but only while the partition's lease token is still
    /// `fence`: a writer whose lease was taken over gets [`StateError::Fenced`] and writes
    /// nothing. Stores without leases (the embedded one: one process owns every partition)
    /// have nothing to check.
    fn save_fenced<'a>(
        &'a self,
        state: &'a UserState,
        expected: u64,
        fence: u64,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let _ = fence;
        self.save(state, expected)
    }

    /// Removes everything kept for the user; returns the number of records removed.
    fn forget<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<u64, StateError>>;
}

/// (workspace, user)
type UserKey = (String, String);
/// (version, encoded state)
type Stored = (u64, Vec<u8>);

/// The embedded store: serialized records in memory. Serializing (rather than keeping the
/// live struct) keeps it honest: what is loaded is exactly what a durable store would return.
#[derive(Clone, Default)]
pub struct MemoryStore {
    records: Arc<Mutex<HashMap<UserKey, Stored>>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    pub fn len(&self) -> usize {
        self.records.lock().map(|r| r.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn poisoned() -> StateError {
    StateError::Unavailable("memory store lock poisoned".into())
}

impl StateStore for MemoryStore {
    fn load<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserState>, StateError>> {
        Box::pin(async move {
            let records = self.records.lock().map_err(|_| poisoned())?;
            let Some((_, bytes)) = records.get(&(workspace.to_string(), user.to_string())) else {
                return Ok(None);
            };
            serde_json::from_slice(bytes)
                .map(Some)
                .map_err(|e| StateError::Corrupt {
                    user: user.to_string(),
                    reason: e.to_string(),
                })
        })
    }

    fn save<'a>(
        &'a self,
        state: &'a UserState,
        expected: u64,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let bytes = serde_json::to_vec(state).map_err(|e| StateError::Corrupt {
                user: state.user.clone(),
                reason: e.to_string(),
            })?;
            let mut records = self.records.lock().map_err(|_| poisoned())?;
            let key = (state.workspace.clone(), state.user.clone());
            let stored = records.get(&key).map_or(0, |(v, _)| *v);
            if stored != expected {
                return Err(StateError::Conflict {
                    user: state.user.clone(),
                    expected,
                });
            }
            records.insert(key, (state.version, bytes));
            Ok(())
        })
    }

    fn forget<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async move {
            let mut records = self.records.lock().map_err(|_| poisoned())?;
            let removed = records.remove(&(workspace.to_string(), user.to_string()));
            Ok(u64::from(removed.is_some()))
        })
    }
}
