//! Small edges of the command line: a folder with no spec file is refused rather than passed
//! as an empty spec set (by `serve` too), a path that is neither a file nor a folder is named as such, and logs
//! written to a file or a pipe carry no colour codes.

use std::process::{Command, Output};

fn beckon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_beckon"))
        .args(args)
        .output()
        .expect("beckon runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const OTHER_WORKSPACE: &str = "\
id: hello
version: 1
workspace: elsewhere
entry: {event: Signed Up}
steps:
  - id: hi
    message: {channel: push, body: hi}
";

const EVENTS: &str = "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"Signed Up\",\"timestamp\":\"2026-03-02T09:00:00Z\"}\n";

#[test]
fn lint_and_replay_refuse_a_folder_with_no_spec_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("specs");
    std::fs::create_dir_all(empty.join("drafts")).expect("folders");
    std::fs::write(empty.join("notes.txt"), "not a spec").expect("write");
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, EVENTS).expect("write events");
    let said = format!(
        "error: {}: a folder with no .yaml or .yml files\n",
        empty.display()
    );

    let out = beckon(&["lint", &empty.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), said);
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));

    let out = beckon(&[
        "replay",
        "--events",
        &events.display().to_string(),
        "--journeys",
        &empty.display().to_string(),
        "--no-progress",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), said);
}

/// `serve` refuses a journeys folder that holds no spec, or that is not there, as it starts.
#[test]
fn serve_refuses_a_journeys_folder_with_no_spec_or_none_at_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("specs");
    std::fs::create_dir_all(&empty).expect("folder");
    let missing = dir.path().join("nowhere");

    let args = ["serve", "all", "--listen", "127.0.0.1:0"];
    let empty_arg = empty.display().to_string();
    let out = beckon(&[&args[..], &["--journeys", &empty_arg]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "--journeys: {}: a folder with no .yaml or .yml files",
            empty.display()
        )),
        "{}",
        text(&out.stderr)
    );

    let missing_arg = missing.display().to_string();
    let out = beckon(&[&args[..], &["--journeys", &missing_arg]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--journeys: ") && text(&out.stderr).contains("nowhere"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn lint_names_a_pipe_as_neither_a_file_nor_a_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipe = dir.path().join("ff.yaml");
    let made = Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());

    let out = beckon(&["lint", &pipe.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: cannot read {}: not a regular file or a folder\n",
            pipe.display()
        )
    );
}

#[test]
fn replay_logs_to_a_pipe_without_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let specs = dir.path().join("specs");
    std::fs::create_dir_all(&specs).expect("folder");
    std::fs::write(specs.join("hello.yaml"), OTHER_WORKSPACE).expect("write spec");
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, EVENTS).expect("write events");

    let out = beckon(&[
        "replay",
        "--events",
        &events.display().to_string(),
        "--journeys",
        &specs.display().to_string(),
        "--no-progress",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("no journeys for this workspace"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}
