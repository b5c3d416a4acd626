//! Counts per journey and step, built from decisions, plus who is waiting where now.
//!
//! Conversions are split by arm: users in a journey's holdout against everyone else (the
//! treatment), so the journey's effect is the difference between the two rates.

use std::collections::BTreeMap;

use beckon_core::{Decision, DecisionKind, HOLDOUT_ARM, UserState};
use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ArmStats {
    pub entered: u64,
    pub converted: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StepStats {
    /// Visits of the step.
    pub entered: u64,
    /// Users at the step now (waiting on a timer or an event).
    pub waiting: u64,
    pub sent: u64,
    pub skipped: u64,
    pub deferred: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JourneyStats {
    pub entered: u64,
    pub not_entered: u64,
    pub converted: u64,
    pub exited_on_goal: u64,
    pub exited: u64,
    pub completed: u64,
    pub holdout: ArmStats,
    pub treatment: ArmStats,
    pub steps: BTreeMap<String, StepStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SegmentStats {
    pub entered: u64,
    pub left: u64,
    /// Members now.
    pub members: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub journeys: BTreeMap<String, JourneyStats>,
    pub segments: BTreeMap<String, SegmentStats>,
}

impl Stats {
    pub fn decision(&mut self, d: &Decision) {
        // A merge moves users between ids; it is no step of a journey.
        if d.kind == DecisionKind::Merged {
            return;
        }
        if matches!(
            d.kind,
            DecisionKind::SegmentEntered | DecisionKind::SegmentLeft
        ) {
            let s = self.segments.entry(d.journey.clone()).or_default();
            match d.kind {
                DecisionKind::SegmentEntered => s.entered += 1,
                _ => s.left += 1,
            }
            return;
        }
        let j = self.journeys.entry(d.journey.clone()).or_default();
        let holdout = d.arm.as_deref() == Some(HOLDOUT_ARM);
        let arm = if holdout {
            &mut j.holdout
        } else {
            &mut j.treatment
        };
        match d.kind {
            DecisionKind::Entered => {
                j.entered += 1;
                arm.entered += 1;
            }
            DecisionKind::Converted => {
                j.converted += 1;
                arm.converted += 1;
            }
            DecisionKind::NotEntered => j.not_entered += 1,
            DecisionKind::ExitedOnGoal => j.exited_on_goal += 1,
            DecisionKind::Exited => j.exited += 1,
            DecisionKind::Completed => j.completed += 1,
            DecisionKind::Step => j.steps.entry(d.step.clone()).or_default().entered += 1,
            DecisionKind::Sent => j.steps.entry(d.step.clone()).or_default().sent += 1,
            DecisionKind::Skipped => j.steps.entry(d.step.clone()).or_default().skipped += 1,
            DecisionKind::Deferred => j.steps.entry(d.step.clone()).or_default().deferred += 1,
            // What became of a sent message is the gateway's to count.
            DecisionKind::SegmentEntered
            | DecisionKind::SegmentLeft
            | DecisionKind::Merged
            | DecisionKind::DeliveryDeferred
            | DecisionKind::DeliveredLater
            | DecisionKind::DeliveryWithdrawn
            | DecisionKind::DeliveryFailed => {}
        }
    }

    /// Adds where a user stands now: the step each instance waits at, segment memberships.
    pub fn state(&mut self, state: &UserState) {
        for inst in &state.journeys {
            let j = self.journeys.entry(inst.journey.clone()).or_default();
            j.steps.entry(inst.step.clone()).or_default().waiting += 1;
        }
        for (id, m) in &state.segments {
            if m.member {
                self.segments.entry(id.clone()).or_default().members += 1;
            }
        }
    }
}
