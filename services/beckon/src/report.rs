//! The replay report and its summary table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// What became of the lines read: each non-blank line is applied, a duplicate, or rejected,
/// so `read = applied + duplicates + rejected`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EventCounts {
    pub read: u64,
    pub applied: u64,
    /// Events whose message id an earlier line had: applied once, as ingest does with a
    /// client's retry. Not a fault of the line, so not among the rejections.
    pub duplicates: u64,
    /// Lines refused as bad input, with the reasons and the first line numbers below.
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// The first rejected lines, with their line numbers (1-based) and reasons.
    pub rejected_lines: Vec<RejectedLine>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RejectedLine {
    pub line: u64,
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct StepReport {
    pub id: String,
    pub entered: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct JourneyReport {
    pub id: String,
    pub version: u32,
    pub entered: u64,
    pub not_entered: u64,
    pub exited_on_goal: u64,
    pub exited: u64,
    pub completed: u64,
    pub skipped_messages: u64,
    pub messages: BTreeMap<String, u64>,
    pub steps: Vec<StepReport>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TimerCounts {
    pub set: u64,
    pub fired: u64,
    pub pending: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub events: EventCounts,
    pub users: u64,
    pub journeys: Vec<JourneyReport>,
    pub timers: TimerCounts,
    /// Virtual time covered: the first event and the time replay stopped at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_until: Option<String>,
    pub elapsed_ms: u64,
}

impl Report {
    /// A fixed-width table for people reading a terminal or a CI log.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let e = &self.events;
        let rate = if self.elapsed_ms > 0 {
            e.read as f64 * 1000.0 / self.elapsed_ms as f64
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "events: {} read, {} applied, {} duplicates, {} rejected; {} users; {} ms \
             ({:.0} events/s)",
            e.read, e.applied, e.duplicates, e.rejected, self.users, self.elapsed_ms, rate
        );
        for (reason, n) in &e.rejected_by_reason {
            let _ = writeln!(out, "  rejected {reason}: {n}");
        }
        let _ = writeln!(
            out,
            "timers: {} set, {} fired, {} pending",
            self.timers.set, self.timers.fired, self.timers.pending
        );
        let _ = writeln!(
            out,
            "{:<22} {:>8} {:>8} {:>8} {:>9}  messages",
            "journey", "entered", "goal", "exited", "completed"
        );
        for j in &self.journeys {
            let msgs: Vec<String> = j.messages.iter().map(|(c, n)| format!("{c}={n}")).collect();
            let _ = writeln!(
                out,
                "{:<22} {:>8} {:>8} {:>8} {:>9}  {}",
                j.id,
                j.entered,
                j.exited_on_goal,
                j.exited,
                j.completed,
                if msgs.is_empty() {
                    "-".to_string()
                } else {
                    msgs.join(" ")
                }
            );
        }
        out
    }
}
