//! `beckon explain`: one user's decisions, in order, with their reasons.
//!
//! It replays the user's events from a file through the same evaluator the services use, on
//! a virtual clock. Users share no state, except where events tie ids of one person together
//! (a `userId` with an `anonymousId`, an alias's `previousId`): then the events of every id so
//! tied are replayed together, in file order, so merges happen as they do in a replay of the
//! whole file, and an id merged into another is explained as the user it was merged into, as
//! reading it through the services shows. Over an export of the services' log, which holds
//! the gateway's reports too, a sent message is followed by what became of it: deferred (with
//! the provider's answer), then sent, withdrawn or failed ([`beckon_core::delivery`]), and the
//! line of the send itself says `not_sent` when the message never went out.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use beckon_core::{Decision, DecisionKind, Duration, StateLimits, Ts};
use beckon_journey::{Engine, Sim};

use crate::input::EventLines;

/// What to explain and over which definitions.
pub struct ExplainConfig<'a> {
    pub user: &'a str,
    pub events: &'a Path,
    pub journeys: &'a Path,
    pub workspace: &'a str,
    /// How long virtual time runs on after the user's last event.
    pub drain: Duration,
    /// Bounds on the user's state, as the services are configured, so the explanation is of
    /// what they did.
    pub limits: StateLimits,
}

/// What an explanation found for one user.
#[derive(Debug, Default)]
pub struct Explained {
    /// The user's decisions, in the order they were made.
    pub decisions: Vec<Decision>,
    /// What bears on them without being one ([`Engine::notes`]).
    pub notes: Vec<String>,
}

/// The user's decisions and notes; `None` when no event of the file is the user's, so the
/// user is unknown (a known user may have no decisions).
pub fn explain(config: &ExplainConfig<'_>) -> anyhow::Result<Option<Explained>> {
    let defs = beckon_journey::load_definitions(config.journeys)
        .with_context(|| format!("loading definitions from {}", config.journeys.display()))?
        .for_workspace(config.workspace);
    let engine = Engine::from_definitions(defs).with_state_limits(config.limits);

    // First the ids tied to the user: only lines that name a second id can tie any.
    let mut ties = Ties::default();
    for_each_line(config.events, |line| {
        if !(line.contains("anonymousId") || line.contains("previousId")) {
            return;
        }
        if let Ok(event) = beckon_ingest::parse_line(line) {
            let other = match event.kind {
                beckon_core::EventKind::Alias => event.previous_id.as_deref(),
                _ => event.anonymous_id.as_deref(),
            };
            if let Some(other) = other.filter(|o| !o.is_empty()) {
                ties.join(&event.user, other);
            }
        }
    })?;
    let ids = ties.tied_to(config.user);

    let mut sim = Sim::new(&engine, config.workspace);
    let mut last = None;
    for_each_line(config.events, |line| {
        // A cheap filter first: most lines belong to other users.
        if !ids.iter().any(|id| line.contains(id.as_str())) {
            return;
        }
        let Ok(event) = beckon_ingest::parse_line(line) else {
            return;
        };
        if !ids.contains(&event.user) {
            return;
        }
        last = Some(last.map_or(event.timestamp, |l: Ts| l.max(event.timestamp)));
        sim.event(event);
    })?;
    let Some(last) = last else {
        return Ok(None);
    };
    sim.advance(last.saturating_add(config.drain));

    // The user the id is now: itself, or the user it was merged into (and so on).
    let mut user = config.user.to_string();
    for _ in 0..ids.len() {
        match sim.user(&user).and_then(|s| s.merged_into.clone()) {
            Some(into) if into != user => user = into,
            _ => break,
        }
    }
    let mut notes = Vec::new();
    if user != config.user {
        notes.push(format!(
            "{:?} was merged into {user:?}: these are {user:?}'s decisions",
            config.user
        ));
    }
    notes.extend(
        sim.user(&user)
            .map(|state| engine.notes(state))
            .unwrap_or_default(),
    );
    let decisions = sim
        .decisions
        .into_iter()
        .filter(|(id, _)| *id == user)
        .map(|(_, d)| d)
        .collect();
    Ok(Some(Explained { decisions, notes }))
}

/// Calls `each` with every line of the file that is text, read as replay reads it (a
/// compressed file, a byte-order mark at its start). A line that is not UTF-8 is no event of
/// anyone's; the next one may be. Anything else (a folder, a failing disk) would fail the
/// same way forever, and ends the reading.
fn for_each_line(path: &Path, each: impl FnMut(&str)) -> anyhow::Result<()> {
    // The file is read twice (ties first, then the user's events); a pipe could give its
    // lines only once.
    if path.as_os_str() == crate::input::STDIN {
        anyhow::bail!("explain reads the events twice, so it needs a file, not standard input");
    }
    EventLines::open(path)?.for_each_text(each)
}

/// Ids that events tie together as one person's, as sets that grow by joining.
#[derive(Default)]
struct Ties {
    parent: HashMap<String, String>,
}

impl Ties {
    fn root(&self, id: &str) -> String {
        let mut at = id.to_string();
        while let Some(up) = self.parent.get(&at).filter(|up| **up != at) {
            at = up.clone();
        }
        at
    }

    fn join(&mut self, a: &str, b: &str) {
        let (ra, rb) = (self.root(a), self.root(b));
        if ra != rb {
            self.parent.insert(ra, rb);
        }
    }

    /// The ids tied to `id`, `id` among them.
    fn tied_to(&self, id: &str) -> HashSet<String> {
        let root = self.root(id);
        let mut ids: HashSet<String> = self
            .parent
            .keys()
            .chain(self.parent.values())
            .filter(|x| self.root(x) == root)
            .cloned()
            .collect();
        ids.insert(id.to_string());
        ids
    }
}

/// One line per decision: time, what it is about, what happened, and why. A `sent` is told
/// by what the gateway later reported of its message ([`beckon_core::delivery::told`]).
pub fn render(decisions: &[Decision]) -> String {
    let mut out = String::new();
    let told = beckon_core::delivery::told(decisions);
    for (d, (kind, reason)) in decisions.iter().zip(told) {
        let about = match d.kind {
            DecisionKind::SegmentEntered | DecisionKind::SegmentLeft => {
                format!("segment {}", d.journey)
            }
            _ if d.step.is_empty() => format!("journey {}", d.journey),
            _ => format!("journey {} / {}", d.journey, d.step),
        };
        let _ = write!(out, "{}  {about:<40} {kind:<18}", d.at);
        if let Some(arm) = &d.arm {
            let _ = write!(out, " [{arm}]");
        }
        if !reason.is_empty() {
            let _ = write!(out, " {reason}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WELCOME: &str = "id: welcome\nversion: 1\nworkspace: default\nentry:\n  event: Signed \
        Up\nsteps:\n  - id: hello\n    message:\n      channel: push\n      body: Welcome\n";

    /// An export of the log: the user's sign-up, then the gateway's report that the push it
    /// sent was refused for good.
    const EXPORT: &str = concat!(
        r#"{"type":"track","userId":"u1","event":"Signed Up","messageId":"e1","#,
        r#""timestamp":"2026-06-01T10:00:00Z"}"#,
        "\n",
        r#"{"type":"track","userId":"u1","event":"Message Failed","messageId":"gw1","#,
        r#""timestamp":"2026-06-01T10:00:02Z","properties":{"idempotency_key":"#,
        r#""default:u1:welcome:0:hello:1","journey":"welcome","step":"hello","#,
        r#""channel":"push","instance":0,"reason":"invalid token","retryable":false}}"#,
        "\n",
    );

    #[test]
    fn a_message_the_gateway_refused_is_not_explained_as_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journeys = dir.path().join("welcome.yaml");
        let events = dir.path().join("export.jsonl");
        std::fs::write(&journeys, WELCOME).expect("journey");
        std::fs::write(&events, EXPORT).expect("events");

        let explained = explain(&ExplainConfig {
            user: "u1",
            events: &events,
            journeys: &journeys,
            workspace: "default",
            drain: Duration(0),
            limits: StateLimits::default(),
        })
        .expect("explains")
        .expect("a known user");
        let text = render(&explained.decisions);

        let send = text
            .lines()
            .find(|l| l.contains("journey welcome / hello") && l.contains("not_sent"))
            .unwrap_or_else(|| panic!("no not_sent line: {text}"));
        assert!(send.contains("push not delivered: invalid token"), "{send}");
        assert!(send.contains("2026-06-01T10:00:02"), "{send}");
        assert!(!text.contains(" sent "), "a line still says sent: {text}");
        assert!(
            text.lines()
                .any(|l| l.contains("delivery_failed") && l.contains("invalid token")),
            "{text}"
        );
    }
}
