//! User state in Redis: one versioned record per user, written with compare-and-set.
//!
//! A user's record is the hash `<ns>:{<workspace>:<partition>}:u:<user>` with the fields `v`
//! (the version, as decimal text), `d` (the encoded [`UserState`]) and `s` (the segments the
//! record makes the user a member of, one per line). The same script that writes the record
//! keeps the partition's segment member index (see [`members_key`]) in step with `s`. The
//! partition in the
//! hash tag puts every key of a partition in one Cluster slot, so one Lua script can write
//! the record, append the effects to the partition's outbox stream and acknowledge the log
//! entry that caused them: either all of it happens or none (see [`RedisStateStore::commit`]).
//!
//! Records are JSON or MessagePack ([`Encoding`]); both are read back whatever the store
//! writes, told apart by the first byte (a JSON object starts with `{`, a MessagePack map
//! never does), so the encoding can change without migrating stored users.

use std::collections::HashMap;
use std::sync::LazyLock;

use beckon_core::partition::partition_of;
use beckon_core::{Effect, Timer, UserState};
use beckon_redis::resend_if_lost;
use beckon_scheduler::keys::Keys;
use futures::future::BoxFuture;
use redis::Script;
use redis::aio::ConnectionLike;
use serde::Serialize;
use tracing::{debug, info};

use crate::error::StateError;
pub use crate::store::LogAck;
use crate::store::{
    MAX_MEMBERS_PAGE, MemberCursor, MemberPage, StateStore, Write, Written, held_back,
    member_segments,
};

/// Entries of the outbox looked at when forgetting a user. The outbox is drained
/// continuously, so its pending part is short; the bound keeps the script's run time bounded.
const FORGET_OUTBOX_SCAN: usize = 10_000;

/// How a record is encoded on write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// Readable with `redis-cli`; what export returns.
    Json,
    /// MessagePack with field names (needed since fields are skipped when empty): smaller and
    /// faster to decode than JSON. See the benchmark for figures.
    #[default]
    MessagePack,
}

/// An outbox entry: an effect of a user's evaluation waiting to be carried out.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    /// The stream entry id, to delete it once carried out.
    pub id: String,
    pub user: String,
    pub effect: Effect,
}

/// Lua helpers shared by the scripts that keep the segment member index: `esc` escapes a
/// segment id for a key exactly as [`beckon_scheduler::keys::escape`] does, `set` reads a
/// newline-separated list of segment ids, `unindex` takes a user out of one segment, and
/// `reindex` moves a user's entries from the segments a record listed to those it lists now.
const INDEX_LUA: &str = r"
local function esc(s)
    return (s:gsub('[%%{}:]', function(c) return string.format('%%%02X', string.byte(c)) end))
end
local function set(text)
    local t = {}
    for x in string.gmatch(text, '[^\n]+') do t[x] = true end
    return t
end
local function unindex(prefix, seg, user)
    if redis.call('ZREM', prefix .. ':seg:' .. esc(seg), user) == 1 then
        if redis.call('HINCRBY', prefix .. ':segsizes', seg, -1) <= 0 then
            redis.call('HDEL', prefix .. ':segsizes', seg)
        end
        return 1
    end
    return 0
end
local function reindex(prefix, user, was, now_text)
    if was == now_text then return end
    local before, now = set(was), set(now_text)
    for seg in pairs(before) do
        if not now[seg] then unindex(prefix, seg, user) end
    end
    for seg in pairs(now) do
        if not before[seg] and
            redis.call('ZADD', prefix .. ':seg:' .. esc(seg), 0, user) == 1 then
            redis.call('HINCRBY', prefix .. ':segsizes', seg, 1)
        end
    end
end
";

// KEYS: record, outbox, log, lease token. ARGV: expected version, new version, data, user,
// ack group ('' for none), number of entry ids to acknowledge, fencing token ('' for none),
// member segments (one per line), partition key prefix, entry ids..., effects...
// Versions are compared as text: they are u64 and Lua numbers are doubles. Answers
// {1, entries acknowledged, entries left in the log}, {0, stored version} or
// {-1, current token}.
static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{INDEX_LUA}
        if ARGV[7] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[7] then
            return {{-1, redis.call('GET', KEYS[4]) or '', 0}}
        end
        local cur = redis.call('HGET', KEYS[1], 'v') or '0'
        if cur ~= ARGV[1] then return {{0, cur, 0}} end
        local was = redis.call('HGET', KEYS[1], 's') or ''
        redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3], 's', ARGV[8])
        reindex(ARGV[9], ARGV[4], was, ARGV[8])
        local ids = tonumber(ARGV[6])
        for i = 10 + ids, #ARGV do
            redis.call('XADD', KEYS[2], '*', 'u', ARGV[4], 'e', ARGV[i])
        end
        if ids == 0 then return {{1, '0', 0}} end
        local acked = redis.call('XACK', KEYS[3], ARGV[5], unpack(ARGV, 10, 9 + ids))
        redis.call('XDEL', KEYS[3], unpack(ARGV, 10, 9 + ids))
        return {{1, tostring(acked), redis.call('XLEN', KEYS[3])}}
        ",
    ))
});

// KEYS: lease token, log, then each user's record. ARGV: fencing token ('' for none), ack
// group ('' for none), number of entry ids to acknowledge, partition key prefix, entry ids...,
// then per user: expected version, new version, data, user, member segments (one per line).
// Each user is its own compare-and-set, as in COMMIT: one conflict leaves the others written,
// and the entries are acknowledged only when every user was. Answers {-1, current token} when
// fenced off (nothing written), else {1, entries acknowledged, entries left in the log, per
// user '' when written or the stored version it conflicted with}.
static COMMIT_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{INDEX_LUA}
        if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
            return {{-1, redis.call('GET', KEYS[1]) or '', 0, {{}}}}
        end
        local ids = tonumber(ARGV[3])
        local out, all = {{}}, true
        for i = 3, #KEYS do
            local a = 4 + ids + (i - 3) * 5
            local key, user, segs = KEYS[i], ARGV[a + 4], ARGV[a + 5]
            local cur = redis.call('HMGET', key, 'v', 's')
            local v, was = cur[1] or '0', cur[2] or ''
            if v ~= ARGV[a + 1] then
                out[#out + 1] = v
                all = false
            else
                redis.call('HSET', key, 'v', ARGV[a + 2], 'd', ARGV[a + 3], 's', segs)
                reindex(ARGV[4], user, was, segs)
                out[#out + 1] = ''
            end
        end
        if not all or ARGV[2] == '' or ids == 0 then return {{1, '0', 0, out}} end
        local acked = redis.call('XACK', KEYS[2], ARGV[2], unpack(ARGV, 5, 4 + ids))
        redis.call('XDEL', KEYS[2], unpack(ARGV, 5, 4 + ids))
        return {{1, tostring(acked), redis.call('XLEN', KEYS[2]), out}}
        ",
    ))
});

/// Users written by one script call at most, and their records' bytes at most: a script holds
/// Redis for its whole run, so one call stays short, and a batch of many users or large
/// records goes in several.
const USERS_PER_CALL: usize = 64;
const BYTES_PER_CALL: usize = 1 << 20;

// KEYS: record, alias set, timer index, inbox, timers, timer bodies, claimed, outbox, the
// gateway's set of the user's idempotency keys, lease token. ARGV: user, outbox entries to
// look at, partition key prefix, prefix of the gateway's idempotency keys, fencing token
// ('' for none). Returns {1, records removed}, or {-1, current token} when fenced off.
static FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{INDEX_LUA}
        if ARGV[5] ~= '' and redis.call('GET', KEYS[10]) ~= ARGV[5] then
            return {{-1, redis.call('GET', KEYS[10]) or ''}}
        end
        local n = 0
        for seg in pairs(set(redis.call('HGET', KEYS[1], 's') or '')) do
            n = n + unindex(ARGV[3], seg, ARGV[1])
        end
        for _, m in ipairs(redis.call('SMEMBERS', KEYS[3])) do
            redis.call('ZREM', KEYS[5], m)
            redis.call('ZREM', KEYS[7], m)
            n = n + redis.call('HDEL', KEYS[6], m)
        end
        for _, k in ipairs(redis.call('SMEMBERS', KEYS[9])) do
            n = n + redis.call('DEL', ARGV[4] .. k)
        end
        n = n + redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[9])
        for _, e in ipairs(redis.call('XRANGE', KEYS[8], '-', '+', 'COUNT', ARGV[2])) do
            local f = e[2]
            for i = 1, #f, 2 do
                if f[i] == 'u' and f[i + 1] == ARGV[1] then
                    n = n + redis.call('XDEL', KEYS[8], e[1])
                end
            end
        end
        return {{1, tostring(n)}}
        ",
    ))
});

// KEYS: alias lookup. ARGV: user. Deletes the alias only while it still names this user.
static DEL_ALIAS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        ",
    )
});

/// [`StateStore`] on Redis, single node or Cluster (`C` is a connection manager or a cluster
/// connection: cheap to clone, multiplexed).
#[derive(Clone)]
pub struct RedisStateStore<C> {
    con: C,
    namespace: String,
    partitions: u32,
    encoding: Encoding,
}

impl<C> RedisStateStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    pub fn new(con: C, namespace: &str, partitions: u32) -> RedisStateStore<C> {
        RedisStateStore {
            con,
            namespace: namespace.to_string(),
            partitions: partitions.max(1),
            encoding: Encoding::default(),
        }
    }

    pub fn with_encoding(mut self, encoding: Encoding) -> RedisStateStore<C> {
        self.encoding = encoding;
        self
    }

    /// The keys of the user's partition.
    pub fn keys(&self, workspace: &str, user: &str) -> Keys {
        Keys::of_user(&self.namespace, workspace, user, self.partitions)
    }

    fn partition(&self, workspace: &str, user: &str) -> u32 {
        partition_of(workspace, user, self.partitions)
    }

    pub async fn load_state(
        &self,
        workspace: &str,
        user: &str,
    ) -> Result<Option<UserState>, StateError> {
        let key = self.keys(workspace, user).state(user);
        let mut hget = redis::cmd("HGET");
        hget.arg(&key).arg("d");
        let data: Option<Vec<u8>> = resend_if_lost(&self.con, &hget)
            .await
            .map_err(unavailable)?;
        data.map(|bytes| decode(&bytes, user)).transpose()
    }

    /// Writes `state` if the stored version is `expected` (0 for a new user), appends
    /// `effects` to the partition's outbox and, when `ack` is given, acknowledges and deletes
    /// those log entries, all in one script. With `fence`, the write also requires the
    /// partition's lease token to be that value, so an instance that lost its lease cannot
    /// write. Answers the entries left in the log when it acknowledged some.
    pub async fn commit(
        &self,
        state: &UserState,
        expected: u64,
        effects: &[Effect],
        ack: Option<&LogAck>,
        fence: Option<u64>,
    ) -> Result<Option<u64>, StateError> {
        let keys = self.keys(&state.workspace, &state.user);
        let data = encode(state, self.encoding)?;
        let mut invocation = COMMIT.prepare_invoke();
        invocation
            .key(keys.state(&state.user))
            .key(keys.outbox())
            .key(keys.log())
            .key(lease_token_key(&keys))
            .arg(expected.to_string())
            .arg(state.version.to_string())
            .arg(data)
            .arg(&state.user)
            .arg(ack.map_or("", |a| a.group.as_str()))
            .arg(ack.map_or(0, |a| a.entry_ids.len()))
            .arg(fence.map(|f| f.to_string()).unwrap_or_default())
            .arg(member_segments(state).join("\n"))
            .arg(keys.prefix());
        for id in ack.map_or(&[][..], |a| &a.entry_ids) {
            invocation.arg(id);
        }
        for effect in effects {
            invocation.arg(serde_json::to_vec(effect).map_err(|e| corrupt(&state.user, e))?);
        }

        // Sent once, even when its connection was lost: a compare-and-set that went through
        // with only its answer lost would, sent again, answer a conflict with itself.
        let mut con = self.con.clone();
        let (status, detail, left): (i64, String, u64) = invocation
            .invoke_async(&mut con)
            .await
            .map_err(unavailable)?;
        match status {
            1 => {
                debug!(
                    beckon.workspace = %state.workspace,
                    beckon.partition = self.partition(&state.workspace, &state.user),
                    beckon.version = state.version,
                    effects = effects.len(),
                    acked = %detail,
                    "user state committed"
                );
                Ok(ack.map(|_| left))
            }
            0 => {
                debug!(
                    beckon.workspace = %state.workspace,
                    expected,
                    stored = %detail,
                    "user state write lost a compare-and-set"
                );
                Err(StateError::Conflict {
                    user: state.user.clone(),
                    expected,
                })
            }
            _ => Err(StateError::Fenced {
                held: fence.unwrap_or_default(),
                current: detail,
            }),
        }
    }

    /// Writes users of one partition of one workspace in one script call (see [`COMMIT_MANY`]):
    /// each its own compare-and-set, and `ack` done only when every one is written. Answers
    /// each user's result in order, and the log's backlog when the entries were acknowledged.
    /// Fails as a whole when Redis does or when fenced off: then nothing was written.
    async fn commit_many(
        &self,
        keys: &Keys,
        users: &[(Write<'_>, Vec<u8>)],
        fence: Option<u64>,
        ack: Option<&LogAck>,
    ) -> Result<(Vec<Result<(), StateError>>, Option<u64>), StateError> {
        let mut invocation = COMMIT_MANY.prepare_invoke();
        invocation
            .key(lease_token_key(keys))
            .key(keys.log())
            .arg(fence.map(|f| f.to_string()).unwrap_or_default())
            .arg(ack.map_or("", |a| a.group.as_str()))
            .arg(ack.map_or(0, |a| a.entry_ids.len()))
            .arg(keys.prefix());
        for id in ack.map_or(&[][..], |a| &a.entry_ids) {
            invocation.arg(id);
        }
        for (w, data) in users {
            invocation
                .key(keys.state(&w.state.user))
                .arg(w.expected.to_string())
                .arg(w.state.version.to_string())
                .arg(data.as_slice())
                .arg(&w.state.user)
                .arg(member_segments(w.state).join("\n"));
        }

        let mut con = self.con.clone();
        let (status, detail, left, per_user): (i64, String, u64, Vec<String>) = invocation
            .invoke_async(&mut con)
            .await
            .map_err(unavailable)?;
        if status != 1 {
            return Err(StateError::Fenced {
                held: fence.unwrap_or_default(),
                current: detail,
            });
        }
        if per_user.len() != users.len() {
            return Err(StateError::Unavailable(format!(
                "the state write answered for {} of {} users",
                per_user.len(),
                users.len()
            )));
        }

        let results: Vec<Result<(), StateError>> = users
            .iter()
            .zip(&per_user)
            .map(|((w, _), stored)| {
                if stored.is_empty() {
                    return Ok(());
                }
                debug!(
                    beckon.workspace = %w.state.workspace,
                    expected = w.expected,
                    stored = %stored,
                    "user state write lost a compare-and-set"
                );
                Err(StateError::Conflict {
                    user: w.state.user.clone(),
                    expected: w.expected,
                })
            })
            .collect();
        let all = results.iter().all(Result::is_ok);
        debug!(
            beckon.workspace = users.first().map_or("", |(w, _)| w.state.workspace.as_str()),
            users = users.len(),
            acked = %detail,
            "user states committed"
        );
        Ok((results, ack.filter(|_| all).map(|_| left)))
    }

    /// Records that `alias` (e.g. an anonymous id) names `user`. The lookup key lives in the
    /// alias's partition; the user's partition keeps the list, so forgetting finds it.
    pub async fn add_alias(
        &self,
        workspace: &str,
        alias: &str,
        user: &str,
    ) -> Result<(), StateError> {
        let lookup = self.keys(workspace, alias).alias(alias);
        let list = self.keys(workspace, user).user_aliases(user);
        let mut con = self.con.clone();
        // Two slots, so two commands: a crash between them leaves a lookup without a list
        // entry, which forgetting the user would miss; hence the list is written first.
        redis::cmd("SADD")
            .arg(&list)
            .arg(alias)
            .query_async::<()>(&mut con)
            .await
            .map_err(unavailable)?;
        redis::cmd("SET")
            .arg(&lookup)
            .arg(user)
            .query_async::<()>(&mut con)
            .await
            .map_err(unavailable)
    }

    /// The user an alias names, if any.
    pub async fn resolve_alias(
        &self,
        workspace: &str,
        alias: &str,
    ) -> Result<Option<String>, StateError> {
        let lookup = self.keys(workspace, alias).alias(alias);
        let mut get = redis::cmd("GET");
        get.arg(&lookup);
        resend_if_lost(&self.con, &get).await.map_err(unavailable)
    }

    /// Erases everything kept for the user: record, member index entries, aliases, timers,
    /// inbox, the gateway's idempotency keys of the user's sends and the user's pending outbox
    /// entries, the user's sends waiting in the gateway's retry queue, and the tombstones of
    /// the ids merged into the user. Returns how many records were removed.
    pub async fn forget_user(&self, workspace: &str, user: &str) -> Result<u64, StateError> {
        self.forget_user_fenced(workspace, user, None).await
    }

    /// [`RedisStateStore::forget_user`] for the owner of the user's partition: with `fence`,
    /// the erase requires the partition's lease token to be that value, so an owner whose
    /// lease was taken over cannot erase what the new owner wrote since; it gets
    /// [`StateError::Fenced`] instead.
    ///
    /// The token is checked in the same script that erases what the user's partition keeps
    /// (record, index entries, timers, inbox, outbox entries). Alias lookups live in their
    /// aliases' partitions, out of that script's reach: they are erased after a check of the
    /// token just before. The merged ids' tombstones and the retry queue's sends are erased
    /// only once the fenced script went through.
    pub async fn forget_user_fenced(
        &self,
        workspace: &str,
        user: &str,
        fence: Option<u64>,
    ) -> Result<u64, StateError> {
        if let Some(token) = fence {
            self.check_fence(workspace, user, token).await?;
        }
        let merged = match self.load_state(workspace, user).await {
            Ok(state) => state.map(|s| s.merged).unwrap_or_default(),
            // A record that cannot be read is still erased; it names no merged ids then.
            Err(StateError::Corrupt { .. }) => Default::default(),
            Err(e) => return Err(e),
        };
        let mut removed = self.forget_one(workspace, user, fence).await?;
        for id in merged.keys() {
            let points_here = self
                .load_state(workspace, id)
                .await?
                .is_some_and(|s| crate::store::merged_away_into(&s, user, &merged));
            if points_here {
                // The tombstone's partition has a lease of its own; the user's token says
                // nothing about it, and the user's erase above already passed the check.
                removed += self.forget_one(workspace, id, None).await?;
            }
        }
        Ok(removed)
    }

    /// Fails with [`StateError::Fenced`] unless the lease of the user's partition carries
    /// `fence`.
    async fn check_fence(&self, workspace: &str, user: &str, fence: u64) -> Result<(), StateError> {
        let key = lease_token_key(&self.keys(workspace, user));
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let current: Option<String> = resend_if_lost(&self.con, &get).await.map_err(unavailable)?;
        match current {
            Some(c) if c == fence.to_string() => Ok(()),
            current => Err(StateError::Fenced {
                held: fence,
                current: current.unwrap_or_default(),
            }),
        }
    }

    async fn forget_one(
        &self,
        workspace: &str,
        user: &str,
        fence: Option<u64>,
    ) -> Result<u64, StateError> {
        let keys = self.keys(workspace, user);

        // Every command of a forget erases, so one sent again after its connection was lost
        // finds the same or less to erase; only the count of what was removed can then be
        // short of what the first attempt removed.
        let mut smembers = redis::cmd("SMEMBERS");
        smembers.arg(keys.user_aliases(user));
        let aliases: Vec<String> = resend_if_lost(&self.con, &smembers)
            .await
            .map_err(unavailable)?;
        let mut removed = 0u64;
        for alias in &aliases {
            let lookup = self.keys(workspace, alias).alias(alias);
            let mut del = DEL_ALIAS.prepare_invoke();
            del.key(lookup).arg(user);
            let n: u64 = resend_if_lost(&self.con, &del).await.map_err(unavailable)?;
            removed += n;
        }

        let mut forget = FORGET.prepare_invoke();
        forget
            .key(keys.state(user))
            .key(keys.user_aliases(user))
            .key(keys.user_timers(user))
            .key(keys.user_inbox(user))
            .key(keys.timers())
            .key(keys.timer_bodies())
            .key(keys.timers_claimed())
            .key(keys.outbox())
            .key(keys.sent_by(user))
            .key(lease_token_key(&keys))
            .arg(user)
            .arg(FORGET_OUTBOX_SCAN)
            .arg(keys.prefix())
            .arg(keys.sent(""))
            .arg(fence.map(|f| f.to_string()).unwrap_or_default());
        let (status, detail): (i64, String) = resend_if_lost(&self.con, &forget)
            .await
            .map_err(unavailable)?;
        if status != 1 {
            return Err(StateError::Fenced {
                held: fence.unwrap_or_default(),
                current: detail,
            });
        }
        removed += detail.parse::<u64>().map_err(|e| {
            StateError::Unavailable(format!("forget script answered {detail:?}: {e}"))
        })?;

        // Sends of the user's that a provider could not take wait in the gateway's retry
        // queue, in a slot of their own.
        let mut con = self.con.clone();
        removed +=
            beckon_gateway::redis_retry::forget_user(&mut con, &self.namespace, workspace, user)
                .await
                .map_err(unavailable)?;
        info!(
            beckon.workspace = %workspace,
            beckon.partition = self.partition(workspace, user),
            removed,
            "user forgotten"
        );
        Ok(removed)
    }

    /// What is kept about the user, as JSON: the state record, aliases and pending timers.
    /// `None` when nothing is kept.
    pub async fn export(
        &self,
        workspace: &str,
        user: &str,
    ) -> Result<Option<serde_json::Value>, StateError> {
        let keys = self.keys(workspace, user);
        let state = self.load_state(workspace, user).await?;
        let mut read = redis::pipe();
        read.cmd("SMEMBERS")
            .arg(keys.user_aliases(user))
            .cmd("SMEMBERS")
            .arg(keys.user_timers(user));
        let (aliases, members): (Vec<String>, Vec<String>) = resend_if_lost(&self.con, &read)
            .await
            .map_err(unavailable)?;
        let mut timers: Vec<Timer> = Vec::new();
        if !members.is_empty() {
            let mut hmget = redis::cmd("HMGET");
            hmget.arg(keys.timer_bodies()).arg(&members);
            let bodies: Vec<Option<Vec<u8>>> = resend_if_lost(&self.con, &hmget)
                .await
                .map_err(unavailable)?;
            for body in bodies.into_iter().flatten() {
                timers.push(serde_json::from_slice(&body).map_err(|e| corrupt(user, e))?);
            }
        }
        if state.is_none() && aliases.is_empty() && timers.is_empty() {
            return Ok(None);
        }
        let export = Export {
            workspace,
            user,
            state,
            aliases,
            timers,
        };
        serde_json::to_value(&export)
            .map(Some)
            .map_err(|e| corrupt(user, e))
    }

    /// Up to `limit` members of a segment from `from` on, walking partitions in order.
    pub async fn segment_members(
        &self,
        workspace: &str,
        segment: &str,
        from: MemberCursor,
        limit: usize,
    ) -> Result<MemberPage, StateError> {
        let limit = limit.clamp(1, MAX_MEMBERS_PAGE);
        let mut users = Vec::with_capacity(limit);
        let mut cursor = from;
        while cursor.partition < self.partitions {
            let key = members_key(&self.namespace, workspace, cursor.partition, segment);
            let start = match &cursor.after {
                Some(after) => format!("({after}"),
                None => "-".to_string(),
            };
            // One more than wanted tells whether this partition has more after the page.
            let want = limit - users.len();
            let mut range = redis::cmd("ZRANGEBYLEX");
            range
                .arg(&key)
                .arg(start)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(want + 1);
            let found: Vec<String> = resend_if_lost(&self.con, &range)
                .await
                .map_err(unavailable)?;
            let more_here = found.len() > want;
            users.extend(found.into_iter().take(want));
            if users.len() == limit {
                let next = if more_here {
                    Some(MemberCursor {
                        partition: cursor.partition,
                        after: users.last().cloned(),
                    })
                } else {
                    (cursor.partition + 1 < self.partitions).then(|| MemberCursor {
                        partition: cursor.partition + 1,
                        after: None,
                    })
                };
                return Ok(MemberPage { users, next });
            }
            cursor = MemberCursor {
                partition: cursor.partition + 1,
                after: None,
            };
        }
        Ok(MemberPage { users, next: None })
    }

    /// Members per segment, summed over the partitions' counters.
    pub async fn sizes(
        &self,
        workspace: &str,
    ) -> Result<std::collections::BTreeMap<String, u64>, StateError> {
        // One command per partition, all at once: on a Cluster the counters sit in different
        // slots, which one pipeline may not mix.
        let reads = (0..self.partitions).map(|p| {
            let key = format!(
                "{}:segsizes",
                Keys::new(&self.namespace, workspace, p).prefix()
            );
            let mut hgetall = redis::cmd("HGETALL");
            hgetall.arg(key);
            async move { resend_if_lost::<_, Vec<(String, i64)>>(&self.con, &hgetall).await }
        });
        let counters = futures::future::try_join_all(reads)
            .await
            .map_err(unavailable)?;
        let mut sizes = std::collections::BTreeMap::new();
        for (segment, n) in counters.into_iter().flatten() {
            *sizes.entry(segment).or_insert(0u64) += n.max(0) as u64;
        }
        Ok(sizes)
    }

    /// Up to `count` outbox entries of a partition after `after` (`"-"` for the start).
    pub async fn read_outbox(
        &self,
        workspace: &str,
        partition: u32,
        after: &str,
        count: usize,
    ) -> Result<Vec<OutboxEntry>, StateError> {
        let keys = Keys::new(&self.namespace, workspace, partition);
        let start = if after == "-" {
            "-".to_string()
        } else {
            format!("({after}")
        };
        let mut con = self.con.clone();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(keys.outbox())
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut con)
            .await
            .map_err(unavailable)?;
        reply
            .ids
            .into_iter()
            .map(|entry| {
                let user: String = entry.get("u").unwrap_or_default();
                let body: Vec<u8> = entry.get("e").unwrap_or_default();
                let effect = serde_json::from_slice(&body).map_err(|e| corrupt(&user, e))?;
                Ok(OutboxEntry {
                    id: entry.id,
                    user,
                    effect,
                })
            })
            .collect()
    }

    /// Removes carried-out entries from a partition's outbox.
    pub async fn delete_outbox(
        &self,
        workspace: &str,
        partition: u32,
        ids: &[String],
    ) -> Result<u64, StateError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let keys = Keys::new(&self.namespace, workspace, partition);
        let mut con = self.con.clone();
        redis::cmd("XDEL")
            .arg(keys.outbox())
            .arg(ids)
            .query_async(&mut con)
            .await
            .map_err(unavailable)
    }
}

/// The users of one [`COMMIT_MANY`] call, with their places in the batch.
struct Call<'a> {
    keys: Keys,
    users: Vec<(Write<'a>, Vec<u8>)>,
    places: Vec<usize>,
}

impl Call<'_> {
    /// Puts the call's answer at its users' places: each user's own, or the call's failure.
    fn record(
        &self,
        result: Result<Vec<Result<(), StateError>>, StateError>,
        results: &mut [Option<Result<(), StateError>>],
    ) {
        match result {
            Ok(each) => {
                for (&place, r) in self.places.iter().zip(each) {
                    results[place] = Some(r);
                }
            }
            Err(e) => {
                for &place in &self.places {
                    results[place] = Some(Err(e.clone()));
                }
            }
        }
    }
}

impl<C> RedisStateStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Splits a batch into script calls: by workspace and partition (one call's keys must
    /// share a slot), then by [`USERS_PER_CALL`] and [`BYTES_PER_CALL`]. The last user's call
    /// comes last. A record that cannot be encoded gets its error in `results` and no call.
    fn calls<'a>(
        &self,
        writes: &[Write<'a>],
        results: &mut [Option<Result<(), StateError>>],
    ) -> Vec<Call<'a>> {
        let mut calls: Vec<Call<'a>> = Vec::new();
        // The open call of each key prefix, by index into `calls`.
        let mut open: HashMap<String, usize> = HashMap::new();
        for (place, w) in writes.iter().enumerate() {
            let data = match encode(w.state, self.encoding) {
                Ok(data) => data,
                Err(e) => {
                    results[place] = Some(Err(e));
                    continue;
                }
            };
            let keys = self.keys(&w.state.workspace, &w.state.user);
            let bytes = |c: &Call<'_>| c.users.iter().map(|(_, d)| d.len()).sum::<usize>();
            let fits = |c: &Call<'_>| {
                c.users.len() < USERS_PER_CALL && bytes(c) + data.len() <= BYTES_PER_CALL
            };
            let at = match open.get(keys.prefix()) {
                Some(&i) if fits(&calls[i]) => i,
                _ => {
                    open.insert(keys.prefix().to_string(), calls.len());
                    calls.push(Call {
                        keys,
                        users: Vec::new(),
                        places: Vec::new(),
                    });
                    calls.len() - 1
                }
            };
            calls[at].users.push((*w, data));
            calls[at].places.push(place);
        }

        // The call holding the last user goes last, to carry the acknowledgement.
        let last_place = writes.len().checked_sub(1);
        if let Some(i) = calls
            .iter()
            .position(|c| c.places.last().copied() == last_place)
        {
            let carrier = calls.remove(i);
            calls.push(carrier);
        }
        calls
    }
}

#[derive(Serialize)]
struct Export<'a> {
    workspace: &'a str,
    user: &'a str,
    state: Option<UserState>,
    aliases: Vec<String>,
    timers: Vec<Timer>,
}

impl<C> StateStore for RedisStateStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn load<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserState>, StateError>> {
        Box::pin(self.load_state(workspace, user))
    }

    fn save<'a>(
        &'a self,
        state: &'a UserState,
        expected: u64,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            self.commit(state, expected, &[], None, None)
                .await
                .map(drop)
        })
    }

    fn save_fenced<'a>(
        &'a self,
        state: &'a UserState,
        expected: u64,
        fence: u64,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            self.commit(state, expected, &[], None, Some(fence))
                .await
                .map(drop)
        })
    }

    fn save_acking<'a>(
        &'a self,
        state: &'a UserState,
        expected: u64,
        fence: Option<u64>,
        ack: &'a LogAck,
    ) -> BoxFuture<'a, Result<Option<u64>, StateError>> {
        Box::pin(self.commit(state, expected, &[], Some(ack), fence))
    }

    /// Users of one workspace's partition go together, up to [`USERS_PER_CALL`] users and
    /// [`BYTES_PER_CALL`] of records per script call; the call with the last user carries the
    /// acknowledgement, after every other call has written all of its users.
    fn save_all<'a>(
        &'a self,
        writes: &'a [Write<'a>],
        fence: Option<u64>,
        ack: Option<&'a LogAck>,
    ) -> BoxFuture<'a, Written> {
        Box::pin(async move {
            let mut results: Vec<Option<Result<(), StateError>>> = vec![None; writes.len()];
            let calls = self.calls(writes, &mut results);

            let Some((carrier, others)) = calls.split_last() else {
                return Written {
                    results: results.into_iter().flatten().collect(),
                    backlog: None,
                };
            };
            let (carrier, others) = if ack.is_some() {
                (Some(carrier), others)
            } else {
                (None, &calls[..])
            };
            let done = futures::future::join_all(
                others
                    .iter()
                    .map(|call| self.commit_many(&call.keys, &call.users, fence, None)),
            )
            .await;
            for (call, result) in others.iter().zip(done) {
                call.record(result.map(|(each, _)| each), &mut results);
            }

            let mut backlog = None;
            if let Some(call) = carrier {
                let result = if results.iter().flatten().all(Result::is_ok) {
                    self.commit_many(&call.keys, &call.users, fence, ack)
                        .await
                        .map(|(each, left)| {
                            backlog = left;
                            each
                        })
                } else {
                    Err(held_back())
                };
                call.record(result, &mut results);
            }

            // Every user was either in a call or refused before one.
            let results = results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(StateError::Unavailable("not written".into()))))
                .collect();
            Written { results, backlog }
        })
    }

    fn forget<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(self.forget_user(workspace, user))
    }

    fn forget_fenced<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        fence: u64,
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(self.forget_user_fenced(workspace, user, Some(fence)))
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn members<'a>(
        &'a self,
        workspace: &'a str,
        segment: &'a str,
        from: MemberCursor,
        limit: usize,
    ) -> BoxFuture<'a, Result<MemberPage, StateError>> {
        Box::pin(self.segment_members(workspace, segment, from, limit))
    }

    fn segment_sizes<'a>(
        &'a self,
        workspace: &'a str,
    ) -> BoxFuture<'a, Result<std::collections::BTreeMap<String, u64>, StateError>> {
        Box::pin(self.sizes(workspace))
    }
}

/// The sorted set of a segment's members in one partition (all scores 0, so members sort by
/// their bytes): `<ns>:{<workspace>:<p>}:seg:<segment>`, beside the per-partition counters
/// in `<ns>:{<workspace>:<p>}:segsizes`. Both are written only by the commit and forget
/// scripts, together with the record.
pub fn members_key(namespace: &str, workspace: &str, partition: u32, segment: &str) -> String {
    let keys = Keys::new(namespace, workspace, partition);
    format!(
        "{}:seg:{}",
        keys.prefix(),
        beckon_scheduler::keys::escape(segment)
    )
}

/// The fencing token of the partition's lease, drawn anew by each acquisition (see
/// [`crate::lease`]); in the partition's slot, so the scripts that write it can check it.
fn lease_token_key(keys: &Keys) -> String {
    format!("{}:lease:token", keys.prefix())
}

/// Encodes a record.
pub fn encode(state: &UserState, encoding: Encoding) -> Result<Vec<u8>, StateError> {
    match encoding {
        Encoding::Json => serde_json::to_vec(state).map_err(|e| corrupt(&state.user, e)),
        Encoding::MessagePack => {
            rmp_serde::to_vec_named(state).map_err(|e| corrupt(&state.user, e))
        }
    }
}

/// Decodes a record in either encoding.
pub fn decode(bytes: &[u8], user: &str) -> Result<UserState, StateError> {
    if bytes.first() == Some(&b'{') {
        serde_json::from_slice(bytes).map_err(|e| corrupt(user, e))
    } else {
        rmp_serde::from_slice(bytes).map_err(|e| corrupt(user, e))
    }
}

fn corrupt(user: &str, e: impl std::fmt::Display) -> StateError {
    StateError::Corrupt {
        user: user.to_string(),
        reason: e.to_string(),
    }
}

fn unavailable(e: redis::RedisError) -> StateError {
    StateError::Unavailable(e.to_string())
}
