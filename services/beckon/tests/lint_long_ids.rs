//! `beckon lint` refuses journey and step ids too long for the idempotency keys built from
//! them, at the id, so a spec it passes can always send; the bound it applies is the one the
//! gateway enforces.

mod support;

use beckon_journey::eval::MAX_JOURNEY_AND_STEP_ID_BYTES;
use support::lint::lint_one;

fn journey(id: &str, step: &str) -> String {
    format!(
        "id: {id}\nversion: 1\nworkspace: default\nentry: {{event: X}}\nsteps:\n  \
         - id: {step}\n    message: {{channel: push, title: T, body: hi}}\n"
    )
}

const WHY: &str = "so that a message's idempotency key (workspace, user id, journey id, \
                   instance, step id, visit) fits the gateway's 4096 bytes";

#[test]
fn the_bound_leaves_room_for_the_longest_workspace_user_and_counters() {
    assert_eq!(MAX_JOURNEY_AND_STEP_ID_BYTES, 3485);
    assert_eq!(
        beckon_gateway::grpc::MAX_KEY_BYTES,
        beckon_core::ids::MAX_KEY_BYTES
    );
}

#[test]
fn a_step_id_that_with_the_journey_id_is_too_long_is_refused_at_the_step() {
    let j = "j".repeat(3001);
    let (code, errors) = lint_one(&journey(&j, &"s".repeat(1001)));
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![format!(
            "6:9: steps[0].id: 1001 bytes, with the journey id's 3001 bytes 4002; at most \
             3485 together {WHY}"
        )]
    );

    let (code, errors) = lint_one(&journey(&j, &"s".repeat(484)));
    assert_eq!((code, errors), (Some(0), Vec::<String>::new()));
}

#[test]
fn a_journey_id_that_leaves_no_room_for_a_step_is_refused_at_the_journey() {
    let (code, errors) = lint_one(&journey(&"j".repeat(3485), "s"));
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![format!("1:5: id: 3485 bytes; at most 3484 {WHY}")]
    );
}
