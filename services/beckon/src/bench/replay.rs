//! Replay throughput on an event file, beside parsing the same file alone.

use std::time::Instant;

use super::{BenchArgs, Scale, TARGET_REPLAY_EVENTS_PER_SEC, figure, section};
use crate::input::EventLines;
use crate::replay::{self, ReplayConfig};

pub fn replay(args: &BenchArgs, scale: &Scale) -> anyhow::Result<()> {
    section(&format!("replay {}", args.events.display()));

    // Reference: reading and validating every line, with no state, journeys or timers.
    // The file is read as the replay reads it, compressed or not.
    let start = Instant::now();
    let mut parsed = 0u64;
    EventLines::open(&args.events)?.for_each_text(|line| {
        if beckon_ingest::parse_line(line).is_ok() {
            parsed += 1;
        }
    })?;
    let parse_rate = parsed as f64 / start.elapsed().as_secs_f64();
    figure("reference: parse only", parse_rate, "events/s", None);

    let mut config = ReplayConfig::new(args.events.clone(), args.journeys.clone());
    config.progress = false;
    // A quick run still replays the whole file (it is small); it only skips the repeat.
    let rounds = if scale.quick { 1 } else { 3 };
    let mut best = 0.0f64;
    let mut messages = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        let outcome = replay::run(&config)?;
        let rate = outcome.report.events.applied as f64 / start.elapsed().as_secs_f64();
        best = best.max(rate);
        messages = outcome.messages.len();
    }
    figure(
        &format!("replay (best of {rounds}, {messages} messages)"),
        best,
        "events/s",
        Some((parse_rate, "parse only")),
    );
    figure(
        "replay against target",
        best,
        "events/s",
        Some((TARGET_REPLAY_EVENTS_PER_SEC, "target 250,000/s")),
    );
    Ok(())
}
