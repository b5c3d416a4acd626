//! The scheduler: timers that wake a user's actor when they come due.
//!
//! Timers are kept per partition and ordered by due time, so finding due work never needs a
//! scan. Setting a timer whose id exists replaces it (one timer per id); cancelling is by id.

pub mod async_store;
pub mod error;
pub mod firing;
pub mod grpc;
pub mod keys;
pub mod memory;
pub mod redis;

pub use async_store::{AsyncTimerStore, Claimed, MemoryAsyncTimers};
pub use error::SchedulerError;
pub use memory::MemoryTimers;
pub use redis::RedisTimers;

use beckon_core::{Timer, Ts};

/// A partition's timers.
pub trait TimerStore: Send {
    /// Sets or replaces the timer with this (workspace, user, id).
    fn schedule(&mut self, timer: Timer);

    /// Removes a timer; returns whether it existed.
    fn cancel(&mut self, workspace: &str, user: &str, id: &str) -> bool;

    /// Removes every timer of a user (who is being forgotten); returns how many there were.
    fn cancel_user(&mut self, workspace: &str, user: &str) -> usize;

    /// Removes and returns up to `limit` timers due at or before `now`, earliest first (ties in
    /// workspace, user and id order, so firing is deterministic).
    fn pop_due(&mut self, now: Ts, limit: usize) -> Vec<Timer>;

    /// When the earliest timer is due.
    fn next_due(&self) -> Option<Ts>;

    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
