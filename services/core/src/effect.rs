//! What wakes a user's actor, and what an evaluation asks the world to do.
//!
//! The evaluator never performs anything itself: it returns [`Effect`]s, and the caller (an
//! actor in a service, or the replay driver) sets the timers, sends the messages and records the
//! decisions. That keeps every journey testable without a network.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::time::Ts;

/// Something that happened to a user: an event, or one of the user's timers coming due.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "trigger", rename_all = "snake_case")]
pub enum Trigger {
    Event(Event),
    Timer(Timer),
}

impl Trigger {
    /// The instant the trigger happened at: the event's time, or the timer's due time.
    pub fn at(&self) -> Ts {
        match self {
            Trigger::Event(e) => e.timestamp,
            Trigger::Timer(t) => t.due,
        }
    }
}

/// A durable timer of one journey instance. `id` is unique per user, so setting the same
/// timer twice creates one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub id: String,
    pub workspace: String,
    pub user: String,
    pub due: Ts,
    pub journey: String,
    pub instance: u64,
}

/// A rendered message on its way to a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMessage {
    /// Derived from (workspace, user, journey instance, step visit): a gateway that sees it
    /// twice delivers once.
    pub idempotency_key: String,
    pub workspace: String,
    pub user_id: String,
    pub journey: String,
    pub version: u32,
    pub step: String,
    pub channel: String,
    pub at: Ts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub body: String,
}

/// Why something did or did not happen to a user, kept for explanations and counted in stats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub at: Ts,
    pub journey: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub step: String,
    pub kind: DecisionKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// The user entered the journey.
    Entered,
    /// The entry trigger matched but a rule kept the user out.
    NotEntered,
    /// The user reached a step.
    Step,
    /// A message was rendered and handed to its channel.
    Sent,
    /// A message was not sent, and will not be.
    Skipped,
    /// The journey's goal happened: the user left, converted.
    ExitedOnGoal,
    /// An exit event or an exit step ended the journey.
    Exited,
    /// The user ran off the end of the journey.
    Completed,
}

impl fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            DecisionKind::Entered => "entered",
            DecisionKind::NotEntered => "not_entered",
            DecisionKind::Step => "step",
            DecisionKind::Sent => "sent",
            DecisionKind::Skipped => "skipped",
            DecisionKind::ExitedOnGoal => "exited_on_goal",
            DecisionKind::Exited => "exited",
            DecisionKind::Completed => "completed",
        };
        f.write_str(text)
    }
}

/// One thing the caller of the evaluator must do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    SetTimer(Timer),
    CancelTimer {
        workspace: String,
        user: String,
        id: String,
    },
    Send(OutboundMessage),
    Record(Decision),
}
