//! Templates that would make gigabytes, a string doubled by `assign`, a `capture` that grows
//! on each pass of a loop, a `join` of a long list by a long separator, stop at the bound of
//! one value: each message is skipped with its reason, the process holds a few megabytes for
//! them rather than gigabytes, and the partition goes on to the next user's event.

use beckon::replay::{self, ReplayConfig};
use beckon_core::Duration;
use beckon_tests::{Events, at, sent, skipped_decisions};
use serde_json::json;

/// A journey sending one push at sign-up, whose copy is `body`.
fn journey(id: &str, body: &str) -> String {
    format!(
        "id: {id}\nversion: 1\nworkspace: default\nentry:\n  event: Signed Up\nsteps:\n  \
         - id: hello\n    message:\n      channel: push\n      body: '{body}'\n"
    )
}

/// Each copy works as many times as the user's `n` (or `k`) says, on the user's `seed`.
const JOURNEYS: [(&str, &str); 3] = [
    (
        "doubling",
        "{% assign s = user.seed %}{% for i in (1..user.n) %}{% assign s = s | append: s %}\
         {% endfor %}{{ s.size }}",
    ),
    (
        "capturing",
        "{% for i in (1..user.n) %}{% capture c %}{{ c }}{{ c }}{{ user.seed }}{% endcapture %}\
         {% endfor %}{{ c.size }}",
    ),
    (
        "joining",
        "{% assign s = user.seed %}{% for i in (1..user.k) %}{% assign s = s | append: s %}\
         {% endfor %}{% assign parts = s | split: \"\" %}{{ parts | join: s | size }}",
    ),
];

/// The peak resident memory of this process, in bytes, as Linux reports it.
fn peak_memory() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("process status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in kB");
    kib * 1024
}

#[test]
fn values_past_their_bound_skip_their_messages_and_the_partition_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (id, body) in JOURNEYS {
        std::fs::write(dir.path().join(format!("{id}.yaml")), journey(id, body)).expect("journey");
    }
    // 40 doublings of "ab" are two tebibytes; 13 give some 16,000 parts to join by 16,384
    // characters, a quarter of a gigabyte.
    let events = Events::new()
        .identify("heavy", at(0), json!({"n": 40, "k": 13, "seed": "ab"}))
        .track("heavy", "Signed Up", at(1), json!({}))
        .identify("light", at(2), json!({"n": 2, "k": 2, "seed": "ab"}))
        .track("light", "Signed Up", at(3), json!({}));
    let path = events.write(dir.path());

    // One partition on one worker: the second user's event waits behind the first's.
    let mut config = ReplayConfig::new(path.clone(), dir.path().to_path_buf());
    config.partitions = 1;
    config.workers = 1;
    config.progress = false;
    config.drain = Duration::hours(1);
    let out = replay::run(&config).expect("replay runs");

    for (id, light) in [("doubling", "8"), ("capturing", "6"), ("joining", "80")] {
        assert!(sent(&out, "heavy", id).is_empty(), "{id}");
        let bodies: Vec<&str> = sent(&out, "light", id)
            .iter()
            .map(|m| m.body.as_str())
            .collect();
        assert_eq!(bodies, [light], "{id}");
        let journey = out.report.journeys.iter().find(|j| j.id == id);
        assert_eq!(journey.map(|j| j.skipped_messages), Some(1), "{id}");
    }
    let peak = peak_memory();
    assert!(peak < 512 << 20, "the process reached {peak} bytes");

    // The skipped messages' reasons, as `beckon explain` shows them.
    let decisions = skipped_decisions("heavy", &path, dir.path());
    let mut skipped: Vec<(&str, &str)> = decisions
        .iter()
        .map(|d| (d.journey.as_str(), d.reason.as_str()))
        .collect();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            (
                "capturing",
                "not sent: capture c makes a value longer than 1048576 bytes"
            ),
            (
                "doubling",
                "not sent: filter append makes a value longer than 1048576 bytes"
            ),
            (
                "joining",
                "not sent: filter join makes a value longer than 1048576 bytes"
            ),
        ]
    );
}
