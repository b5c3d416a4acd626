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
fn a_repeated_message_id_is_applied_once() {
    let line = r#"{"type":"track","userId":"u9","event":"Product Added","messageId":"dup-1","timestamp":"2026-03-02T09:00:00Z"}"#;
    let events = Events::new().raw(line).raw(line);
    let out = replay_examples(&events);

    assert_eq!(out.report.events.applied, 1);
    assert_eq!(
        out.report
            .events
            .rejected_by_reason
            .get("duplicate_message_id"),
        Some(&1)
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
