//! `beckon explain` replays one user's events and lists their decisions in order, each with
//! a reason a person can read.

use beckon::explain::{ExplainConfig, explain, render};
use beckon_core::{DecisionKind, Duration};
use beckon_tests::behaviour_dir;

#[test]
fn the_capped_push_is_explained_in_order() {
    let dir = behaviour_dir("10-cap-last-slot");
    let events = dir.join("events.jsonl");
    let config = ExplainConfig {
        user: "u1",
        events: &events,
        journeys: &dir,
        workspace: "default",
        drain: Duration::hours(48),
        limits: Default::default(),
    };
    let decisions = explain(&config)
        .expect("explains")
        .expect("the user is in the file")
        .decisions;

    let sent: Vec<_> = decisions
        .iter()
        .filter(|d| d.kind == DecisionKind::Sent)
        .map(|d| (d.journey.as_str(), d.at.to_string()))
        .collect();
    assert_eq!(
        sent,
        [
            ("order-update", "2026-03-02T09:00:00.000Z".to_string()),
            ("cart-tip", "2026-03-02T10:10:00.000Z".to_string()),
            ("shipping-promo", "2026-03-03T09:00:00.000Z".to_string()),
        ]
    );
    assert!(
        decisions.windows(2).all(|w| w[0].at <= w[1].at),
        "in time order"
    );

    let text = render(&decisions);
    let deferred = text
        .lines()
        .find(|l| l.contains("deferred"))
        .unwrap_or_default();
    assert!(deferred.starts_with("2026-03-02T10:10:00.000Z  journey shipping-promo / promo-push"));
    assert!(
        deferred.contains("capped at 2 of 2 pushes in 1d; next try 2026-03-03 10:00 Europe/Berlin"),
        "{deferred}"
    );
}

#[test]
fn a_user_with_no_event_in_the_file_is_unknown() {
    let dir = behaviour_dir("10-cap-last-slot");
    let events = dir.join("events.jsonl");
    let config = ExplainConfig {
        user: "nobody",
        events: &events,
        journeys: &dir,
        workspace: "default",
        drain: Duration::hours(48),
        limits: Default::default(),
    };
    assert!(explain(&config).expect("explains").is_none());
}

/// A log export holds the gateway's reports beside the user's own events: the message the
/// journey sent is explained as deferred, with the provider's answer, and then as sent by the
/// gateway's retry queue.
#[test]
fn a_deferred_message_is_explained_as_deferred_then_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("shipped.yaml"),
        "id: shipped\nversion: 1\nworkspace: default\nentry:\n  event: Order Shipped\n\
         steps:\n  - id: notify\n    message:\n      channel: webhook\n      \
         body: \"Order {{ entry.order_id }} is on its way\"\n",
    )
    .expect("journey");
    // As the gateway reports them, about the message the journey sent.
    let report = |name: &str, id: &str, at: &str, extra: serde_json::Value| {
        let mut properties = serde_json::json!({
            "channel": "webhook",
            "provider": "webhook",
            "journey": "shipped",
            "version": 1,
            "step": "notify",
            "idempotency_key": "default:u1:shipped:1:notify:1",
            "instance": 1,
        });
        if let (Some(p), Some(e)) = (properties.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        serde_json::json!({
            "type": "track",
            "userId": "u1",
            "event": name,
            "messageId": id,
            "timestamp": at,
            "properties": properties,
        })
    };
    let lines = [
        serde_json::json!({
            "type": "track",
            "userId": "u1",
            "event": "Order Shipped",
            "properties": {"order_id": "A-1"},
            "messageId": "e1",
            "timestamp": "2026-03-02T09:00:00.000Z",
        }),
        report(
            "Message Deferred",
            "gw-1",
            "2026-03-02T09:00:01.000Z",
            serde_json::json!({"reason": "webhook is unavailable: http 503"}),
        ),
        report(
            "Deferred Message Sent",
            "gw-2",
            "2026-03-02T09:03:00.000Z",
            serde_json::json!({"attempts": 4, "provider_id": "default:u1:shipped:1:notify:1"}),
        ),
    ];
    let lines: Vec<String> = lines.iter().map(ToString::to_string).collect();
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, lines.join("\n") + "\n").expect("events");

    let config = ExplainConfig {
        user: "u1",
        events: &events,
        journeys: dir.path(),
        workspace: "default",
        drain: Duration::hours(1),
        limits: Default::default(),
    };
    let decisions = explain(&config)
        .expect("explains")
        .expect("the user is in the file")
        .decisions;
    let kinds: Vec<DecisionKind> = decisions.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        [
            DecisionKind::Entered,
            DecisionKind::Step,
            DecisionKind::Sent,
            DecisionKind::Completed,
            DecisionKind::DeliveryDeferred,
            DecisionKind::DeliveredLater
        ]
    );

    let text = render(&decisions);
    let line = |kind: &str| {
        text.lines()
            .find(|l| l.contains(kind))
            .unwrap_or_default()
            .to_string()
    };
    let deferred = line("delivery_deferred");
    assert!(
        deferred.starts_with("2026-03-02T09:00:01.000Z  journey shipped / notify"),
        "{text}"
    );
    assert!(
        deferred.contains("webhook not taken now (webhook is unavailable: http 503)"),
        "{text}"
    );
    let later = line("delivered_later");
    assert!(later.starts_with("2026-03-02T09:03:00.000Z"), "{text}");
    assert!(later.contains("sent on retry 4"), "{text}");
}

/// Ids that events tie together are one person's: explaining either id replays the events of
/// both, so what it says was sent is what a replay of the whole file sends, and an id merged
/// into another is explained as that user, with a note saying so.
#[test]
fn tied_ids_are_explained_as_the_replay_decides() {
    let lines = [
        r#"{"type":"track","userId":"C","anonymousId":"D","event":"X","timestamp":"2026-03-02T09:07:00Z","messageId":"8"}"#,
        r#"{"type":"track","userId":"D","anonymousId":"C","event":"X","timestamp":"2026-03-02T09:08:00Z","messageId":"9"}"#,
        r#"{"type":"track","userId":"Z","event":"X","timestamp":"2026-03-02T09:09:00Z","messageId":"10"}"#,
    ];
    let mut events = beckon_tests::Events::new();
    for line in lines {
        events = events.raw(line);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = events.write(dir.path());
    let replayed = beckon_tests::replay_examples(&events);
    let sent_by_replay = |user: &str| {
        let mut journeys: Vec<String> = replayed
            .messages
            .iter()
            .filter(|m| m.user_id == user)
            .map(|m| format!("{}/{}", m.journey, m.step))
            .collect();
        journeys.sort();
        journeys
    };
    assert!(!sent_by_replay("C").is_empty(), "the replay sends to C");
    assert!(sent_by_replay("D").is_empty(), "D was merged into C");

    let journeys = beckon_tests::example_journeys();
    for (id, user) in [("C", "C"), ("D", "C")] {
        let config = ExplainConfig {
            user: id,
            events: &file,
            journeys: &journeys,
            workspace: "default",
            drain: Duration::hours(7 * 24),
            limits: Default::default(),
        };
        let explained = explain(&config).expect("explains").expect("known");
        let mut sent: Vec<String> = explained
            .decisions
            .iter()
            .filter(|d| d.kind == DecisionKind::Sent)
            .map(|d| format!("{}/{}", d.journey, d.step))
            .collect();
        sent.sort();
        assert_eq!(sent, sent_by_replay(user), "explaining {id}");
        // The merge went one way: C took D over, as the replay did; never the reverse.
        let merges: Vec<&str> = explained
            .decisions
            .iter()
            .filter(|d| d.kind == DecisionKind::Merged)
            .map(|d| d.reason.as_str())
            .collect();
        assert_eq!(merges, ["took over D"], "explaining {id}");
        let merged_note = explained
            .notes
            .iter()
            .any(|n| n.contains("was merged into"));
        assert_eq!(merged_note, id != user, "{id}: {:?}", explained.notes);
    }
}
