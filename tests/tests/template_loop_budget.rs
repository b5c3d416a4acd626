//! A template whose loop runs on a user's trait spends the render's loop budget and no more:
//! the message is skipped with its reason, and the partition goes on to the next user's event.

use beckon::replay::{self, ReplayConfig};
use beckon_core::Duration;
use beckon_tests::{Events, at, sent, skipped_decisions};
use serde_json::json;

/// A welcome whose copy loops as many times as the user's `n` says.
const COUNTDOWN: &str = "\
id: countdown
version: 1
workspace: default
entry:
  event: Signed Up
steps:
  - id: hello
    message:
      channel: push
      body: \"{% for i in (1..user.n) %}{% endfor %}Welcome, {{ user.name }}\"
";

#[test]
fn a_loop_on_a_huge_trait_skips_its_message_and_the_partition_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("countdown.yaml"), COUNTDOWN).expect("journey");
    let events = Events::new()
        .identify(
            "heavy",
            at(0),
            json!({"n": 1_000_000_000_i64, "name": "Hal"}),
        )
        .track("heavy", "Signed Up", at(1), json!({}))
        .identify("light", at(2), json!({"n": 3, "name": "Lu"}))
        .track("light", "Signed Up", at(3), json!({}));
    let path = events.write(dir.path());

    // One partition on one worker: the second user's event waits behind the first's.
    let mut config = ReplayConfig::new(path.clone(), dir.path().to_path_buf());
    config.partitions = 1;
    config.workers = 1;
    config.progress = false;
    config.drain = Duration::hours(1);
    let out = replay::run(&config).expect("replay runs");

    assert!(sent(&out, "heavy", "countdown").is_empty());
    let light: Vec<&str> = sent(&out, "light", "countdown")
        .iter()
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(light, ["Welcome, Lu"]);
    let journey = out.report.journeys.iter().find(|j| j.id == "countdown");
    assert_eq!(journey.map(|j| j.skipped_messages), Some(1));

    // The skipped message's reason, as `beckon explain` shows it.
    let decisions = skipped_decisions("heavy", &path, dir.path());
    let skipped: Vec<&str> = decisions.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(
        skipped,
        ["not sent: the template's loops ran more than 100000 iterations in all"]
    );
}
