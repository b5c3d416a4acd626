//! Helpers for Beckon's end-to-end tests: building Segment-spec event files and replaying them
//! through the engine with the shipped example journeys.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use beckon::replay::{self, ReplayConfig, ReplayOutcome};
use beckon_core::{Duration, OutboundMessage, Ts};
use serde_json::{Value, json};

/// The folder of the example journeys shipped with the project.
pub fn example_journeys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/journeys")
}

/// The shared public event logs, when they are present beside the checkout.
pub fn shared_data(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(name);
    p.exists().then_some(p)
}

/// A virtual instant: `minutes` after 2026-03-02T09:00:00Z.
pub fn at(minutes: i64) -> Ts {
    Ts(1_772_442_000_000 + minutes * 60_000)
}

/// Builds a Segment-spec JSON-lines file.
#[derive(Default)]
pub struct Events {
    lines: Vec<String>,
}

impl Events {
    pub fn new() -> Events {
        Events::default()
    }

    pub fn track(mut self, user: &str, event: &str, when: Ts, props: Value) -> Events {
        let id = format!("t-{}", self.lines.len());
        self.lines.push(
            json!({"type": "track", "userId": user, "event": event, "properties": props,
                   "messageId": id, "timestamp": when.to_string()})
            .to_string(),
        );
        self
    }

    pub fn identify(mut self, user: &str, when: Ts, traits: Value) -> Events {
        let id = format!("i-{}", self.lines.len());
        self.lines.push(
            json!({"type": "identify", "userId": user, "traits": traits,
                   "messageId": id, "timestamp": when.to_string()})
            .to_string(),
        );
        self
    }

    /// Adds a line exactly as given, valid or not.
    pub fn raw(mut self, line: &str) -> Events {
        self.lines.push(line.to_string());
        self
    }

    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("events.jsonl");
        let mut f = std::fs::File::create(&path).expect("create events file");
        for l in &self.lines {
            writeln!(f, "{l}").expect("write events file");
        }
        path
    }
}

/// Replays `events` through the example journeys, letting virtual time run 7 days past the
/// last event.
pub fn replay_examples(events: &Events) -> ReplayOutcome {
    replay_with(events, &example_journeys(), Duration::hours(7 * 24))
}

pub fn replay_with(events: &Events, journeys: &Path, drain: Duration) -> ReplayOutcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = events.write(dir.path());
    let mut config = ReplayConfig::new(path, journeys.to_path_buf());
    config.drain = drain;
    config.progress = false;
    replay::run(&config).expect("replay runs")
}

/// The messages of one journey for one user, in send order.
pub fn sent<'a>(out: &'a ReplayOutcome, user: &str, journey: &str) -> Vec<&'a OutboundMessage> {
    out.messages
        .iter()
        .filter(|m| m.user_id == user && m.journey == journey)
        .collect()
}

/// The `--messages` file content for an outcome.
pub fn messages_jsonl(out: &ReplayOutcome) -> String {
    out.messages
        .iter()
        .map(|m| replay::message_json(m).to_string() + "\n")
        .collect()
}

/// The folder of one shipped behaviour example, e.g. `05-pricing-intent`.
pub fn behaviour_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/behaviours")
        .join(name)
}

/// An engine with the definitions of one shipped behaviour example.
pub fn behaviour_engine(name: &str) -> beckon_journey::Engine {
    let defs = beckon_journey::load_definitions(&behaviour_dir(name)).expect("example loads");
    beckon_journey::Engine::from_definitions(defs.for_workspace("default"))
}

/// An engine from specs written inline in a test.
pub fn engine_from_yaml(yaml: &str) -> beckon_journey::Engine {
    let defs = beckon_journey::load_definitions_str("inline.yaml", yaml)
        .unwrap_or_else(|e| panic!("specs load: {}", e[0]));
    beckon_journey::Engine::from_definitions(defs)
}

/// A virtual instant `ms` milliseconds after [`at`]`(0)`.
pub fn at_ms(ms: i64) -> Ts {
    Ts(at(0).0 + ms)
}

/// Parses an RFC 3339 instant in a test.
pub fn utc(text: &str) -> Ts {
    Ts::parse_rfc3339(text).expect("valid timestamp")
}

/// The decisions that skipped a message for `user`, as `beckon explain` gives them for the
/// events at `events` and the specs in `journeys`.
pub fn skipped_decisions(user: &str, events: &Path, journeys: &Path) -> Vec<beckon_core::Decision> {
    let config = beckon::explain::ExplainConfig {
        user,
        events,
        journeys,
        workspace: "default",
        drain: Duration::hours(1),
        limits: Default::default(),
    };
    beckon::explain::explain(&config)
        .expect("explains")
        .expect("the user is in the file")
        .decisions
        .into_iter()
        .filter(|d| d.kind == beckon_core::DecisionKind::Skipped)
        .collect()
}
