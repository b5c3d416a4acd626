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
    };
    let decisions = explain(&config)
        .expect("explains")
        .expect("the user is in the file");

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
    };
    assert!(explain(&config).expect("explains").is_none());
}
