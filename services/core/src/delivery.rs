//! What became of a sent message, as its user's decisions tell it.
//!
//! The evaluator records `sent` when it hands a message to its channel; whether the provider
//! took it is known only later, in the gateway, often in another process. The gateway reports
//! what it did with a message as events of the message's user, through the same log as every
//! other event, and applying one of the reports named here adds a note to the user's
//! decisions, next to the `sent` it is about:
//!
//! | event | decision | what it says |
//! | --- | --- | --- |
//! | `Message Deferred` | `delivery_deferred` | kept in the retry queue, and the reason |
//! | `Deferred Message Sent` | `delivered_later` | the retry queue sent it |
//! | `Message Withdrawn` | `delivery_withdrawn` | dropped unsent: its journey ended |
//! | `Message Failed` | `delivery_failed` | refused for good, or given up on |
//!
//! So `beckon explain` over a log export, and the UserState `Explain` call, show a deferred
//! message as deferred and, once it is settled, how. They tell the `sent` itself by what
//! became of its message too ([`told`]): a message the gateway refused, gave up on or
//! withdrew was handed over but never sent, and its line says `not_sent` and why. A report is
//! applied once, like any event (by its id), and only the gateway's own reports count: they
//! carry the message's `idempotency_key`, `journey` and `step`, and reach the log only by the
//! gateway's own path (appended in process, or through ingest's `AppendOutcome`), since
//! ingest's public calls refuse these names ([`reserved_for_gateway`]).
//!
//! One report changes the user's traits rather than their decisions: `Message Unsubscribed`
//! with a `channel` property sets `<channel>_opt_out: true` ([`apply_unsubscribe`]), the trait
//! the consent check reads at send time, so a user who unsubscribed through a message's link
//! or an app gets nothing more on that channel. Any such event counts, a report of the
//! gateway's or one sent to ingest directly: unsubscribing is the user's word, whoever
//! carries it.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use crate::effect::{Decision, DecisionKind};
use crate::event::{Event, EventKind};
use crate::state::UserState;

/// The message will not be delivered: refused for good, nobody to send it to, or given up on
/// by the retry queue.
pub const MESSAGE_FAILED: &str = "Message Failed";
/// The provider could not take the message now; it waits in the gateway's retry queue.
pub const MESSAGE_DEFERRED: &str = "Message Deferred";
/// A message that waited in the gateway's retry queue went out.
pub const DEFERRED_MESSAGE_SENT: &str = "Deferred Message Sent";
/// A message that waited in the gateway's retry queue was dropped unsent.
pub const MESSAGE_WITHDRAWN: &str = "Message Withdrawn";

/// The user unsubscribed from a channel: an app or an email's unsubscribe link said so.
pub const MESSAGE_UNSUBSCRIBED: &str = "Message Unsubscribed";

/// A provider took the message.
pub const MESSAGE_SENT: &str = "Message Sent";
/// The provider reports the message reached the device or mailbox.
pub const MESSAGE_DELIVERED: &str = "Message Delivered";
/// The user opened the message (an inbox message marked read, a push tapped).
pub const MESSAGE_OPENED: &str = "Message Opened";
/// The user followed a link of the message.
pub const MESSAGE_CLICKED: &str = "Message Clicked";

/// The names of the events a gateway reports about the messages it was given.
pub const OUTCOME_NAMES: [&str; 10] = [
    MESSAGE_SENT,
    MESSAGE_FAILED,
    MESSAGE_DEFERRED,
    DEFERRED_MESSAGE_SENT,
    MESSAGE_WITHDRAWN,
    crate::devices::DEVICE_TOKEN_INVALID,
    MESSAGE_DELIVERED,
    MESSAGE_OPENED,
    MESSAGE_CLICKED,
    MESSAGE_UNSUBSCRIBED,
];

/// Whether the event is an outcome of a message Beckon sent, as a gateway reports it: one of
/// the outcome names, carrying the message's `idempotency_key`. Such an event follows from a
/// message, and so from a user's state; it is dated when the outcome happened, which may be
/// long after the send (retries, a provider's callback, an app's offline queue).
///
/// The name and property say what the event claims to be, not who sent it: ingest takes
/// such claims only on the gateway's own path ([`reserved_for_gateway`]).
pub fn is_outcome(event: &Event) -> bool {
    OUTCOME_NAMES.contains(&event.name.as_str()) && event.properties.contains_key("idempotency_key")
}

/// Whether only a gateway may report events of this name: every outcome name but
/// `Message Unsubscribed`, however it is written ([`reserved_name`]). Journeys wait for these
/// names, explanations tell sends by them and a `Device Token Invalid` removes a device, so
/// one sent by anyone else would forge what became of a message; ingest's public calls refuse
/// them. An unsubscribe is the user's word whoever carries it, so it is taken from anyone.
pub fn reserved_for_gateway(name: &str) -> bool {
    reserved_name(name).is_some()
}

/// The name reserved for the gateway's reports that `name` reads as, if any: the same
/// letters in any case, with any white space around them (`message opened`, `Message Opened `
/// read as `Message Opened`). That is how opt-out answers are read ([`says_opted_out`]), and
/// templates name earlier events without regard to case (`last.message_opened`).
///
/// Events still match journeys by their exact name, and the gateway writes its reports
/// exactly so. The looser reading is for the reservation alone: a name a person takes for a
/// report is refused from clients as the report itself would be, rather than passing as an
/// ordinary event that looks like one in a log or an explanation.
pub fn reserved_name(name: &str) -> Option<&'static str> {
    let name = name.trim();
    OUTCOME_NAMES
        .into_iter()
        .filter(|reserved| *reserved != MESSAGE_UNSUBSCRIBED)
        .find(|reserved| reserved.eq_ignore_ascii_case(name))
}

/// Whether an opt-out trait's value (`unsubscribed`, `<channel>_opt_out`) says the user opted
/// out. Besides `true`, the forms sources commonly send for it count: the text `true`, `yes`,
/// `y`, `on` or `1` in any case, and a number other than 0. An unclear answer errs towards
/// not sending.
pub fn says_opted_out(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => {
            let s = s.trim();
            ["true", "yes", "y", "on", "1"]
                .iter()
                .any(|yes| s.eq_ignore_ascii_case(yes))
        }
        _ => false,
    }
}

/// Whether a `consent` map's entry for a channel withholds consent: `false`, or the text
/// `false`, `no`, `n`, `off` or `0` in any case, or the number 0.
pub fn says_no_consent(value: &Value) -> bool {
    match value {
        Value::Bool(b) => !*b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => {
            let s = s.trim();
            ["false", "no", "n", "off", "0"]
                .iter()
                .any(|no| s.eq_ignore_ascii_case(no))
        }
        _ => false,
    }
}

/// Applies a `Message Unsubscribed` event: sets `<channel>_opt_out: true` as of the event's
/// time, as an identify would, so a later identify saying `false` subscribes the user again.
/// Returns true when the event was one with a channel. An event without a `channel` property,
/// or with one not shaped like a channel name (lowercase letters, digits and `_`, at most 32),
/// changes nothing: the trait name must not grow from whatever text the event carries.
pub fn apply_unsubscribe(state: &mut UserState, event: &Event) -> bool {
    if event.kind != EventKind::Track || event.name != MESSAGE_UNSUBSCRIBED {
        return false;
    }
    let Some(channel) = event.properties.get("channel").and_then(Value::as_str) else {
        return false;
    };
    let shaped = !channel.is_empty()
        && channel.len() <= 32
        && channel
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !shaped {
        return false;
    }
    state.set_trait(
        &format!("{channel}_opt_out"),
        Value::Bool(true),
        event.timestamp,
    );
    true
}

/// The note a delivery report leaves in its user's decisions, or `None` when the event is
/// not one (or is an older gateway's report of a failure that was still being retried).
pub fn note(event: &Event) -> Option<Decision> {
    let kind = match event.name.as_str() {
        MESSAGE_DEFERRED => DecisionKind::DeliveryDeferred,
        DEFERRED_MESSAGE_SENT => DecisionKind::DeliveredLater,
        MESSAGE_WITHDRAWN => DecisionKind::DeliveryWithdrawn,
        MESSAGE_FAILED => DecisionKind::DeliveryFailed,
        _ => return None,
    };
    let props = &event.properties;
    let text = |name: &str| props.get(name).and_then(Value::as_str);
    text("idempotency_key")?;
    let journey = text("journey")?;
    if kind == DecisionKind::DeliveryFailed && props.get("retryable") == Some(&Value::Bool(true)) {
        return None;
    }

    let channel = text("channel")
        .filter(|c| !c.is_empty())
        .unwrap_or("message");
    let why = text("reason").unwrap_or("no reason given");
    let reason = match kind {
        DecisionKind::DeliveryDeferred => {
            format!("{channel} not taken now ({why}); the gateway retries it")
        }
        DecisionKind::DeliveredLater => match props.get("attempts").and_then(Value::as_u64) {
            Some(n) => format!("{channel} sent on retry {n} from the gateway's queue"),
            None => format!("{channel} sent from the gateway's retry queue"),
        },
        DecisionKind::DeliveryWithdrawn => format!("{channel} not sent: {why}"),
        _ => format!("{channel} not delivered: {why}"),
    };
    Some(Decision {
        at: event.timestamp,
        journey: journey.to_string(),
        step: text("step").unwrap_or_default().to_string(),
        kind,
        reason,
        instance: props.get("instance").and_then(Value::as_u64).unwrap_or(0),
        arm: None,
    })
}

/// The kind an explanation shows for a `sent` whose message the gateway reported as failed
/// (refused for good, nobody to send it to, given up on) or withdrawn unsent.
pub const NOT_SENT: &str = "not_sent";
/// The kind an explanation shows for a `sent` whose message waits in the gateway's retry
/// queue, with no later report of it yet.
pub const NOT_SENT_YET: &str = "not_sent_yet";

/// How an explanation tells each of `decisions` (a user's, in the order made): the kind and
/// reason to show, one pair per decision, in the same order.
///
/// Each decision is told as recorded, except a `sent`: the evaluator records it when it hands
/// the message over, and the gateway's report of what became of the message comes later, as
/// its own decision. A `sent` followed by such a report is told by it: `not_sent` with the
/// report's reason when the message failed or was withdrawn, `not_sent_yet` while it waits in
/// the retry queue, `sent` with the retry that sent it once it went out later. A report is
/// matched with the earliest `sent` of the same journey, step and instance that no report has
/// settled yet, as the gateway settles one instance's sends of a step in the order they came.
pub fn told(decisions: &[Decision]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = decisions
        .iter()
        .map(|d| (d.kind.to_string(), d.reason.clone()))
        .collect();
    let mut open: HashMap<(&str, &str, u64), VecDeque<usize>> = HashMap::new();
    for (i, d) in decisions.iter().enumerate() {
        let key = (d.journey.as_str(), d.step.as_str(), d.instance);
        let (kind, settles) = match d.kind {
            DecisionKind::Sent => {
                open.entry(key).or_default().push_back(i);
                continue;
            }
            DecisionKind::DeliveryDeferred => (NOT_SENT_YET, false),
            DecisionKind::DeliveredLater => ("sent", true),
            DecisionKind::DeliveryFailed | DecisionKind::DeliveryWithdrawn => (NOT_SENT, true),
            _ => continue,
        };
        let Some(waiting) = open.get_mut(&key) else {
            continue;
        };
        let sent = if settles {
            waiting.pop_front()
        } else {
            waiting.front().copied()
        };
        if let Some(sent) = sent {
            let reason = format!("{} (the gateway's report at {})", d.reason, d.at);
            out[sent] = (kind.to_string(), reason);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::event::Props;
    use crate::time::Ts;

    fn report(name: &str, props: Value) -> Event {
        Event {
            kind: EventKind::Track,
            message_id: "gw-1".into(),
            user: "u1".into(),
            anonymous_id: None,
            name: name.into(),
            properties: props.as_object().cloned().unwrap_or_default(),
            traits: Props::new(),
            timestamp: Ts(1_000),
            previous_id: None,
        }
    }

    #[test]
    fn a_reserved_name_is_reserved_in_any_case_with_any_space_around_it() {
        for name in [
            "Message Opened",
            "message opened",
            "MESSAGE OPENED",
            "Message Opened ",
            "\tmessage opened\n",
        ] {
            assert_eq!(reserved_name(name), Some(MESSAGE_OPENED), "{name:?}");
            assert!(reserved_for_gateway(name), "{name:?}");
        }
        assert_eq!(
            reserved_name(" device token INVALID"),
            Some("Device Token Invalid")
        );

        // Other words are other names, and an unsubscribe is anyone's to send.
        for name in [
            "Message  Opened",
            "MessageOpened",
            "Message Opened!",
            "Opened",
        ] {
            assert_eq!(reserved_name(name), None, "{name:?}");
        }
        assert_eq!(reserved_name("message unsubscribed"), None);
        assert!(!reserved_for_gateway(MESSAGE_UNSUBSCRIBED));
    }

    fn about(extra: Value) -> Value {
        let mut props = json!({
            "idempotency_key": "w:u1:cart:7:nudge:1",
            "journey": "cart",
            "step": "nudge",
            "channel": "push",
            "instance": 7,
        });
        if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        props
    }

    #[test]
    fn opt_outs_and_refusals_are_read_in_the_forms_sources_send() {
        for yes in [
            json!(true),
            json!("true"),
            json!("YES"),
            json!(" y "),
            json!("1"),
            json!(1),
        ] {
            assert!(says_opted_out(&yes), "{yes}");
        }
        for no in [
            json!(false),
            json!("false"),
            json!("no"),
            json!(0),
            json!(null),
            json!({}),
        ] {
            assert!(!says_opted_out(&no), "{no}");
        }
        for refused in [
            json!(false),
            json!("False"),
            json!("no"),
            json!("off"),
            json!(0),
        ] {
            assert!(says_no_consent(&refused), "{refused}");
        }
        for given in [
            json!(true),
            json!("yes"),
            json!(1),
            json!(null),
            json!("maybe"),
        ] {
            assert!(!says_no_consent(&given), "{given}");
        }
    }

    #[test]
    fn an_unsubscribe_sets_the_channels_opt_out_as_of_its_time() {
        let mut state = UserState::new("w", "u1");
        let unsubscribed = report(MESSAGE_UNSUBSCRIBED, json!({"channel": "email"}));
        assert!(apply_unsubscribe(&mut state, &unsubscribed));
        assert_eq!(state.trait_value("email_opt_out"), Some(&Value::Bool(true)));
        assert_eq!(state.trait_value("push_opt_out"), None);

        // An identify saying otherwise later subscribes the user again; an older one does not.
        state.set_trait("email_opt_out", Value::Bool(false), Ts(999));
        assert_eq!(state.trait_value("email_opt_out"), Some(&Value::Bool(true)));
        state.set_trait("email_opt_out", Value::Bool(false), Ts(1_001));
        assert_eq!(
            state.trait_value("email_opt_out"),
            Some(&Value::Bool(false))
        );

        // Without a channel, with one that is no channel name, or under another name: nothing.
        let mut state = UserState::new("w", "u1");
        for (name, props) in [
            (MESSAGE_UNSUBSCRIBED, json!({})),
            (MESSAGE_UNSUBSCRIBED, json!({"channel": 7})),
            (MESSAGE_UNSUBSCRIBED, json!({"channel": "E Mail!"})),
            (MESSAGE_UNSUBSCRIBED, json!({"channel": "x".repeat(33)})),
            ("Message Opened", json!({"channel": "email"})),
        ] {
            assert!(!apply_unsubscribe(&mut state, &report(name, props)));
        }
        assert!(state.traits.is_empty(), "{:?}", state.traits);
    }

    #[test]
    fn each_report_is_noted_with_its_reason() {
        let deferred = note(&report(
            MESSAGE_DEFERRED,
            about(json!({"reason": "apns is unavailable: timeout"})),
        ))
        .expect("a note");
        assert_eq!(deferred.kind, DecisionKind::DeliveryDeferred);
        assert_eq!(
            deferred.reason,
            "push not taken now (apns is unavailable: timeout); the gateway retries it"
        );
        assert_eq!(
            (deferred.journey.as_str(), deferred.step.as_str()),
            ("cart", "nudge")
        );
        assert_eq!((deferred.instance, deferred.at), (7, Ts(1_000)));

        let sent = note(&report(
            DEFERRED_MESSAGE_SENT,
            about(json!({"attempts": 3})),
        ));
        assert_eq!(
            sent.map(|d| (d.kind, d.reason)),
            Some((
                DecisionKind::DeliveredLater,
                "push sent on retry 3 from the gateway's queue".to_string()
            ))
        );

        let withdrawn = note(&report(
            MESSAGE_WITHDRAWN,
            about(json!({"reason": "the journey instance ended: goal"})),
        ));
        assert_eq!(
            withdrawn.map(|d| d.reason),
            Some("push not sent: the journey instance ended: goal".to_string())
        );

        let failed = note(&report(
            MESSAGE_FAILED,
            about(json!({"reason": "http 401", "retryable": false})),
        ));
        assert_eq!(
            failed.map(|d| (d.kind, d.reason)),
            Some((
                DecisionKind::DeliveryFailed,
                "push not delivered: http 401".to_string()
            ))
        );
    }

    fn decision(at: i64, kind: DecisionKind, step: &str, reason: &str) -> Decision {
        Decision {
            at: Ts(at),
            journey: "cart".into(),
            step: step.into(),
            kind,
            reason: reason.into(),
            instance: 7,
            arm: None,
        }
    }

    #[test]
    fn a_sent_message_the_gateway_failed_or_withdrew_is_told_as_not_sent() {
        let refused = note(&report(
            MESSAGE_FAILED,
            about(json!({"reason": "invalid token", "retryable": false})),
        ))
        .expect("a note");
        let decisions = vec![
            decision(1_000, DecisionKind::Sent, "nudge", "push sent"),
            decision(1_000, DecisionKind::Sent, "other", "push sent"),
            refused,
        ];
        let shown = told(&decisions);
        assert_eq!(
            shown[0],
            (
                "not_sent".to_string(),
                "push not delivered: invalid token (the gateway's report at \
                 1970-01-01T00:00:01.000Z)"
                    .to_string()
            )
        );
        assert!(!shown[0].1.contains("push sent"));
        // Another step's message, and the report itself, are told as recorded.
        assert_eq!(shown[1], ("sent".to_string(), "push sent".to_string()));
        assert_eq!(shown[2].0, "delivery_failed");

        // Deferred, then withdrawn: not sent yet, then not sent, with the last report's words.
        let deferred = decision(
            2_000,
            DecisionKind::DeliveryDeferred,
            "nudge",
            "push not taken",
        );
        let withdrawn = decision(
            3_000,
            DecisionKind::DeliveryWithdrawn,
            "nudge",
            "push not sent",
        );
        let sent = decision(1_000, DecisionKind::Sent, "nudge", "push sent");
        let pending = told(&[sent.clone(), deferred.clone()]);
        assert_eq!(pending[0].0, "not_sent_yet");
        assert!(
            pending[0].1.starts_with("push not taken"),
            "{:?}",
            pending[0]
        );
        let settled = told(&[sent.clone(), deferred.clone(), withdrawn]);
        assert_eq!(settled[0].0, "not_sent");
        assert!(
            settled[0].1.starts_with("push not sent"),
            "{:?}",
            settled[0]
        );

        // Sent on a retry: sent, saying so.
        let later = decision(
            4_000,
            DecisionKind::DeliveredLater,
            "nudge",
            "push sent on retry 2",
        );
        let sent_later = told(&[sent.clone(), deferred, later]);
        assert_eq!(sent_later[0].0, "sent");
        assert!(sent_later[0].1.starts_with("push sent on retry 2"));

        // Two rounds of one step: each report settles the earliest send not settled yet.
        let failed = decision(
            5_000,
            DecisionKind::DeliveryFailed,
            "nudge",
            "push not delivered",
        );
        let rounds = told(&[sent.clone(), failed, sent]);
        assert_eq!(rounds[0].0, "not_sent");
        assert_eq!(rounds[2], ("sent".to_string(), "push sent".to_string()));
    }

    #[test]
    fn other_events_and_reports_of_no_message_leave_no_note() {
        assert_eq!(note(&report("Order Completed", about(json!({})))), None);
        assert_eq!(
            note(&report(MESSAGE_DEFERRED, json!({"journey": "cart"}))),
            None
        );
        assert_eq!(
            note(&report(MESSAGE_DEFERRED, json!({"idempotency_key": "k"}))),
            None
        );
        // An older gateway reported each failed attempt; only the final one is a failure.
        let retried = about(json!({"reason": "http 503", "retryable": true}));
        assert_eq!(note(&report(MESSAGE_FAILED, retried)), None);
    }
}
