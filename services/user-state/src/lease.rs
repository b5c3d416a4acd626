//! Partition leases in Redis, so user-state instances share the partitions of a workspace.
//!
//! Each instance heartbeats into a member set, works out its fair share (partitions divided by
//! live members, rounded up), renews the leases it holds, gives back any beyond its share and
//! takes free ones up to it. A lease is a key holding the owner's id with a time to live: a
//! dead instance's leases expire within `ttl` and the survivors take them over. Every
//! acquisition also draws a fencing token (a per-partition counter), so a write made under an
//! older lease can be told apart from one made under the current lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use beckon_core::{Clock, Ts};
use beckon_scheduler::keys::{DEFAULT_NAMESPACE, Keys, escape};
use redis::aio::ConnectionLike;

use crate::error::StateError;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub workspace: String,
    pub partitions: u32,
    /// This instance's id; must be unique among live instances.
    pub instance: String,
    /// How long a lease lives without renewal; takeover after a crash happens within this.
    pub ttl_ms: u64,
}

/// A lease this instance holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub token: u64,
    /// The lease is safe to act on until this instant (renewal time plus ttl, minus a margin
    /// for clock drift between this process and Redis).
    pub until: Ts,
}

/// What a [`Leases::tick`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub acquired: Vec<u32>,
    pub lost: Vec<u32>,
    /// Held beyond this instance's fair share: stop working on them, then [`Leases::release`]
    /// them, in that order, so two owners never work on one partition.
    pub surplus: Vec<u32>,
}

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

pub struct Leases<C> {
    conn: C,
    config: LeaseConfig,
    clock: Arc<dyn Clock>,
    held: BTreeMap<u32, Held>,
}

fn unavailable(e: redis::RedisError) -> StateError {
    StateError::Unavailable(e.to_string())
}

impl<C: ConnectionLike + Clone + Send + Sync> Leases<C> {
    pub fn new(conn: C, config: LeaseConfig, clock: Arc<dyn Clock>) -> Leases<C> {
        Leases {
            conn,
            config,
            clock,
            held: BTreeMap::new(),
        }
    }

    /// The clock leases are timed by, for a [`LeaseWindow`] that must agree with them.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    pub fn held(&self) -> &BTreeMap<u32, Held> {
        &self.held
    }

    /// True while this instance may act on the partition.
    pub fn holds(&self, partition: u32) -> bool {
        self.held
            .get(&partition)
            .is_some_and(|h| h.until > self.clock.now())
    }

    /// `bk:{<workspace>:<partition>}:lease`, in the partition's hash tag as every key of the
    /// partition is, with the workspace escaped the same way: a `}` or `:` in it can neither
    /// move the tag nor make two workspaces share a lease. Its fencing token,
    /// `<lease key>:token`, is then the key the state store's scripts check.
    fn lease_key(&self, partition: u32) -> String {
        let keys = Keys::new(DEFAULT_NAMESPACE, &self.config.workspace, partition);
        format!("{}:lease", keys.prefix())
    }

    /// `bk:<workspace>:members`, the workspace escaped so that the set cannot be a key of a
    /// partition of another workspace.
    fn members_key(&self) -> String {
        format!(
            "{DEFAULT_NAMESPACE}:{}:members",
            escape(&self.config.workspace)
        )
    }

    /// Heartbeat, renew, rebalance. Call it several times per ttl (every third of it).
    pub async fn tick(&mut self) -> Result<Changes, StateError> {
        let now = self.clock.now();
        let ttl = self.config.ttl_ms as i64;
        let mut changes = Changes::default();

        // Members whose heartbeat is older than a ttl are gone.
        let members_key = self.members_key();
        let (_, _, members): (i64, i64, u64) = redis::pipe()
            .zadd(&members_key, &self.config.instance, now.as_millis())
            .zrembyscore(&members_key, "-inf", now.as_millis() - ttl)
            .zcard(&members_key)
            .query_async(&mut self.conn)
            .await
            .map_err(unavailable)?;
        let members = members.max(1) as u32;
        let share = self.config.partitions.div_ceil(members) as usize;

        let until = Ts(now.as_millis() + ttl - ttl / 5);
        let renew = redis::Script::new(RENEW);
        for p in self.held.keys().copied().collect::<Vec<_>>() {
            let ok: i64 = renew
                .key(self.lease_key(p))
                .arg(&self.config.instance)
                .arg(ttl)
                .invoke_async(&mut self.conn)
                .await
                .map_err(unavailable)?;
            match (ok == 1, self.held.get_mut(&p)) {
                (true, Some(h)) => h.until = until,
                _ => {
                    self.held.remove(&p);
                    changes.lost.push(p);
                }
            }
        }

        changes.surplus = self
            .held
            .keys()
            .rev()
            .take(self.held.len().saturating_sub(share))
            .copied()
            .collect();

        if self.held.len() < share {
            // Start from a point derived from the instance id, so instances starting together
            // do not all race for partition 0.
            let start = beckon_core::partition::partition_of(
                &self.config.workspace,
                &self.config.instance,
                self.config.partitions,
            );
            for i in 0..self.config.partitions {
                if self.held.len() >= share {
                    break;
                }
                let p = (start + i) % self.config.partitions;
                if self.held.contains_key(&p) {
                    continue;
                }
                let key = self.lease_key(p);
                let got: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(&self.config.instance)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut self.conn)
                    .await
                    .map_err(unavailable)?;
                if got.is_none() {
                    continue;
                }
                let token: u64 = redis::cmd("INCR")
                    .arg(format!("{key}:token"))
                    .query_async(&mut self.conn)
                    .await
                    .map_err(unavailable)?;
                self.held.insert(p, Held { token, until });
                changes.acquired.push(p);
            }
        }

        if !changes.acquired.is_empty() || !changes.lost.is_empty() {
            tracing::info!(
                instance = %self.config.instance,
                members,
                share,
                held = self.held.len(),
                acquired = ?changes.acquired,
                lost = ?changes.lost,
                "partition leases changed"
            );
        }
        Ok(changes)
    }

    /// Partitions whose lease nobody holds right now, for `beckon.partitions.unowned`. One
    /// `EXISTS` per partition in one pipeline; each key is in its own slot, so a cluster
    /// connection routes them one by one.
    pub async fn unowned(&mut self) -> Result<u32, StateError> {
        let mut pipe = redis::pipe();
        for p in 0..self.config.partitions {
            pipe.exists(self.lease_key(p));
        }
        let held: Vec<bool> = pipe
            .query_async(&mut self.conn)
            .await
            .map_err(unavailable)?;
        Ok(held.iter().filter(|h| !**h).count() as u32)
    }

    /// Gives a partition back at once, so another instance can take it without waiting for
    /// the lease to expire.
    pub async fn release(&mut self, partition: u32) -> Result<(), StateError> {
        self.held.remove(&partition);
        let _: i64 = redis::Script::new(RELEASE)
            .key(self.lease_key(partition))
            .arg(&self.config.instance)
            .invoke_async(&mut self.conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Releases every lease and leaves the member set: the last step of a drain.
    pub async fn release_all(&mut self) -> Result<Vec<u32>, StateError> {
        let held: Vec<u32> = self.held.keys().copied().collect();
        for p in &held {
            self.release(*p).await?;
        }
        let _: i64 = redis::cmd("ZREM")
            .arg(self.members_key())
            .arg(&self.config.instance)
            .query_async(&mut self.conn)
            .await
            .map_err(unavailable)?;
        Ok(held)
    }
}

/// Until when an instance may act on a partition: the lease's `until` as of its last renewal,
/// moved forward by the loop that renews it. A partition loop looks at it before each entry,
/// so an instance whose renewals fall behind (a stalled process, a slow Redis) stops sending
/// and writing for the partition before the lease can expire and pass to another instance,
/// instead of acting on what may no longer be the latest state until a fenced write fails.
#[derive(Clone)]
pub struct LeaseWindow {
    until: Arc<AtomicI64>,
    clock: Arc<dyn Clock>,
}

impl LeaseWindow {
    pub fn new(clock: Arc<dyn Clock>, until: Ts) -> LeaseWindow {
        LeaseWindow {
            until: Arc::new(AtomicI64::new(until.as_millis())),
            clock,
        }
    }

    /// A renewal made the lease good until `until`.
    pub fn extend(&self, until: Ts) {
        self.until.fetch_max(until.as_millis(), Ordering::Relaxed);
    }

    pub fn is_open(&self) -> bool {
        self.clock.now().as_millis() < self.until.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for LeaseWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseWindow")
            .field("until", &self.until.load(Ordering::Relaxed))
            .finish()
    }
}
