//! `beckon lint`: checks spec files and reports every error with its place.

use std::path::Path;

use beckon_journey::{Definitions, JourneyError, SpecError};

/// How many journeys, segments and policies loaded.
pub type Counts = (usize, usize, usize);

/// Checks a spec file or a folder of them (journeys, segments and policies). Returns what
/// loaded and the errors found (empty when all is well).
pub fn lint(path: &Path) -> Result<(Counts, Vec<SpecError>), JourneyError> {
    let counts = |d: &Definitions| (d.journeys.len(), d.segments.len(), d.policies.len());
    match beckon_journey::load_definitions(path) {
        Ok(d) => Ok((counts(&d), Vec::new())),
        Err(JourneyError::Invalid(errors)) => Ok(((0, 0, 0), errors)),
        Err(e) => Err(e),
    }
}
