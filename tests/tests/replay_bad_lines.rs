//! Bad lines are counted with their line number and reason, and never stop the replay.

use beckon_tests::{Events, at, replay_examples, sent};
use serde_json::json;

#[test]
fn each_kind_of_bad_line_is_rejected_and_its_neighbours_apply() {
    let events = Events::new()
        .track("u1", "Product Added", at(0), json!({"name": "Lamp"}))
        .raw(r#"{"type":"track","userId":"u1","event":"Product Viewed""#)
        .raw(r#"{"type":"track","event":"Product Viewed","timestamp":"2026-03-02T09:01:00Z"}"#)
        .raw(r#"{"type":"purchase","userId":"u1","timestamp":"2026-03-02T09:01:00Z"}"#)
        .raw(r#"{"type":"track","userId":"u1","event":"Product Viewed","timestamp":"02/03/2026"}"#)
        .track("u2", "Product Added", at(2), json!({"name": "Desk"}));
    let out = replay_examples(&events);
    let e = &out.report.events;

    assert_eq!((e.read, e.applied, e.rejected), (6, 2, 4));
    let reasons: Vec<_> = e
        .rejected_lines
        .iter()
        .map(|r| (r.line, r.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (2, "malformed_json"),
            (3, "missing_user_id"),
            (4, "unknown_type"),
            (5, "bad_timestamp")
        ]
    );
    for reason in [
        "malformed_json",
        "missing_user_id",
        "unknown_type",
        "bad_timestamp",
    ] {
        assert_eq!(e.rejected_by_reason.get(reason), Some(&1), "{reason}");
    }

    // The lines around the bad ones still drove their journeys.
    assert_eq!(sent(&out, "u1", "cart-abandonment").len(), 1);
    assert_eq!(sent(&out, "u2", "cart-abandonment").len(), 1);
}

#[test]
fn timestamps_and_names_are_refused_by_field_with_the_whole_reason() {
    let line = |event: &str, timestamp: &str| {
        json!({"type": "track", "userId": "u1", "event": event, "timestamp": timestamp}).to_string()
    };
    let events = Events::new()
        .raw(&line("Product Added", "2026-03-02T09:00:00+25:00"))
        .raw(&line("Product\u{1b}Added", "2026-03-02T09:00:00Z"))
        .raw(&line("Product Added", "-009999-01-01T00:00:00Z"))
        .raw(&line(
            "Product Added",
            &format!("2026-03-02T09:00:00.{}Z", "9".repeat(5000)),
        ))
        .track("u2", "Product Added", at(2), json!({"name": "Desk"}));
    let out = replay_examples(&events);
    let e = &out.report.events;

    assert_eq!((e.read, e.applied, e.rejected), (5, 1, 4));
    let refused: Vec<_> = e
        .rejected_lines
        .iter()
        .map(|r| {
            (
                r.line,
                r.reason.as_str(),
                r.field.as_str(),
                r.detail.as_str(),
            )
        })
        .collect();
    assert_eq!(
        refused[..2],
        [
            (
                1,
                "bad_timestamp",
                "timestamp",
                "timestamp \"2026-03-02T09:00:00+25:00\" is not ISO 8601: offset +25:00 is \
                 outside -23:59 to +23:59"
            ),
            (2, "bad_field", "event", "contains a control character"),
        ]
    );
    // Out of the calendar: the value and the reason, neither cut short.
    let (line, reason, _, detail) = refused[2];
    assert_eq!((line, reason), (3, "bad_timestamp"));
    assert_eq!(
        detail,
        "\"-009999-01-01T00:00:00Z\" is out of range; the supported range is \
         1970-01-01T00:00:00.000Z to 9999-12-30T22:00:00.999Z"
    );
    // Longer than any timestamp: its start and its length, in a few words.
    let (line, _, _, detail) = refused[3];
    assert_eq!(line, 4);
    assert!(detail.len() < 200, "{detail}");
    assert!(detail.ends_with("5021 characters (the first 64 shown), longer than any timestamp"));

    assert_eq!(sent(&out, "u2", "cart-abandonment").len(), 1);
}

#[test]
fn a_repeated_message_id_is_applied_once_and_counted_as_a_duplicate_not_a_rejection() {
    let line = r#"{"type":"track","userId":"u9","event":"Product Added","messageId":"dup-1","timestamp":"2026-03-02T09:00:00Z"}"#;
    let events = Events::new().raw(line).raw(line).raw(line);
    let out = replay_examples(&events);
    let e = &out.report.events;

    assert_eq!((e.read, e.applied, e.duplicates, e.rejected), (3, 1, 2, 0));
    assert!(
        e.rejected_by_reason.is_empty(),
        "{:?}",
        e.rejected_by_reason
    );
    assert!(e.rejected_lines.is_empty(), "{:?}", e.rejected_lines);
    assert!(
        out.report
            .summary()
            .starts_with("events: 3 read, 1 applied, 2 duplicates, 0 rejected;"),
        "{}",
        out.report.summary()
    );
    assert_eq!(sent(&out, "u9", "cart-abandonment").len(), 1);
}

#[test]
fn a_folder_or_missing_file_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    for events in [dir.path().to_path_buf(), dir.path().join("missing.jsonl")] {
        let mut config =
            beckon::replay::ReplayConfig::new(events, beckon_tests::example_journeys());
        config.progress = false;
        let err = beckon::replay::run(&config).err().map(|e| format!("{e:#}"));
        assert!(err.is_some(), "replaying {:?} must fail", config.events);
    }
}

#[test]
fn a_line_that_is_not_utf8_is_read_and_rejected() {
    let good = Events::new()
        .track("u1", "Product Added", at(0), json!({"name": "Lamp"}))
        .track("u2", "Product Added", at(2), json!({"name": "Desk"}));
    let dir = tempfile::tempdir().expect("tempdir");
    let written = std::fs::read(good.write(dir.path())).expect("read events");
    let mut lines = written.split_inclusive(|b| *b == b'\n');
    let mut bytes = lines.next().expect("first line").to_vec();
    // Latin-1 text where UTF-8 was expected, with Windows line ends around it.
    bytes.extend_from_slice(b"{\"type\":\"track\",\"userId\":\"u3\",\"event\":\"Caf\xe9\"}\r\n");
    bytes.extend_from_slice(lines.next().expect("second line"));
    let path = dir.path().join("mixed.jsonl");
    std::fs::write(&path, bytes).expect("write events");

    let mut config = beckon::replay::ReplayConfig::new(path, beckon_tests::example_journeys());
    config.progress = false;
    let out = beckon::replay::run(&config).expect("replay runs");
    let e = &out.report.events;

    assert_eq!((e.read, e.applied, e.rejected), (3, 2, 1));
    assert_eq!(e.applied + e.duplicates + e.rejected, e.read);
    let rejected = &e.rejected_lines[0];
    assert_eq!(
        (rejected.line, rejected.reason.as_str()),
        (2, "malformed_json")
    );
    assert_eq!(rejected.detail, "not UTF-8 text: invalid byte at column 43");
    assert_eq!(sent(&out, "u2", "cart-abandonment").len(), 1);
}
