//! `beckon replay` reads its events however they arrive: with a byte-order mark in front,
//! gzip-compressed (by name or not), on standard input or through a named pipe. Each way gives
//! the report and the messages the plain file gives, byte for byte; a compressed file cut
//! short fails, naming the file and what went wrong, and writes no report.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// The shipped example events: 19 lines, every one valid, several users and journeys.
fn shop() -> Vec<u8> {
    std::fs::read(repo("examples/events/shop.jsonl")).expect("example events")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("compress");
    encoder.finish().expect("compress")
}

/// What one replay wrote: the report without its wall-clock time, and the messages file.
#[derive(Debug, PartialEq)]
struct Replayed {
    report: Value,
    messages: Vec<u8>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The replay command for `events`, writing its report and messages under `out`.
fn replay_command(events: &str, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_beckon"));
    cmd.args(["replay", "--events", events, "--journeys"])
        .arg(repo("examples/journeys"))
        .arg("--report")
        .arg(out.join("report.json"))
        .arg("--messages")
        .arg(out.join("messages.jsonl"))
        .args(["--workers", "2", "--no-progress"]);
    cmd
}

fn outputs(run: &Output, out: &Path) -> Replayed {
    assert!(run.status.success(), "replay failed: {}", text(&run.stderr));
    let mut report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report written"))
            .expect("report is JSON");
    report
        .as_object_mut()
        .expect("report is an object")
        .remove("elapsed_ms");
    let messages = std::fs::read(out.join("messages.jsonl")).expect("messages written");
    Replayed { report, messages }
}

/// Replays the file at `events` into a fresh folder under `dir`.
fn replay_file(dir: &Path, events: &Path) -> Replayed {
    let out = tempfile::tempdir_in(dir).expect("output folder");
    let run = replay_command(&events.display().to_string(), out.path())
        .stdin(Stdio::null())
        .output()
        .expect("beckon runs");
    outputs(&run, out.path())
}

/// Replays `bytes` given on standard input (`--events -`).
fn replay_stdin(dir: &Path, bytes: &[u8]) -> Replayed {
    let out = tempfile::tempdir_in(dir).expect("output folder");
    let mut child = replay_command("-", out.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("beckon starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let bytes = bytes.to_vec();
    // Written from another thread, so a pipe that fills up waits for the reader.
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let run = child.wait_with_output().expect("beckon ends");
    writer.join().expect("writer").expect("events written");
    outputs(&run, out.path())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write events");
    path
}

fn events(report: &Value) -> (u64, u64, u64) {
    let n = |k: &str| report["events"][k].as_u64().unwrap_or(u64::MAX);
    (n("read"), n("applied"), n("rejected"))
}

#[test]
fn a_byte_order_mark_at_the_start_loses_no_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = replay_file(dir.path(), &write(dir.path(), "plain.jsonl", &shop()));
    let marked = [b"\xef\xbb\xbf".as_slice(), &shop()].concat();
    let with_bom = replay_file(dir.path(), &write(dir.path(), "bom.jsonl", &marked));

    assert_eq!(
        events(&with_bom.report),
        (19, 19, 0),
        "{:#}",
        with_bom.report
    );
    assert!(!with_bom.messages.is_empty(), "the examples send messages");
    assert_eq!(with_bom, plain);
}

#[test]
fn rejected_lines_keep_their_numbers_behind_a_byte_order_mark() {
    let lines: Vec<Vec<u8>> = shop()
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    // Line 5 is cut short; line 8 starts with a mark, which only the very start may carry.
    let mut body = Vec::new();
    for (i, line) in lines.iter().take(10).enumerate() {
        match i + 1 {
            5 => body.extend_from_slice(b"{\"type\":\"track\",\"userId\":\"ada\"\n"),
            8 => body.extend([b"\xef\xbb\xbf".as_slice(), line].concat()),
            _ => body.extend_from_slice(line),
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = replay_file(dir.path(), &write(dir.path(), "plain.jsonl", &body));
    let marked = [b"\xef\xbb\xbf".as_slice(), &body].concat();
    let with_bom = replay_file(dir.path(), &write(dir.path(), "bom.jsonl", &marked));

    assert_eq!(with_bom, plain);
    let rejected: Vec<(u64, &str)> = with_bom.report["events"]["rejected_lines"]
        .as_array()
        .expect("rejected lines")
        .iter()
        .map(|r| {
            let line = r["line"].as_u64().unwrap_or(0);
            (line, r["reason"].as_str().unwrap_or_default())
        })
        .collect();
    assert_eq!(rejected, [(5, "malformed_json"), (8, "malformed_json")]);
    assert_eq!(events(&with_bom.report), (10, 8, 2));
}

#[test]
fn a_gzip_file_replays_like_the_plain_one_by_name_or_by_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = replay_file(dir.path(), &write(dir.path(), "shop.jsonl", &shop()));
    let compressed = gzip(&shop());

    let named = replay_file(dir.path(), &write(dir.path(), "shop.jsonl.gz", &compressed));
    assert_eq!(named, plain);
    // Recognised by its first bytes, whatever the file is called.
    let unnamed = replay_file(dir.path(), &write(dir.path(), "shop.data", &compressed));
    assert_eq!(unnamed, plain);
    // Days compressed one by one and joined read as one file.
    let shop = shop();
    let lines: Vec<&[u8]> = shop.split_inclusive(|b| *b == b'\n').collect();
    let (first, rest) = lines.split_at(7);
    let joined = [gzip(&first.concat()), gzip(&rest.concat())].concat();
    let members = replay_file(dir.path(), &write(dir.path(), "days.gz", &joined));
    assert_eq!(members, plain);
}

#[test]
fn standard_input_and_a_named_pipe_replay_like_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = replay_file(dir.path(), &write(dir.path(), "shop.jsonl", &shop()));

    assert_eq!(replay_stdin(dir.path(), &shop()), plain);
    assert_eq!(replay_stdin(dir.path(), &gzip(&shop())), plain);

    // A pipe has no size and cannot seek; the replay reads it as it comes.
    let fifo = dir.path().join("events.pipe");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo failed");
    let out = tempfile::tempdir_in(dir.path()).expect("output folder");
    let child = replay_command(&fifo.display().to_string(), out.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("beckon starts");
    let fifo_path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let mut pipe = std::fs::OpenOptions::new().write(true).open(fifo_path)?;
        pipe.write_all(&gzip(&shop()))
    });
    let run = child.wait_with_output().expect("beckon ends");
    writer.join().expect("writer").expect("events written");
    assert_eq!(outputs(&run, out.path()), plain);
}

#[test]
fn a_gzip_file_cut_short_fails_naming_the_file_and_writes_no_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Enough distinct lines that the compressed stream is long, cut off in its middle.
    let mut body = Vec::new();
    for n in 0..2_000 {
        body.extend_from_slice(
            format!(
                "{{\"type\":\"track\",\"userId\":\"u{n}\",\"event\":\"Product Viewed\",\
                 \"messageId\":\"m{n}\",\"timestamp\":\"2026-03-02T09:00:00Z\"}}\n"
            )
            .as_bytes(),
        );
    }
    let compressed = gzip(&body);
    let cut = write(
        dir.path(),
        "cut.jsonl.gz",
        &compressed[..compressed.len() / 2],
    );

    let out = tempfile::tempdir_in(dir.path()).expect("output folder");
    let run = replay_command(&cut.display().to_string(), out.path())
        .stdin(Stdio::null())
        .output()
        .expect("beckon runs");
    let stderr = text(&run.stderr);

    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let said = format!(
        "error: {}: the gzip stream ended early, after line ",
        cut.display()
    );
    assert!(stderr.starts_with(&said), "{stderr}");
    assert!(stderr.contains("the file is cut short"), "{stderr}");
    assert!(
        !out.path().join("report.json").exists(),
        "a report of part of the file"
    );
    assert!(!out.path().join("messages.jsonl").exists());

    // A file named as compressed that is not is refused as such, not read as text.
    let plain = write(dir.path(), "plain.jsonl.gz", &shop());
    let run = replay_command(&plain.display().to_string(), out.path())
        .stdin(Stdio::null())
        .output()
        .expect("beckon runs");
    assert_eq!(run.status.code(), Some(2));
    assert_eq!(
        text(&run.stderr),
        format!(
            "error: {} is named .gz but is not gzip data (it does not start with the bytes 1f \
             8b)\n",
            plain.display()
        )
    );
}

#[test]
fn a_messages_file_that_cannot_be_written_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = repo("examples/events/shop.jsonl");
    let run = Command::new(env!("CARGO_BIN_EXE_beckon"))
        .args(["replay", "--events"])
        .arg(&events)
        .arg("--journeys")
        .arg(repo("examples/journeys"))
        .arg("--report")
        .arg(dir.path().join("report.json"))
        // Opens, and refuses every write: the failure is the write's, not the open's.
        .args(["--messages", "/dev/full", "--no-progress"])
        .stdin(Stdio::null())
        .output()
        .expect("beckon runs");
    let stderr = text(&run.stderr);

    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("error: writing /dev/full: No space left on device"),
        "{stderr}"
    );
}
