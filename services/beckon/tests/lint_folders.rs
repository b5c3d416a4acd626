//! `beckon lint` on a tree of spec folders: every sub-folder is read, in the same order on
//! every machine, and each error names its file, line and column.

use std::path::Path;
use std::process::Command;

const GOOD: &str = "\
id: welcome
version: 1
workspace: default
entry:
  event: Signed Up
steps:
  - id: hello
    message:
      channel: push
      title: Hello
      body: Good to see you.
";

/// A step whose delay is not a duration: the value on line 8, column 12.
const BAD_DELAY: &str = "\
id: nudge
version: 1
workspace: default
entry:
  event: Signed Up
steps:
  - id: wait
    delay: soon
";

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create folder");
    }
    std::fs::write(path, text).expect("write spec");
}

fn lint(path: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_beckon"))
        .arg("lint")
        .arg(path)
        .output()
        .expect("beckon runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lint_walks_sub_folders_and_names_each_error_by_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "top.yaml", GOOD);
    write(root, "teams/growth/nudge.yaml", BAD_DELAY);
    write(
        root,
        "teams/billing/dunning.yml",
        &BAD_DELAY.replace("nudge", "dunning"),
    );
    write(root, "teams/notes.txt", "not a spec");
    // Hidden folders (version control, editors) are not specs.
    write(root, ".git/broken.yaml", "id: [");

    let (code, stdout, stderr) = lint(root);
    assert_eq!(code, Some(1), "{stdout}{stderr}");

    let billing = root.join("teams/billing/dunning.yml");
    let growth = root.join("teams/growth/nudge.yaml");
    let places: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(".yaml:") || l.contains(".yml:"))
        .collect();
    assert_eq!(places.len(), 2, "{stderr}");
    // Sorted by path at each level: billing before growth.
    let expected = [billing, growth];
    for (line, file) in places.iter().zip(expected) {
        let prefix = format!("{}:8:12: steps[0]", file.display());
        assert!(line.starts_with(&prefix), "{line} should start {prefix}");
        assert!(line.contains("duration \"soon\" is not valid"), "{line}");
    }
    assert!(!stderr.contains(".git"), "{stderr}");
    assert!(stderr.contains("2 error(s)"), "{stderr}");

    // The same tree without the bad files loads every journey in it, however deep.
    std::fs::remove_dir_all(root.join("teams/billing")).expect("remove");
    write(
        root,
        "teams/growth/nudge.yaml",
        &GOOD.replace("welcome", "nudge"),
    );
    let (code, stdout, stderr) = lint(root);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("ok: 2 journey(s)"), "{stdout}");
}

#[test]
fn an_id_defined_in_two_folders_is_reported_at_the_second_naming_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "a/welcome.yaml", GOOD);
    write(
        root,
        "b/copy.yaml",
        &format!("# the same journey again\n{GOOD}"),
    );

    let (code, stdout, stderr) = lint(root);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let first = root.join("a/welcome.yaml");
    let second = root.join("b/copy.yaml");
    let expected = format!(
        "{}:2:1: id: journey welcome version 1 is defined twice (also in {})",
        second.display(),
        first.display()
    );
    assert!(stderr.contains(&expected), "{expected}\nin:\n{stderr}");
}

#[test]
fn a_file_that_is_not_text_is_reported_and_the_others_still_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "a/nudge.yaml", BAD_DELAY);
    let mut latin1 = b"id: caf".to_vec();
    latin1.extend_from_slice(&[0xe9, b'\n']);
    std::fs::write(root.join("b.yaml"), latin1).expect("write");
    // A named pipe is not a spec file: reading it would wait for a writer for ever.
    let fifo = Command::new("mkfifo")
        .arg(root.join("c.yaml"))
        .status()
        .is_ok_and(|s| s.success());

    let (code, stdout, stderr) = lint(root);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let not_text = format!("{}:1:8: not UTF-8 text", root.join("b.yaml").display());
    assert!(stderr.contains(&not_text), "{not_text}\nin:\n{stderr}");
    assert!(stderr.contains("duration \"soon\""), "{stderr}");
    assert!(stderr.contains("2 error(s)"), "{stderr}");
    if fifo {
        assert!(!stderr.contains("c.yaml"), "{stderr}");
    }

    // Serving or replaying the folder refuses it with the same errors and the same count.
    let events = root.join("events.jsonl.txt");
    std::fs::write(&events, "").expect("write events");
    let runs: [&[&std::ffi::OsStr]; 2] = [
        &[
            "serve".as_ref(),
            "all".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
        &[
            "replay".as_ref(),
            "--no-progress".as_ref(),
            "--events".as_ref(),
            events.as_ref(),
        ],
    ];
    for args in runs {
        let out = Command::new(env!("CARGO_BIN_EXE_beckon"))
            .args(args)
            .arg("--journeys")
            .arg(root)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("beckon runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(stderr.contains(&not_text), "{args:?}: {stderr}");
        assert!(stderr.contains("duration \"soon\""), "{args:?}: {stderr}");
        assert!(
            stderr.contains("2 error(s) in specs:"),
            "{args:?}: {stderr}"
        );
    }
}
