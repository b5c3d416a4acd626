//! A template that fails at every render (an `include`, a division by a written zero) is
//! refused when a spec is loaded to be linted or published. A version published before that
//! check still loads, so services start with what they have; its message is skipped, with
//! Liquid's reason, as it always was.

use beckon_core::{DecisionKind, Ts};
use beckon_journey::sim::{identify, track};
use beckon_journey::{Engine, Sim, load_definitions_str, load_published_str};
use serde_json::json;

/// One push whose copy is `body`, sent at sign-up.
fn spec(body: &str) -> String {
    format!(
        "id: hello\nversion: 1\nworkspace: default\nentry:\n  event: Signed Up\nsteps:\n  \
         - id: push\n    message:\n      channel: push\n      body: '{body}'\n"
    )
}

fn at(minutes: i64) -> Ts {
    Ts(Ts::parse_rfc3339("2026-06-01T10:00:00Z")
        .unwrap_or(Ts::MIN)
        .0
        + minutes * 60_000)
}

#[test]
fn a_new_spec_is_refused_at_the_tag_or_filter() {
    for (body, column, reason) in [
        (
            "Hi {% include \"card\" %}",
            20,
            "`include` takes in another template",
        ),
        (
            "{{ 9 | modulo: 0 }} left",
            21,
            "`modulo: 0` divides by zero",
        ),
    ] {
        let errors = load_definitions_str("hello.yaml", &spec(body))
            .err()
            .unwrap_or_default();
        assert_eq!(errors.len(), 1, "{body}: {errors:?}");
        assert_eq!((errors[0].line, errors[0].column), (10, column), "{body}");
        assert_eq!(errors[0].field, "steps[0].message.body");
        assert!(errors[0].message.starts_with(reason), "{}", errors[0]);
    }
}

#[test]
fn one_published_before_loads_and_its_message_is_skipped_with_the_reason() {
    let body = "{{ 9 | divided_by: 0 }}";
    let Ok(defs) = load_published_str("hello.yaml", &spec(body)) else {
        panic!("a version published before the check loads");
    };
    let refused = defs.journeys[0].refused_by_newer_checks();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].message.contains("divides by zero"),
        "{}",
        refused[0]
    );

    let engine = Engine::from_definitions(defs);
    let mut sim = Sim::new(&engine, "default");
    sim.event(identify("ada", at(0), json!({"name": "Ada"})));
    sim.event(track("ada", "Signed Up", at(1), json!({})));
    assert!(sim.sent_to("ada").is_empty());
    let skipped = sim
        .decisions_of("ada")
        .iter()
        .find(|d| d.kind == DecisionKind::Skipped)
        .map(|d| d.reason.clone())
        .unwrap_or_default();
    assert!(skipped.contains("Can't divide by zero"), "{skipped}");
}
