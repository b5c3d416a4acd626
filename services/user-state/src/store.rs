//! Where user state is kept between activations, with the index of segment members.
//!
//! The member index is written in the same step as the record that changes membership, so
//! it never disagrees with the stored users: a user is in a segment's index exactly when the
//! user's stored record says it is a member.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use beckon_core::UserState;
use futures::StreamExt as _;
use futures::future::BoxFuture;

use crate::error::StateError;

/// Whether `id`'s record is a tombstone that leads to the forgotten `user`: it was merged into
/// the user, or into another id the user took over. Merges flatten: a user that takes over an
/// id also takes over the ids merged into that one, whose tombstones keep pointing at the id
/// they were merged into. A record that points anywhere else (or nowhere: an id forgotten on
/// its own and seen again since) is another user now and stays.
pub(crate) fn merged_away_into(
    id_state: &UserState,
    user: &str,
    merged: &BTreeMap<String, beckon_core::MergeStage>,
) -> bool {
    id_state
        .merged_into
        .as_deref()
        .is_some_and(|into| into == user || merged.contains_key(into))
}

/// Largest page of segment members a store hands out at once.
pub const MAX_MEMBERS_PAGE: usize = 1000;

/// A place in a segment's member list: members are listed partition by partition, each in
/// byte order of the user id; `after` is the last user already returned in `partition`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberCursor {
    pub partition: u32,
    pub after: Option<String>,
}

/// One page of a segment's members, and where the next page starts (none after the last).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberPage {
    pub users: Vec<String>,
    pub next: Option<MemberCursor>,
}

/// The segments a stored record says the user is a member of, sorted.
pub fn member_segments(state: &UserState) -> Vec<String> {
    state
        .segments
        .iter()
        .filter(|(_, m)| m.member)
        .map(|(id, _)| id.clone())
        .collect()
}

/// Where the write acknowledges the log entries it applied: the partition's log stream, this
/// consumer group, these entry ids. Acknowledged entries are deleted, as the log's own
/// acknowledgement does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogAck {
    pub group: String,
    pub entry_ids: Vec<String>,
}

/// Writes in flight at once when a store writes a batch's users one call each.
const WRITES_IN_FLIGHT: usize = 64;

/// One changed user to write: its state, and the version the store must still hold.
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    pub state: &'a UserState,
    pub expected: u64,
}

/// What [`StateStore::save_all`] did: one result per user, in the order given, and the log's
/// backlog when the acknowledgement went with the writes (as [`StateStore::save_acking`]).
#[derive(Debug, Default)]
pub struct Written {
    pub results: Vec<Result<(), StateError>>,
    pub backlog: Option<u64>,
}

/// The error of a write not tried because another write of its batch failed: the batch's
/// acknowledgement rides with it, and must wait for every other write.
pub(crate) fn held_back() -> StateError {
    StateError::Unavailable("not written: another write of the batch failed".into())
}

/// One user's write of [`StateStore::save_all`]'s default, fenced when a token is given.
fn save_one<'a, S: StateStore + ?Sized>(
    store: &'a S,
    w: &'a Write<'a>,
    fence: Option<u64>,
) -> BoxFuture<'a, Result<(), StateError>> {
    match fence {
        Some(token) => store.save_fenced(w.state, w.expected, token),
        None => store.save(w.state, w.expected),
    }
}

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

    /// Writes like [`StateStore::save_fenced`] (or [`StateStore::save`] without `fence`) and,
    /// in the same step, acknowledges the log entries of `ack` in the partition's log, for a
    /// store that keeps the log beside the users (one Redis): the state and the
    /// acknowledgement then happen together or not at all, in one round trip. Answers the
    /// entries left in the log (its backlog, since acknowledged entries go). A store that
    /// cannot only writes and answers `None`, and the caller acknowledges through the log.
    fn save_acking<'a>(
        &'a self,
        state: &'a UserState,
        expected: u64,
        fence: Option<u64>,
        ack: &'a LogAck,
    ) -> BoxFuture<'a, Result<Option<u64>, StateError>> {
        let _ = ack;
        Box::pin(async move {
            match fence {
                Some(token) => self.save_fenced(state, expected, token).await?,
                None => self.save(state, expected).await?,
            }
            Ok(None)
        })
    }

    /// Writes a batch's changed users, each its own compare-and-set as in
    /// [`StateStore::save_fenced`] (or [`StateStore::save`] without `fence`), so one user's
    /// conflict leaves the others written; with `ack`, acknowledges those log entries as
    /// [`StateStore::save_acking`] does, and only once every write has succeeded. This
    /// default writes up to [`WRITES_IN_FLIGHT`] users at once, one call each, and the last
    /// user's write carries the acknowledgement after the others; a store that can write
    /// many users in one call does.
    fn save_all<'a>(
        &'a self,
        writes: &'a [Write<'a>],
        fence: Option<u64>,
        ack: Option<&'a LogAck>,
    ) -> BoxFuture<'a, Written> {
        Box::pin(async move {
            let Some((last, others)) = writes.split_last() else {
                return Written::default();
            };
            let carrier = if ack.is_some() { Some(last) } else { None };
            let others = if carrier.is_some() { others } else { writes };
            // Made before the first wait: a closure held across it would not be `Send`.
            let saves: Vec<BoxFuture<'a, Result<(), StateError>>> =
                others.iter().map(|w| save_one(self, w, fence)).collect();
            let mut results: Vec<Result<(), StateError>> = futures::stream::iter(saves)
                .buffered(WRITES_IN_FLIGHT)
                .collect()
                .await;

            let mut backlog = None;
            if let (Some(w), Some(ack)) = (carrier, ack) {
                let result = if results.iter().all(Result::is_ok) {
                    self.save_acking(w.state, w.expected, fence, ack)
                        .await
                        .map(|left| backlog = left)
                } else {
                    Err(held_back())
                };
                results.push(result);
            }
            Written { results, backlog }
        })
    }

    /// Removes everything kept for the user, and for the ids merged into it: records,
    /// tombstones, member index entries. Returns the number of records removed.
    fn forget<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<u64, StateError>>;

    /// Like [`StateStore::forget`], but only while the partition's lease token is still
    /// `fence`, as for [`StateStore::save_fenced`]: an owner whose lease was taken over gets
    /// [`StateError::Fenced`] and erases nothing of what the new owner wrote.
    fn forget_fenced<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        fence: u64,
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        let _ = fence;
        self.forget(workspace, user)
    }

    /// How many partitions member listings walk through; a cursor names one of them.
    fn partitions(&self) -> u32;

    /// Up to `limit` members of `segment` from `from` on (at most [`MAX_MEMBERS_PAGE`]).
    fn members<'a>(
        &'a self,
        workspace: &'a str,
        segment: &'a str,
        from: MemberCursor,
        limit: usize,
    ) -> BoxFuture<'a, Result<MemberPage, StateError>>;

    /// Members per segment with at least one member.
    fn segment_sizes<'a>(
        &'a self,
        workspace: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, u64>, StateError>>;
}

/// (workspace, user)
type UserKey = (String, String);
/// (version, encoded state)
type Stored = (u64, Vec<u8>);

/// Records, and members by (workspace, segment), changed together under one lock.
#[derive(Default)]
struct Records {
    records: HashMap<UserKey, Stored>,
    members: BTreeMap<(String, String), BTreeSet<String>>,
    /// The segments each stored record says its user is in, so a write needs no decoding.
    member_of: HashMap<UserKey, Vec<String>>,
}

impl Records {
    /// Moves the user's index entries from what the old record said to what `now` says.
    fn reindex(&mut self, workspace: &str, user: &str, now: &[String]) {
        let before = self.stored_segments(workspace, user);
        for segment in before.iter().filter(|s| !now.contains(s)) {
            let key = (workspace.to_string(), segment.clone());
            if let Some(set) = self.members.get_mut(&key) {
                set.remove(user);
                if set.is_empty() {
                    self.members.remove(&key);
                }
            }
        }
        for segment in now.iter().filter(|s| !before.contains(s)) {
            self.members
                .entry((workspace.to_string(), segment.clone()))
                .or_default()
                .insert(user.to_string());
        }
        let key = (workspace.to_string(), user.to_string());
        if now.is_empty() {
            self.member_of.remove(&key);
        } else {
            self.member_of.insert(key, now.to_vec());
        }
    }

    fn stored_segments(&self, workspace: &str, user: &str) -> Vec<String> {
        self.member_of
            .get(&(workspace.to_string(), user.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    fn remove(&mut self, workspace: &str, user: &str) -> Option<UserState> {
        self.reindex(workspace, user, &[]);
        let (_, bytes) = self
            .records
            .remove(&(workspace.to_string(), user.to_string()))?;
        crate::redis::decode(&bytes, user).ok()
    }
}

/// The embedded store: serialized records in memory. Serializing (rather than keeping the
/// live struct) keeps it honest: what is loaded is exactly what a durable store would return.
/// It has one partition as far as member listings go.
#[derive(Clone, Default)]
pub struct MemoryStore {
    records: Arc<Mutex<Records>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    pub fn len(&self) -> usize {
        self.records.lock().map(|r| r.records.len()).unwrap_or(0)
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
            let key = (workspace.to_string(), user.to_string());
            let Some((_, bytes)) = records.records.get(&key) else {
                return Ok(None);
            };
            crate::redis::decode(bytes, user).map(Some)
        })
    }

    fn save<'a>(
        &'a self,
        state: &'a UserState,
        expected: u64,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            // The compact encoding the Redis store writes: cheaper to write and read than JSON.
            let bytes = crate::redis::encode(state, crate::redis::Encoding::MessagePack)?;
            let mut records = self.records.lock().map_err(|_| poisoned())?;
            let key = (state.workspace.clone(), state.user.clone());
            let stored = records.records.get(&key).map_or(0, |(v, _)| *v);
            if stored != expected {
                return Err(StateError::Conflict {
                    user: state.user.clone(),
                    expected,
                });
            }
            records.reindex(&state.workspace, &state.user, &member_segments(state));
            records.records.insert(key, (state.version, bytes));
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
            let Some(state) = records.remove(workspace, user) else {
                return Ok(0);
            };
            let mut removed = 1;
            for id in state.merged.keys() {
                let key = (workspace.to_string(), id.clone());
                let tombstone = records
                    .records
                    .get(&key)
                    .and_then(|(_, b)| crate::redis::decode(b, id).ok())
                    .is_some_and(|s| merged_away_into(&s, user, &state.merged));
                if tombstone && records.remove(workspace, id).is_some() {
                    removed += 1;
                }
            }
            Ok(removed)
        })
    }

    fn partitions(&self) -> u32 {
        1
    }

    fn members<'a>(
        &'a self,
        workspace: &'a str,
        segment: &'a str,
        from: MemberCursor,
        limit: usize,
    ) -> BoxFuture<'a, Result<MemberPage, StateError>> {
        Box::pin(async move {
            let records = self.records.lock().map_err(|_| poisoned())?;
            let limit = limit.clamp(1, MAX_MEMBERS_PAGE);
            let Some(set) = records
                .members
                .get(&(workspace.to_string(), segment.to_string()))
            else {
                return Ok(MemberPage::default());
            };
            let users: Vec<String> = match &from.after {
                Some(after) => set
                    .range::<String, _>((
                        std::ops::Bound::Excluded(after),
                        std::ops::Bound::Unbounded,
                    ))
                    .take(limit)
                    .cloned()
                    .collect(),
                None => set.iter().take(limit).cloned().collect(),
            };
            let more = users.last().is_some_and(|last| {
                set.range::<String, _>((
                    std::ops::Bound::Excluded(last),
                    std::ops::Bound::Unbounded,
                ))
                .next()
                .is_some()
            });
            let next = more.then(|| MemberCursor {
                partition: 0,
                after: users.last().cloned(),
            });
            Ok(MemberPage { users, next })
        })
    }

    fn segment_sizes<'a>(
        &'a self,
        workspace: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, u64>, StateError>> {
        Box::pin(async move {
            let records = self.records.lock().map_err(|_| poisoned())?;
            Ok(records
                .members
                .iter()
                .filter(|((w, _), _)| w == workspace)
                .map(|((_, segment), users)| (segment.clone(), users.len() as u64))
                .collect())
        })
    }
}
