//! `beckon lint`: checks spec files and reports every error with its place.

use std::path::Path;

use beckon_journey::{JourneyError, SpecError};

/// Checks a spec file or a folder of them. Returns the errors found (empty when all is well)
/// and the number of journeys that loaded.
pub fn lint(path: &Path) -> Result<(usize, Vec<SpecError>), JourneyError> {
    if path.is_dir() {
        return match beckon_journey::load_dir(path) {
            Ok(js) => Ok((js.len(), Vec::new())),
            Err(JourneyError::Invalid(errors)) => Ok((0, errors)),
            Err(e) => Err(e),
        };
    }

    let text = std::fs::read_to_string(path).map_err(|source| JourneyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    match beckon_journey::load_str(&path.display().to_string(), &text) {
        Ok(js) => Ok((js.len(), Vec::new())),
        Err(errors) => Ok((0, errors)),
    }
}
