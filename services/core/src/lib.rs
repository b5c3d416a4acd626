//! The domain model every Beckon service shares: events, time, partitions, per-user
//! behavioral state and the effects an evaluation asks for.
//!
//! Nothing here does input or output. Services wrap these types with storage, transport and
//! actors; replay wires them together in one process.

pub mod clock;
pub mod effect;
pub mod error;
pub mod event;
pub mod partition;
pub mod state;
pub mod time;

pub use clock::{Clock, SystemClock, VirtualClock};
pub use effect::{Decision, DecisionKind, Effect, OutboundMessage, Timer, Trigger};
pub use error::CoreError;
pub use event::{Event, EventKind, Props};
pub use state::{JourneyInstance, Tracking, UserState};
pub use time::{Duration, Ts};
