//! Ingest: turns incoming Segment-spec events into validated [`beckon_core::Event`]s, drops
//! repeated message ids, and appends to the event log.

pub mod dedup;
pub mod endpoint;
pub mod error;
pub mod grpc;
pub mod log;
mod scan;
pub mod segment;

pub use dedup::{Deduper, MemoryDeduper};
pub use error::{IngestError, RejectReason, Rejection};
pub use segment::{parse_line, parse_value};
