//! Journey and segment definitions and their evaluation.
//!
//! Specs are YAML ([`spec`]), checked and compiled on load ([`load`]) into [`Journey`]s. The
//! [`Engine`] evaluates a user's state against a trigger and returns effects; it performs none
//! of them, so every journey can be tested without Redis or a network.

pub mod condition;
mod cycle;
pub mod error;
pub mod eval;
pub mod journey;
pub mod load;
pub mod localtime;
mod serde_words;
pub mod sim;
pub mod spec;
pub mod stats;
pub mod strict_yaml;
pub mod template;
mod value_place;

pub use error::{JourneyError, SpecError};
pub use eval::{CurrentEngine, Engine, JourneyStatus};
pub use journey::{Definitions, Journey, Policy, Segment};
pub use load::{
    load_definitions, load_definitions_str, load_definitions_texts, load_dir, load_published_str,
    load_published_texts, load_str, read_spec_files, spec_paths,
};
pub use sim::Sim;
