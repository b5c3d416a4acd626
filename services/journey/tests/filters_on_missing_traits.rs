//! A filter on a trait the user does not have: without a `default` the message is skipped,
//! and its decision names the trait; with one, the message goes out; a filter before the
//! `default` that cannot take the missing value names the trait and the filter.

use beckon_core::{DecisionKind, Ts};
use beckon_journey::sim::{identify, track};
use beckon_journey::{Engine, Sim, load_definitions_str};
use serde_json::json;

/// One push whose copy is `body`, sent at sign-up.
fn engine(body: &str) -> Engine {
    let yaml = format!(
        "id: hello\nversion: 1\nworkspace: default\nentry:\n  event: Signed Up\nsteps:\n  \
         - id: push\n    message:\n      channel: push\n      body: '{body}'\n"
    );
    match load_definitions_str("hello.yaml", &yaml) {
        Ok(defs) => Engine::from_definitions(defs),
        Err(e) => panic!("{}", e[0]),
    }
}

fn at(minutes: i64) -> Ts {
    Ts(Ts::parse_rfc3339("2026-06-01T10:00:00Z")
        .unwrap_or(Ts::MIN)
        .0
        + minutes * 60_000)
}

/// What each of a user without traits and a user with `traits` got: the body sent, or the
/// reason the message was skipped.
fn outcomes(body: &str, traits: serde_json::Value) -> (String, String) {
    let engine = engine(body);
    let mut sim = Sim::new(&engine, "default");
    sim.event(identify("known", at(0), traits));
    for user in ["new", "known"] {
        sim.event(track(user, "Signed Up", at(1), json!({})));
    }
    let outcome = |user: &str| {
        if let Some(m) = sim.sent_to(user).first() {
            return m.body.clone();
        }
        sim.decisions_of(user)
            .iter()
            .find(|d| d.kind == DecisionKind::Skipped)
            .map(|d| d.reason.clone())
            .unwrap_or_default()
    };
    (outcome("new"), outcome("known"))
}

#[test]
fn a_filter_on_a_missing_trait_without_default_skips_the_message_naming_the_trait() {
    assert_eq!(
        outcomes("{{ user.bio | size }} characters", json!({"bio": "abc"})),
        (
            "not sent: missing value user.bio with no default".to_string(),
            "3 characters".to_string()
        )
    );
    assert_eq!(
        outcomes("Hi {{ user.nick | upcase }}", json!({"nick": "ada"})),
        (
            "not sent: missing value user.nick with no default".to_string(),
            "Hi ADA".to_string()
        )
    );
}

#[test]
fn a_default_after_the_filter_is_sent_unless_the_filter_refuses_nil() {
    assert_eq!(
        outcomes(
            "Hi {{ user.nick | upcase | default: \"friend\" }}",
            json!({"nick": "ada"})
        ),
        ("Hi friend".to_string(), "Hi ADA".to_string())
    );
    assert_eq!(
        outcomes(
            "{{ user.tags | join: \", \" | default: \"no tags\" }}",
            json!({"tags": ["a", "b"]})
        ),
        (
            "not sent: missing value user.tags goes through filter join, which cannot take a \
             missing value, before its default"
                .to_string(),
            "a, b".to_string()
        )
    );
}
