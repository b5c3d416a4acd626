//! User-state: one actix actor per active user, holding that user's live behavioral state.
//!
//! A [`PartitionWorker`] owns the users of one partition. It hands each trigger (an event, or
//! a timer that came due) to the user's [`UserActor`], started on demand from the
//! [`StateStore`], and performs the effects the actor returns: timers go to the partition's
//! timer store, messages to the gateway, decisions to the stats.

pub mod actor;
pub mod dormant;
pub mod error;
pub mod grpc;
pub mod lease;
pub mod live;
pub mod outlet;
pub mod redis;
pub mod remote;
pub mod stats;
pub mod store;
pub mod worker;

pub use actor::{Applied, Apply, Hibernate, Snapshot, UserActor};
pub use dormant::Dormitory;
pub use error::StateError;
pub use outlet::{Forwarder, LogForwarder, Outlet, TimerSink, Timers};
pub use stats::{JourneyStats, Stats};
pub use store::{MemoryStore, StateStore, Write, Written};
pub use worker::PartitionWorker;
