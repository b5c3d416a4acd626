//! The journey service: journey, segment and policy definitions, checked and published as
//! immutable versions in Redis (or memory), and followed by every evaluator.
//!
//! Publishing only adds: a version once published never changes, so a user who entered it
//! finishes it, and every user-state instance evaluates the same release once it has heard of
//! it. Releases are numbered per workspace; followers learn of a new one at once.

pub mod documents;
pub mod error;
pub mod follow;
pub mod service;
pub mod store;

pub use documents::Document;
pub use error::DefinitionError;
pub use follow::{follow_service, follow_store};
pub use service::{JourneysService, publish_files};
pub use store::{DefinitionStore, MemoryDefinitions, RedisDefinitions, Release};
