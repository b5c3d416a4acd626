//! What wakes a user's actor, and what an evaluation asks the world to do.
//!
//! The evaluator never performs anything itself: it returns [`Effect`]s, and the caller (an
//! actor in a service, or the replay driver) sets the timers, sends the messages and records the
//! decisions. That keeps every journey testable without a network.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::{Event, Props};
use crate::state::UserState;
use crate::time::Ts;

/// Something that happened to a user: an event, one of the user's timers coming due, a
/// backend asking for the user to enter a journey, one step of merging two ids of the same
/// person (see [`MergeOut`] and [`MergeIn`]), or the order to forget the user ([`Forget`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "trigger", rename_all = "snake_case")]
pub enum Trigger {
    Event(Event),
    Timer(Timer),
    Api(ApiEntry),
    MergeOut(MergeOut),
    MergeIn(MergeIn),
    Forget(Forget),
}

impl Trigger {
    /// The instant the trigger happened at: the event's time, the timer's due time, the time
    /// the API call was accepted, or the time of the event that asked for a merge.
    pub fn at(&self) -> Ts {
        match self {
            Trigger::Event(e) => e.timestamp,
            Trigger::Timer(t) => t.due,
            Trigger::Api(a) => a.at,
            Trigger::MergeOut(m) => m.at,
            Trigger::MergeIn(m) => m.at,
            Trigger::Forget(f) => f.at,
        }
    }

    /// The user whose actor the trigger is for; its partition is the user's partition.
    pub fn user(&self) -> &str {
        match self {
            Trigger::Event(e) => &e.user,
            Trigger::Timer(t) => &t.user,
            Trigger::Api(a) => &a.user,
            Trigger::MergeOut(m) => &m.user,
            Trigger::MergeIn(m) => &m.user,
            Trigger::Forget(f) => &f.user,
        }
    }
}

/// First step of a merge, for the id being merged away (`user`, usually an anonymous id):
/// hand your state over to `into` and forward whatever comes for you later.
///
/// The known user's side asks for it when an event names both ids; it travels through the
/// partition log of `user`, since the two ids usually live in different partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeOut {
    pub user: String,
    pub into: String,
    pub at: Ts,
    /// The message id of the event that asked for the merge.
    pub cause: String,
}

/// Second step of a merge, for the known user (`user`): take over `from`'s state, a copy
/// taken when `from` became a forwarding tombstone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergeIn {
    pub user: String,
    pub from: String,
    pub at: Ts,
    pub cause: String,
    pub snapshot: Box<UserState>,
}

/// The order to forget `user` (right to be forgotten), placed in the user's partition log so
/// it takes effect in log order: whatever holds the user then (a live actor, a hibernated
/// record, local timers) lets go of it, and the next trigger for the id starts from an empty
/// user. `at` is when the order was accepted; it is kept for the record and moves no clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forget {
    pub user: String,
    pub at: Ts,
}

/// "Put this user into this journey now", from a backend (an order service sending a receipt
/// flow, say). The journey's entry must allow API entry; its re-entry rules still apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiEntry {
    pub journey: String,
    pub user: String,
    pub at: Ts,
    /// Available to templates and key matching like an entry event's properties.
    #[serde(default, skip_serializing_if = "Props::is_empty")]
    pub properties: Props,
}

/// Prefix of segment timer ids. It holds a character journey ids may not contain, so a
/// segment timer can never collide with a journey instance's timer.
pub const SEGMENT_TIMER_PREFIX: &str = "@segment:";

/// What a timer wakes up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// A step of a journey instance: a delay, a wait timeout, a local-time wait, a deferred
    /// send.
    Journey,
    /// A segment whose truth can change by time alone at `due` (a window slides, an
    /// inactivity period ends). `journey` holds the segment id.
    Segment,
}

/// A durable timer. `id` is unique per user, so setting the same timer twice creates one.
///
/// The id also says what the timer is for (see [`Timer::kind`]): the stored shape stays the
/// same for every kind, so stores and the scheduler need not know about kinds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub id: String,
    pub workspace: String,
    pub user: String,
    pub due: Ts,
    /// The journey id, or the segment id of a segment timer.
    pub journey: String,
    pub instance: u64,
    /// W3C trace context of the work that set the timer (`traceparent[ tracestate]`), so the
    /// span of its firing can link back to it. Not part of the timer's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

impl Timer {
    pub fn kind(&self) -> TimerKind {
        if self.id.starts_with(SEGMENT_TIMER_PREFIX) {
            TimerKind::Segment
        } else {
            TimerKind::Journey
        }
    }

    /// The timer that re-evaluates `segment` for a user at `due`. One per user and segment:
    /// setting it again moves it.
    pub fn segment(workspace: &str, user: &str, segment: &str, due: Ts) -> Timer {
        Timer {
            id: format!("{SEGMENT_TIMER_PREFIX}{segment}"),
            workspace: workspace.to_string(),
            user: user.to_string(),
            due,
            journey: segment.to_string(),
            instance: 0,
            trace: None,
        }
    }
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
    /// The journey instance that sent it, when known: a message still waiting for its
    /// provider when the user reaches the journey's goal or an exit rule is no longer sent,
    /// even when the instance had already completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u64>,
    pub step: String,
    pub channel: String,
    pub at: Ts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub body: String,
    /// Where it goes, as the user's state held it when the message was made; `None` leaves
    /// the gateway to look the user up. Never written out with the message (files, retry
    /// queue): a later attempt looks up the address as it stands then.
    #[serde(skip)]
    pub to: Option<Contacts>,
}

/// The addresses a message's channel needs, taken from the user's state when the message was
/// made. The stored state may not hold them yet: a batch's messages are sent before its users
/// are written, so an identify and the event it enables can share a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contacts {
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Device tokens by platform, in registration order.
    pub devices: Vec<(String, Vec<String>)>,
}

impl Contacts {
    /// The tokens of `platform`, if any are known here.
    pub fn tokens(&self, platform: &str) -> Option<&[String]> {
        self.devices
            .iter()
            .find(|(p, tokens)| p == platform && !tokens.is_empty())
            .map(|(_, tokens)| tokens.as_slice())
    }
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
    /// The journey instance the decision is about; 0 for segments and refused entries.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub instance: u64,
    /// The arm of a split or holdout the instance is in, for comparing conversions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The arm name of users kept out of a journey to measure its effect.
pub const HOLDOUT_ARM: &str = "holdout";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// The user entered the journey.
    Entered,
    /// The entry trigger matched but a rule kept the user out.
    NotEntered,
    /// The user reached a step.
    Step,
    /// A message was rendered and handed to its channel. What became of it there is noted
    /// later, when the gateway's report of it comes back ([`crate::delivery`]).
    Sent,
    /// A message was not sent, and will not be.
    Skipped,
    /// The journey's goal happened: the user left, converted.
    ExitedOnGoal,
    /// An exit event or an exit step ended the journey.
    Exited,
    /// The user ran off the end of the journey.
    Completed,
    /// A message was held back (frequency cap, quiet hours, send window) and will be tried
    /// again at a later instant named in the reason.
    Deferred,
    /// The goal happened within the attribution window of an entry (while in the journey or
    /// after leaving it).
    Converted,
    /// The user became a member of a segment; `journey` holds the segment id.
    SegmentEntered,
    /// The user stopped being a member of a segment; `journey` holds the segment id.
    SegmentLeft,
    /// Another id of the same person was merged into the user (or, on the other id's side,
    /// the user was merged away); `journey` is empty.
    Merged,
    /// A sent message's provider could not take it now; it waits in the gateway's retry
    /// queue. The reason holds the provider's answer.
    DeliveryDeferred,
    /// A message that had waited in the gateway's retry queue went out.
    DeliveredLater,
    /// A message that waited in the gateway's retry queue was dropped unsent: the user
    /// reached the journey's goal or an exit rule after its instance was entered.
    DeliveryWithdrawn,
    /// A sent message will not be delivered: refused for good, nobody to send it to, or
    /// given up on by the gateway's retry queue.
    DeliveryFailed,
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
            DecisionKind::Deferred => "deferred",
            DecisionKind::Converted => "converted",
            DecisionKind::SegmentEntered => "segment_entered",
            DecisionKind::SegmentLeft => "segment_left",
            DecisionKind::Merged => "merged",
            DecisionKind::DeliveryDeferred => "delivery_deferred",
            DecisionKind::DeliveredLater => "delivered_later",
            DecisionKind::DeliveryWithdrawn => "delivery_withdrawn",
            DecisionKind::DeliveryFailed => "delivery_failed",
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
    /// Append `trigger` to the partition log of its user. `key` makes the append idempotent:
    /// a trigger forwarded again under the same key (a retried batch) is appended once.
    Forward {
        key: String,
        trigger: Trigger,
    },
}
