//! Running `beckon lint` on one spec.

use std::process::Command;

/// The error lines `beckon lint` prints for `text` written to a file of its own, with the
/// file's path taken off the front, and its exit code.
pub fn lint_one(text: &str) -> (Option<i32>, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journey.yaml");
    std::fs::write(&path, text).expect("write spec");
    let out = Command::new(env!("CARGO_BIN_EXE_beckon"))
        .arg("lint")
        .arg(&path)
        .output()
        .expect("beckon runs");
    let prefix = format!("{}:", path.display());
    let errors = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect();
    (out.status.code(), errors)
}
