//! `beckon explain`: one user's decisions, in order, with their reasons.
//!
//! It replays the user's events from a file through the same evaluator the services use, on
//! a virtual clock, with no other user's events: users never share state, so what happened to
//! one user does not depend on anyone else. Over an export of the services' log, which holds
//! the gateway's reports too, a sent message is followed by what became of it: deferred (with
//! the provider's answer), then sent, withdrawn or failed ([`beckon_core::delivery`]).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::Context as _;
use beckon_core::{Decision, DecisionKind, Duration, Ts};
use beckon_journey::{Engine, Sim};

/// What to explain and over which definitions.
pub struct ExplainConfig<'a> {
    pub user: &'a str,
    pub events: &'a Path,
    pub journeys: &'a Path,
    pub workspace: &'a str,
    /// How long virtual time runs on after the user's last event.
    pub drain: Duration,
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
    let engine = Engine::from_definitions(defs);
    let file = std::fs::File::open(config.events)
        .with_context(|| format!("opening {}", config.events.display()))?;

    let mut sim = Sim::new(&engine, config.workspace);
    let mut last = None;
    for line in BufReader::new(file).lines() {
        let line = match line {
            Ok(line) => line,
            // A line that is not UTF-8 is no event of anyone's; the next one may be.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => continue,
            // Anything else (a directory, a failing disk) would fail the same way forever.
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", config.events.display()));
            }
        };
        // A cheap filter first: most lines belong to other users.
        if !line.contains(config.user) {
            continue;
        }
        let Ok(event) = beckon_ingest::parse_line(&line) else {
            continue;
        };
        if event.user != config.user {
            continue;
        }
        last = Some(last.map_or(event.timestamp, |l: Ts| l.max(event.timestamp)));
        sim.event(event);
    }
    let Some(last) = last else {
        return Ok(None);
    };
    sim.advance(last.saturating_add(config.drain));
    let notes = sim
        .user(config.user)
        .map(|state| engine.notes(state))
        .unwrap_or_default();
    let decisions = sim.decisions.into_iter().map(|(_, d)| d).collect();
    Ok(Some(Explained { decisions, notes }))
}

/// One line per decision: time, what it is about, what happened, and why.
pub fn render(decisions: &[Decision]) -> String {
    let mut out = String::new();
    for d in decisions {
        let about = match d.kind {
            DecisionKind::SegmentEntered | DecisionKind::SegmentLeft => {
                format!("segment {}", d.journey)
            }
            _ if d.step.is_empty() => format!("journey {}", d.journey),
            _ => format!("journey {} / {}", d.journey, d.step),
        };
        let _ = write!(out, "{}  {about:<40} {:<18}", d.at, d.kind.to_string());
        if let Some(arm) = &d.arm {
            let _ = write!(out, " [{arm}]");
        }
        if !d.reason.is_empty() {
            let _ = write!(out, " {}", d.reason);
        }
        out.push('\n');
    }
    out
}
