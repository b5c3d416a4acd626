//! A replay merges ids the way the services do, and the outcome does not depend on the number
//! of worker threads.

use std::path::Path;

use beckon::replay::{self, ReplayConfig};
use beckon_tests::messages_jsonl;
use serde_json::json;

const DEFS: &str = "
id: onboarding
version: 1
workspace: default
entry:
  event: Signed Up
steps:
  - id: wait
    delay: 1d
  - id: nudge
    message:
      channel: push
      body: 'Day two, {{ user.name | default: \"there\" }}'
---
kind: segment
id: pricing-curious
version: 1
workspace: default
condition:
  did: {event: Pricing, within: 7d, at_least: 3}
---
id: sales-touch
version: 1
workspace: default
entry: {segment: pricing-curious}
steps:
  - id: ping
    message:
      channel: push
      body: Questions about pricing?
";

/// Anonymous visitors look at pricing, then sign in; some had started onboarding while
/// anonymous. Ids are spread so that both sides of a merge sit on different workers.
fn events() -> String {
    let mut lines = Vec::new();
    for n in 0..40 {
        let anon = format!("anon-{n}");
        let known = format!("user-{n}");
        let t = |m: i64| format!("2026-03-0{}T10:{:02}:00.000Z", 1 + n % 5, m);
        for m in 0..2 {
            lines.push(
                json!({"type": "page", "anonymousId": anon, "name": "Pricing",
                "messageId": format!("{anon}-p{m}"), "timestamp": t(m)}),
            );
        }
        if n % 2 == 0 {
            lines.push(
                json!({"type": "track", "anonymousId": anon, "event": "Signed Up",
                "messageId": format!("{anon}-s"), "timestamp": t(3)}),
            );
        }
        lines.push(json!({"type": "page", "userId": known, "name": "Pricing",
            "messageId": format!("{known}-p"), "timestamp": t(4)}));
        if n % 3 == 0 {
            lines.push(json!({"type": "alias", "userId": known, "previousId": anon,
                "messageId": format!("{known}-a"), "timestamp": t(5)}));
        } else {
            lines.push(
                json!({"type": "identify", "userId": known, "anonymousId": anon,
                "traits": {"name": format!("N{n}")}, "messageId": format!("{known}-i"),
                "timestamp": t(5)}),
            );
        }
        // After the merge, the old id alone: it counts for the known user.
        lines.push(
            json!({"type": "page", "anonymousId": anon, "name": "Pricing",
            "messageId": format!("{anon}-late"), "timestamp": t(6)}),
        );
    }
    lines.iter().map(|l| l.to_string() + "\n").collect()
}

fn run(dir: &Path, workers: usize) -> (String, String) {
    let mut config = ReplayConfig::new(dir.join("events.jsonl"), dir.join("defs"));
    config.workers = workers;
    config.partitions = 16;
    config.progress = false;
    let out = replay::run(&config).expect("replay runs");
    let mut report = out.report.clone();
    report.elapsed_ms = 0;
    (
        messages_jsonl(&out),
        serde_json::to_string(&report).expect("report"),
    )
}

#[test]
fn replay_merges_identities_deterministically() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("defs")).expect("defs dir");
    std::fs::write(dir.path().join("defs/merge.yaml"), DEFS).expect("defs");
    std::fs::write(dir.path().join("events.jsonl"), events()).expect("events");

    let (messages, report) = run(dir.path(), 4);
    let sent: Vec<serde_json::Value> = messages
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();

    // Three views once merged: every known user gets the pricing touch, no anonymous id does.
    for n in 0..40 {
        let to_known = |body: &str| {
            sent.iter()
                .filter(|m| m["user_id"] == format!("user-{n}") && m["body"] == body)
                .count()
        };
        assert_eq!(
            to_known("Questions about pricing?"),
            1,
            "user-{n}: {sent:?}"
        );
        let onboarding = sent
            .iter()
            .filter(|m| m["user_id"] == format!("user-{n}") && m["journey"] == "onboarding")
            .count();
        assert_eq!(onboarding, usize::from(n % 2 == 0), "user-{n}");
    }
    assert!(
        sent.iter()
            .all(|m| !m["user_id"].as_str().unwrap_or("").starts_with("anon-")),
        "nothing goes to a merged id"
    );
    let named = sent
        .iter()
        .find(|m| m["user_id"] == "user-2" && m["journey"] == "onboarding")
        .expect("user-2 onboarding");
    assert_eq!(
        named["body"], "Day two, N2",
        "the moved journey renders the merged traits"
    );

    assert_eq!((messages.clone(), report.clone()), run(dir.path(), 1));
    assert_eq!((messages, report), run(dir.path(), 4));
}
