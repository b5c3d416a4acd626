//! `beckon lint` refuses a loop of steps in which nothing waits, naming its steps and placing
//! the error at the target that closes it, and a loop whose waits add up to less than a
//! minute; a loop that waits long enough stays allowed.

mod support;

use support::lint::lint_one;

/// A journey entered on event `X` whose steps are `steps`, written from line 6.
fn journey(steps: &str) -> String {
    format!("id: loops\nversion: 1\nworkspace: default\nentry: {{event: X}}\nsteps:\n{steps}")
}

const MUST: &str = "a loop must pass through a delay, a wait_for or a wait_until";

#[test]
fn a_message_step_that_goes_back_to_itself_is_refused_at_its_next() {
    let (code, errors) = lint_one(&journey(
        "  - id: a\n    message: {channel: push, body: hi}\n    next: a\n",
    ));
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![format!(
            "8:11: steps[0].next: step `a` goes back to itself without waiting: {MUST}"
        )]
    );
}

#[test]
fn branch_loops_are_refused_at_each_target_that_closes_one() {
    let (code, errors) = lint_one(&journey(
        "  - id: a\n    branch: {if: {trait: {name: plan, equals: pro}}, then: b, else: a}\n  \
         - id: b\n    set_traits: {seen: true}\n    next: a\n",
    ));
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![
            format!("7:69: steps[0].else: step `a` goes back to itself without waiting: {MUST}"),
            format!("10:11: steps[1].next: steps `a` -> `b` -> `a` loop without waiting: {MUST}"),
        ]
    );
}

#[test]
fn a_loop_closed_by_falling_through_is_placed_at_the_step() {
    let (code, errors) = lint_one(&journey(
        "  - id: a\n    branch: {if: {trait: {name: plan, equals: pro}}, then: c}\n  \
         - id: b\n    message: {channel: push, body: hi}\n  \
         - id: c\n    set_traits: {seen: true}\n    next: b\n",
    ));
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![format!(
            "8:9: steps[1]: steps `c` -> `b` -> `c` loop without waiting \
             (`b` goes on to the step after it): {MUST}"
        )]
    );
}

#[test]
fn waits_that_may_not_wait_do_not_break_a_loop() {
    let (code, errors) = lint_one(&journey(
        "  - id: w\n    wait_until: {date_trait: renewal_date, offset: -3d}\n  \
         - id: m\n    message: {channel: email, subject: Renew, body: soon}\n    next: w\n  \
         - id: z\n    delay: 0s\n  \
         - id: s\n    split:\n      - {arm: x, percent: 50, next: z}\n      \
         - {arm: y, percent: 50, next: exit}\n",
    ));
    assert_eq!(code, Some(1), "{errors:?}");
    let date = "a wait_until on a date trait goes on at once when the user has no such date or \
                it has passed";
    assert_eq!(
        errors,
        vec![
            format!(
                "10:11: steps[1].next: steps `w` -> `m` -> `w` loop without waiting: {MUST}; \
                 `w` does not wait: {date}"
            ),
            format!(
                "15:37: steps[3].next: steps `z` -> `s` -> `z` loop without waiting: {MUST}; \
                 `z` does not wait: its delay is zero"
            ),
        ]
    );
}

#[test]
fn loops_through_a_step_that_waits_stay_allowed() {
    let (code, errors) = lint_one(&journey(
        "  - id: weekly\n    delay: 7d\n  \
         - id: remind\n    message: {channel: push, body: still there?}\n    next: weekly\n  \
         - id: nine\n    wait_until: {time: \"09:00\"}\n  \
         - id: digest\n    message: {channel: push, body: digest}\n    next: nine\n  \
         - id: ask\n    wait_for: {event: Answered, timeout: 1d, on_timeout: ask}\n",
    ));
    assert_eq!((code, errors), (Some(0), Vec::<String>::new()));
}

const AT_LEAST: &str = "the waits on a loop must add up to at least 1m";

#[test]
fn a_loop_through_a_millisecond_delay_is_refused_at_its_target() {
    let (code, errors) = lint_one(&journey(
        "  - id: a\n    delay: 1ms\n  \
         - id: b\n    message: {channel: push, body: hi}\n    next: a\n",
    ));
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![format!(
            "10:11: steps[1].next: steps `a` -> `b` -> `a` loop after waiting only 1ms: \
             {AT_LEAST}"
        )]
    );
}

#[test]
fn short_waits_on_a_loop_are_added_up() {
    let (code, errors) = lint_one(&journey(
        "  - id: a\n    delay: 30s\n  \
         - id: b\n    wait_for: {event: Opened, timeout: 29s, on_event: a}\n  \
         - id: c\n    message: {channel: push, body: hi}\n    next: a\n",
    ));
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![
            format!(
                "9:55: steps[1].on_event: steps `a` -> `b` -> `a` loop after waiting only 59s: \
                 {AT_LEAST}"
            ),
            format!(
                "12:11: steps[2].next: steps `a` -> `b` -> `c` -> `a` loop after waiting only \
                 59s: {AT_LEAST}"
            ),
        ]
    );

    let (code, errors) = lint_one(&journey(
        "  - id: a\n    delay: 30s\n  \
         - id: b\n    wait_for: {event: Opened, timeout: 30s, on_event: a}\n  \
         - id: c\n    message: {channel: push, body: hi}\n    next: a\n",
    ));
    assert_eq!((code, errors), (Some(0), Vec::<String>::new()));
}

#[test]
fn a_wait_for_that_goes_back_to_itself_counts_its_timeout() {
    let (code, errors) = lint_one(&journey(
        "  - id: ask\n    wait_for: {event: Answered, timeout: 10s, on_timeout: ask}\n",
    ));
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![format!(
            "7:59: steps[0].on_timeout: step `ask` goes back to itself after waiting only 10s: \
             {AT_LEAST}"
        )]
    );
}
