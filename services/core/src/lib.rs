//! The domain model every Beckon service shares: events, time, partitions, per-user
//! behavioral state and the effects an evaluation asks for.
//!
//! Nothing here does input or output. Services wrap these types with storage, transport and
//! actors; replay wires them together in one process.

pub mod clock;
pub mod delivery;
pub mod devices;
pub mod effect;
pub mod error;
pub mod event;
pub mod ids;
pub mod partition;
pub mod state;
pub mod time;

pub use clock::{Clock, SystemClock, VirtualClock};
pub use effect::{
    ApiEntry, Contacts, Decision, DecisionKind, Effect, Forget, HOLDOUT_ARM, MergeIn, MergeOut,
    OutboundMessage, SEGMENT_TIMER_PREFIX, Timer, TimerKind, Trigger,
};
pub use error::CoreError;
pub use event::{Event, EventKind, Props};
pub use state::{
    FunnelTrack, JourneyInstance, MAX_EVENT_NAMES, MAX_TRAIT_BYTES, Membership, MergeStage,
    StateLimits, Tracking, UserState,
};
pub use time::{Duration, EARLIEST_EVENT, LATEST_EVENT, Ts, check_event_time, parse_event_time};
