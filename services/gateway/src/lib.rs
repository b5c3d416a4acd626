//! Channel gateways: how a rendered message leaves Beckon.
//!
//! Every adapter implements [`Channel`]. The [`Gateway`] routes a message to the adapter of its
//! channel and remembers idempotency keys, so a send retried after a crash is not delivered
//! twice by the same gateway.

pub mod channel;
pub mod error;
pub mod recording;

pub use channel::{Channel, Delivery, Gateway};
pub use error::GatewayError;
pub use recording::RecordingChannel;
