//! Journey definitions and their evaluation.
//!
//! Specs are YAML ([`spec`]), checked and compiled on load ([`load`]) into [`Journey`]s. The
//! [`Engine`] evaluates a user's state against a trigger and returns effects; it performs none
//! of them, so every journey can be tested without Redis or a network.

pub mod condition;
pub mod error;
pub mod eval;
pub mod journey;
pub mod load;
pub mod spec;
pub mod template;

pub use error::{JourneyError, SpecError};
pub use eval::Engine;
pub use journey::Journey;
pub use load::{load_dir, load_str};
