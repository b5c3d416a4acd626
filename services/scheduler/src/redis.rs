//! Durable timers in Redis, one sorted set per partition.
//!
//! Per partition (see [`crate::keys::Keys`]): `timers` (score = due ms, member = user and id),
//! `timers:body` (member -> timer JSON), `timers:claimed` (score = claim deadline ms), and per
//! user a set of the user's members so that erasing a user needs no scan. Every change is
//! one Lua script over keys of one slot, so it works on Redis Cluster and is atomic.
//!
//! Due times are compared with the `now` the caller passes (from its clock), never with the
//! Redis server's clock, so replay and tests drive firing.

use std::collections::HashMap;
use std::sync::LazyLock;

use beckon_core::partition::partition_of;
use beckon_core::{Duration, Timer, Ts};
use futures::future::{BoxFuture, join_all};
use redis::Script;
use redis::aio::ConnectionLike;
use tracing::debug;

use crate::async_store::{AsyncTimerStore, Claimed};
use crate::error::SchedulerError;
use crate::keys::{Keys, timer_member};

/// How long a claim stays with its scheduler before the timer is handed out again.
pub const DEFAULT_CLAIM_LEASE: Duration = Duration(30_000);

// KEYS: timers, bodies, claimed, user index. ARGV: member, due, body.
// A new schedule also clears a claim of the same timer, so a late ack of the old firing
// cannot delete the replacement.
static SCHEDULE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
        redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
        redis.call('ZREM', KEYS[3], ARGV[1])
        redis.call('SADD', KEYS[4], ARGV[1])
        return 1
        ",
    )
});

// KEYS: timers, bodies, claimed, then the user index of each timer. ARGV: member, due, body
// of each timer. The same as SCHEDULE once per timer, in order, with one call of each command
// for the partition's keys.
static SCHEDULE_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local n = #ARGV / 3
        local scored, bodies, members = {}, {}, {}
        for i = 1, n do
            local m = ARGV[3 * i - 2]
            scored[2 * i - 1] = ARGV[3 * i - 1]
            scored[2 * i] = m
            bodies[2 * i - 1] = m
            bodies[2 * i] = ARGV[3 * i]
            members[i] = m
        end
        redis.call('ZADD', KEYS[1], unpack(scored))
        redis.call('HSET', KEYS[2], unpack(bodies))
        redis.call('ZREM', KEYS[3], unpack(members))
        for i = 1, n do
            redis.call('SADD', KEYS[3 + i], members[i])
        end
        return n
        ",
    )
});

/// Timers per SCHEDULE_MANY call: Lua's `unpack` takes a few thousand values at most.
const SCHEDULE_CHUNK: usize = 256;

// KEYS: timers, bodies, claimed, user index. ARGV: member.
static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('ZREM', KEYS[1], ARGV[1])
        redis.call('ZREM', KEYS[3], ARGV[1])
        redis.call('SREM', KEYS[4], ARGV[1])
        return redis.call('HDEL', KEYS[2], ARGV[1])
        ",
    )
});

// KEYS: timers, bodies, claimed, then the user index of each timer. ARGV: member of each
// timer. The same as CANCEL once per timer, with one call of each command for the partition's
// keys; answers how many of the timers existed.
static CANCEL_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('ZREM', KEYS[1], unpack(ARGV))
        redis.call('ZREM', KEYS[3], unpack(ARGV))
        for i = 1, #ARGV do
            redis.call('SREM', KEYS[3 + i], ARGV[i])
        end
        return redis.call('HDEL', KEYS[2], unpack(ARGV))
        ",
    )
});

// KEYS: timers, bodies, claimed. ARGV: now, claim deadline, limit.
// Expired claims (their scheduler died or stalled) go first: they are the oldest work.
// Returns the bodies of the claimed timers, then the first score left in the pending set and
// in the claimed set ('' when empty), so the caller knows when the partition has work again.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local limit = tonumber(ARGV[3])
        local members = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, limit)
        if #members < limit then
            local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1],
                'LIMIT', 0, limit - #members)
            for _, m in ipairs(due) do table.insert(members, m) end
        end
        local out = {}
        if #members > 0 then
            redis.call('ZREM', KEYS[1], unpack(members))
            local bodies = redis.call('HMGET', KEYS[2], unpack(members))
            local claimed, gone = {}, {}
            for i, m in ipairs(members) do
                if bodies[i] then
                    claimed[#claimed + 1] = ARGV[2]
                    claimed[#claimed + 1] = m
                    out[#out + 1] = bodies[i]
                else
                    gone[#gone + 1] = m
                end
            end
            if #claimed > 0 then redis.call('ZADD', KEYS[3], unpack(claimed)) end
            if #gone > 0 then redis.call('ZREM', KEYS[3], unpack(gone)) end
        end
        local pending = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2] or ''
        local claimed = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')[2] or ''
        return {out, pending, claimed}
        ",
    )
});

/// Most timers one CLAIM hands out: Lua's `unpack` takes a few thousand values at most.
const MAX_CLAIM: usize = 2_048;

// KEYS: timers, bodies, claimed, user index. ARGV: member, body as claimed.
// Only the firing that was claimed is removed: a rescheduled timer has left the claimed set
// or has another body.
static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
        if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then return 0 end
        redis.call('HDEL', KEYS[2], ARGV[1])
        redis.call('SREM', KEYS[4], ARGV[1])
        return 1
        ",
    )
});

// KEYS: timers, bodies, claimed, then the user index of each timer. ARGV: member and body as
// claimed, of each timer. ACK once per timer; returns 1 or 0 per timer.
static ACK_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local n = #ARGV / 2
        local members = {}
        for i = 1, n do members[i] = ARGV[2 * i - 1] end
        local bodies = redis.call('HMGET', KEYS[2], unpack(members))
        local claimed = redis.call('ZMSCORE', KEYS[3], unpack(members))
        local out, done, acked = {}, {}, {}
        for i = 1, n do
            local m = members[i]
            out[i] = 0
            if bodies[i] == ARGV[2 * i] and claimed[i] and not done[m] then
                done[m] = true
                acked[#acked + 1] = m
                redis.call('SREM', KEYS[3 + i], m)
                out[i] = 1
            end
        end
        if #acked > 0 then
            redis.call('ZREM', KEYS[3], unpack(acked))
            redis.call('HDEL', KEYS[2], unpack(acked))
        end
        return out
        ",
    )
});

/// Timers per ACK_MANY call, for the same reason as `SCHEDULE_CHUNK`.
const ACK_CHUNK: usize = 1_024;

/// Timers in Redis (single node or Cluster: `C` is a connection manager or a cluster
/// connection; both are cheap to clone and multiplex requests).
#[derive(Clone)]
pub struct RedisTimers<C> {
    con: C,
    namespace: String,
    partitions: u32,
    claim_lease: Duration,
}

impl<C> RedisTimers<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    pub fn new(con: C, namespace: &str, partitions: u32) -> RedisTimers<C> {
        RedisTimers {
            con,
            namespace: namespace.to_string(),
            partitions: partitions.max(1),
            claim_lease: DEFAULT_CLAIM_LEASE,
        }
    }

    /// Sets how long a claim lasts before an unacknowledged timer is handed out again.
    pub fn with_claim_lease(mut self, lease: Duration) -> RedisTimers<C> {
        self.claim_lease = lease;
        self
    }

    fn keys_of(&self, workspace: &str, user: &str) -> Keys {
        Keys::new(
            &self.namespace,
            workspace,
            partition_of(workspace, user, self.partitions),
        )
    }

    async fn schedule_timer(&self, timer: &Timer) -> Result<(), SchedulerError> {
        let keys = self.keys_of(&timer.workspace, &timer.user);
        let member = timer_member(&timer.user, &timer.id);
        let body = encode(timer, &member)?;
        let mut con = self.con.clone();
        let _: i64 = SCHEDULE
            .key(keys.timers())
            .key(keys.timer_bodies())
            .key(keys.timers_claimed())
            .key(keys.user_timers(&timer.user))
            .arg(&member)
            .arg(timer.due.0)
            .arg(body)
            .invoke_async(&mut con)
            .await?;
        debug!(
            beckon.workspace = %timer.workspace,
            beckon.timer = %member,
            beckon.due = timer.due.0,
            "timer scheduled"
        );
        Ok(())
    }

    /// One SCHEDULE_MANY call per chunk of a partition's timers, all sent at once: the
    /// connection pipelines them.
    async fn schedule_timers(&self, timers: &[Timer]) -> Result<(), SchedulerError> {
        let calls = chunks_by_partition(timers, |t| self.keys_of(&t.workspace, &t.user))
            .into_iter()
            .map(|(keys, chunk)| async move {
                let mut call = SCHEDULE_MANY.prepare_invoke();
                call.key(keys.timers())
                    .key(keys.timer_bodies())
                    .key(keys.timers_claimed());
                for t in &chunk {
                    call.key(keys.user_timers(&t.user));
                }
                for t in &chunk {
                    let member = timer_member(&t.user, &t.id);
                    let body = encode(t, &member)?;
                    call.arg(member).arg(t.due.0).arg(body);
                }
                let mut con = self.con.clone();
                let _: i64 = call.invoke_async(&mut con).await?;
                Ok::<_, SchedulerError>(())
            });
        for result in join_all(calls).await {
            result?;
        }
        debug!(scheduled = timers.len(), "timers scheduled");
        Ok(())
    }

    async fn cancel_timer(
        &self,
        workspace: &str,
        user: &str,
        id: &str,
    ) -> Result<bool, SchedulerError> {
        let keys = self.keys_of(workspace, user);
        let member = timer_member(user, id);
        let mut con = self.con.clone();
        let removed: i64 = CANCEL
            .key(keys.timers())
            .key(keys.timer_bodies())
            .key(keys.timers_claimed())
            .key(keys.user_timers(user))
            .arg(&member)
            .invoke_async(&mut con)
            .await?;
        debug!(beckon.workspace = %workspace, beckon.timer = %member, removed, "timer cancelled");
        Ok(removed > 0)
    }

    async fn cancel_timers(
        &self,
        workspace: &str,
        timers: &[(String, String)],
    ) -> Result<u32, SchedulerError> {
        let calls = chunks_by_partition(timers, |(user, _)| self.keys_of(workspace, user))
            .into_iter()
            .map(|(keys, chunk)| async move {
                let mut call = CANCEL_MANY.prepare_invoke();
                call.key(keys.timers())
                    .key(keys.timer_bodies())
                    .key(keys.timers_claimed());
                for (user, _) in &chunk {
                    call.key(keys.user_timers(user));
                }
                for (user, id) in &chunk {
                    call.arg(timer_member(user, id));
                }
                let mut con = self.con.clone();
                let removed: u32 = call.invoke_async(&mut con).await?;
                Ok::<_, SchedulerError>(removed)
            });
        let mut cancelled = 0;
        for result in join_all(calls).await {
            cancelled += result?;
        }
        debug!(beckon.workspace = %workspace, asked = timers.len(), cancelled, "timers cancelled");
        Ok(cancelled)
    }

    async fn claim(
        &self,
        workspace: &str,
        partition: u32,
        now: Ts,
        limit: usize,
    ) -> Result<Claimed, SchedulerError> {
        let keys = Keys::new(&self.namespace, workspace, partition);
        let deadline = now.saturating_add(self.claim_lease);
        let mut con = self.con.clone();
        let (bodies, pending, claimed): (Vec<Vec<u8>>, String, String) = CLAIM
            .key(keys.timers())
            .key(keys.timer_bodies())
            .key(keys.timers_claimed())
            .arg(now.0)
            .arg(deadline.0)
            .arg(limit.min(MAX_CLAIM))
            .invoke_async(&mut con)
            .await?;
        let timers = bodies
            .iter()
            .map(|b| {
                serde_json::from_slice(b).map_err(|e| SchedulerError::Corrupt {
                    member: String::from_utf8_lossy(b).chars().take(80).collect(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<Timer>, _>>()?;
        if !timers.is_empty() {
            debug!(
                beckon.workspace = %workspace,
                beckon.partition = partition,
                claimed = timers.len(),
                "timers claimed"
            );
        }
        // Scores of millisecond times print as integers.
        let next = [pending, claimed]
            .iter()
            .filter_map(|s| s.parse::<f64>().ok())
            .map(|score| Ts(score as i64))
            .min();
        Ok(Claimed { timers, next })
    }

    async fn ack_timer(&self, timer: &Timer) -> Result<bool, SchedulerError> {
        let keys = self.keys_of(&timer.workspace, &timer.user);
        let member = timer_member(&timer.user, &timer.id);
        let body = encode(timer, &member)?;
        let mut con = self.con.clone();
        let removed: i64 = ACK
            .key(keys.timers())
            .key(keys.timer_bodies())
            .key(keys.timers_claimed())
            .key(keys.user_timers(&timer.user))
            .arg(&member)
            .arg(body)
            .invoke_async(&mut con)
            .await?;
        Ok(removed > 0)
    }

    /// One ACK_MANY call per partition among the timers.
    async fn ack_timers(&self, timers: &[Timer]) -> Result<Vec<bool>, SchedulerError> {
        let mut acked = vec![false; timers.len()];
        let indexed: Vec<(usize, &Timer)> = timers.iter().enumerate().collect();
        let groups = by_partition(&indexed, |(_, t)| self.keys_of(&t.workspace, &t.user))
            .into_iter()
            .flat_map(|(keys, group)| {
                group
                    .chunks(ACK_CHUNK)
                    .map(|chunk| (keys.clone(), chunk.to_vec()))
                    .collect::<Vec<_>>()
            });
        let calls = groups.map(|(keys, group)| async move {
            let mut call = ACK_MANY.prepare_invoke();
            call.key(keys.timers())
                .key(keys.timer_bodies())
                .key(keys.timers_claimed());
            for (_, t) in &group {
                call.key(keys.user_timers(&t.user));
            }
            for (_, t) in &group {
                let member = timer_member(&t.user, &t.id);
                let body = encode(t, &member)?;
                call.arg(member).arg(body);
            }
            let mut con = self.con.clone();
            let removed: Vec<i64> = call.invoke_async(&mut con).await?;
            let at: Vec<usize> = group.iter().map(|(i, _)| *i).collect();
            Ok::<_, SchedulerError>((at, removed))
        });
        for result in join_all(calls).await {
            let (at, removed) = result?;
            for (i, r) in at.into_iter().zip(removed) {
                acked[i] = r > 0;
            }
        }
        Ok(acked)
    }

    async fn earliest(
        &self,
        workspace: &str,
        partition: u32,
    ) -> Result<Option<Ts>, SchedulerError> {
        let keys = Keys::new(&self.namespace, workspace, partition);
        let mut con = self.con.clone();
        let first: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.timers())
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut con)
            .await?;
        // The reply is [member, score]; scores of millisecond times print as integers.
        let due = first.get(1).and_then(|s| s.parse::<f64>().ok());
        Ok(due.map(|score| Ts(score as i64)))
    }

    async fn count(&self, workspace: &str, partition: u32) -> Result<u64, SchedulerError> {
        let keys = Keys::new(&self.namespace, workspace, partition);
        let mut con = self.con.clone();
        let (pending, claimed): (u64, u64) = redis::pipe()
            .cmd("ZCARD")
            .arg(keys.timers())
            .cmd("ZCARD")
            .arg(keys.timers_claimed())
            .query_async(&mut con)
            .await?;
        Ok(pending + claimed)
    }
}

/// Groups items by the keys of their partition, keeping their order within each group.
/// [`by_partition`], each partition's items cut into chunks one script call can take.
fn chunks_by_partition<T: Clone>(items: &[T], keys_of: impl Fn(&T) -> Keys) -> Vec<(Keys, Vec<T>)> {
    by_partition(items, keys_of)
        .into_iter()
        .flat_map(|(keys, group)| {
            group
                .chunks(SCHEDULE_CHUNK)
                .map(|chunk| (keys.clone(), chunk.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn by_partition<T: Clone>(items: &[T], keys_of: impl Fn(&T) -> Keys) -> Vec<(Keys, Vec<T>)> {
    let mut groups: Vec<(Keys, Vec<T>)> = Vec::new();
    let mut index: HashMap<Keys, usize> = HashMap::new();
    for item in items {
        let keys = keys_of(item);
        let at = *index.entry(keys.clone()).or_insert_with(|| {
            groups.push((keys, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(item.clone());
    }
    groups
}

fn encode(timer: &Timer, member: &str) -> Result<String, SchedulerError> {
    serde_json::to_string(timer).map_err(|e| SchedulerError::Corrupt {
        member: member.to_string(),
        reason: e.to_string(),
    })
}

impl<C> AsyncTimerStore for RedisTimers<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn schedule<'a>(&'a self, timer: &'a Timer) -> BoxFuture<'a, Result<(), SchedulerError>> {
        Box::pin(self.schedule_timer(timer))
    }

    fn schedule_many<'a>(
        &'a self,
        timers: &'a [Timer],
    ) -> BoxFuture<'a, Result<(), SchedulerError>> {
        Box::pin(self.schedule_timers(timers))
    }

    fn cancel<'a>(
        &'a self,
        workspace: &'a str,
        user: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, SchedulerError>> {
        Box::pin(self.cancel_timer(workspace, user, id))
    }

    fn cancel_many<'a>(
        &'a self,
        workspace: &'a str,
        timers: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<u32, SchedulerError>> {
        Box::pin(self.cancel_timers(workspace, timers))
    }

    fn claim_due<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
        now: Ts,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Timer>, SchedulerError>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            Ok(self.claim(workspace, partition, now, limit).await?.timers)
        })
    }

    fn claim_due_next<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
        now: Ts,
        limit: usize,
    ) -> BoxFuture<'a, Result<Claimed, SchedulerError>> {
        Box::pin(self.claim(workspace, partition, now, limit))
    }

    fn ack<'a>(&'a self, timer: &'a Timer) -> BoxFuture<'a, Result<bool, SchedulerError>> {
        Box::pin(self.ack_timer(timer))
    }

    fn ack_many<'a>(
        &'a self,
        timers: &'a [Timer],
    ) -> BoxFuture<'a, Result<Vec<bool>, SchedulerError>> {
        Box::pin(self.ack_timers(timers))
    }

    fn next_due<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<Option<Ts>, SchedulerError>> {
        Box::pin(self.earliest(workspace, partition))
    }

    fn len<'a>(
        &'a self,
        workspace: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<u64, SchedulerError>> {
        Box::pin(self.count(workspace, partition))
    }
}
