//! The `beckon` command's library: the replay job, spec linting and the all-in-one wiring.
//!
//! The binary in `main.rs` only parses arguments and calls into here, so tests drive the same
//! code the command runs.

pub mod bench;
pub mod explain;
pub mod failure;
pub mod grpc;
pub mod input;
pub mod lint;
pub mod loadgen;
pub mod publish;
pub mod replay;
pub mod report;
pub mod serve;
pub mod user_view;
