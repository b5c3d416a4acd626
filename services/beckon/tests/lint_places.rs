//! `beckon lint` places each error where the problem is written: the bad tag inside a
//! template, the value of a key rather than the key, every error of a file in file order.

mod support;

use support::lint::lint_one;

const REFUSED: &str = "not an event name ingest accepts";
const CONTROL: &str = "contains a control character";

#[test]
fn an_entry_event_name_ingest_would_refuse_is_refused_at_its_value() {
    let text = "\
id: orders
version: 1
workspace: default
entry:
  event: \"\\u0007Order\"
steps:
  - id: bye
    exit: true
";
    let (code, errors) = lint_one(text);
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![format!("5:10: entry.event: {REFUSED}: {CONTROL}")]
    );

    // In braces, and a name longer than any event's.
    let long = "x".repeat(600);
    let text = format!(
        "id: orders\nversion: 1\nworkspace: default\nentry: {{ event: {long} }}\n\
         steps:\n  - id: bye\n    exit: true\n"
    );
    let (_, errors) = lint_one(&text);
    let reason = "600 bytes, longer than 512";
    assert_eq!(
        errors,
        vec![format!("4:17: entry.event: {REFUSED}: {reason}")]
    );
}

#[test]
fn goal_and_wait_for_event_names_go_through_the_same_rule() {
    let text = "\
id: orders
version: 1
workspace: default
entry:
  event: Product Added
goal: \"Order\\tCompleted\"
steps:
  - id: wait
    wait_for:
      event: \"Order\\u0000\"
      timeout: 1h
";
    let (_, errors) = lint_one(text);
    assert_eq!(
        errors,
        vec![
            format!("6:7: goal: {REFUSED}: {CONTROL}"),
            format!("10:14: steps[0].wait_for.event: {REFUSED}: {CONTROL}"),
        ]
    );
}

#[test]
fn a_step_that_goes_nowhere_is_named_at_the_target_not_the_key() {
    let text = "\
id: routes
version: 1
workspace: default
entry:
  event: Signed Up
steps:
  - id: wait
    wait_for: { event: Order Completed, timeout: 1h, on_timeout: nowhere }
    next: elsewhere
  - id: pick
    split:
      - { arm: a, percent: 50, next: wait }
      - { arm: b, percent: 50, next: 'gone' }
";
    let (code, errors) = lint_one(text);
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![
            "8:66: steps[0].on_timeout: no step with id `nowhere`",
            "9:11: steps[0].next: no step with id `elsewhere`",
            "13:38: steps[1].next: no step with id `gone`",
        ]
    );
}

/// A journey whose one step is `step`, written from line 7, indented as a list item's keys.
fn with_step(step: &str) -> String {
    format!(
        "id: tags\nversion: 1\nworkspace: default\nentry:\n  event: Signed Up\nsteps:\n\
         {step}"
    )
}

const UNKNOWN: &str = "Unknown filter (requested filter=nope)";

#[test]
fn a_bad_tag_in_a_flow_mapping_is_placed_at_the_tag() {
    let step = "  - id: hi\n    message: { channel: push, body: \"{{ x | nope }}\" }\n";
    let (code, errors) = lint_one(&with_step(step));
    assert_eq!(code, Some(1), "{errors:?}");
    let inside = "at 1:8 of the template";
    assert_eq!(
        errors,
        vec![format!("8:45: steps[0].message.body: {UNKNOWN}, {inside}")]
    );

    // Across lines, the flow mapping's value on a line of its own.
    let step = "  - id: hi\n    message: {\n      channel: push,\n      \
                title: 'Hi {{ user.name | nope }}',\n      body: hi }\n";
    let (_, errors) = lint_one(&with_step(step));
    let inside = "at 1:19 of the template";
    assert_eq!(
        errors,
        vec![format!(
            "10:33: steps[0].message.title: {UNKNOWN}, {inside}"
        )]
    );
}

#[test]
fn a_bad_tag_in_a_block_scalar_is_placed_by_its_line_in_the_body() {
    // The body's third line is the file's 14th; the body is indented by 8.
    let step = "  - id: hi\n    message:\n      channel: email\n      subject: Hi\n      \
                body: |\n        Hello {{ user.name }},\n\n        We saved \
                {{ entry.name | nope }} for you.\n";
    let (code, errors) = lint_one(&with_step(step));
    assert_eq!(code, Some(1), "{errors:?}");
    let inside = "at 3:26 of the template";
    assert_eq!(
        errors,
        vec![format!("14:34: steps[0].message.body: {UNKNOWN}, {inside}")]
    );

    // Folded: the body's two lines are one line of the template.
    let step = "  - id: hi\n    message:\n      channel: push\n      body: >-\n        \
                Hello\n        there {{ user.name | nope }}\n";
    let (_, errors) = lint_one(&with_step(step));
    let inside = "at 1:28 of the template";
    assert_eq!(
        errors,
        vec![format!("12:30: steps[0].message.body: {UNKNOWN}, {inside}")]
    );
}

#[test]
fn a_bad_tag_that_cannot_be_placed_exactly_is_placed_at_its_scalar() {
    // The escaped quotes make the file's text longer than the template's.
    let step = "  - id: hi\n    message:\n      channel: push\n      \
                body: \"Say \\\"hi\\\" {{ x | nope }}\"\n";
    let (_, errors) = lint_one(&with_step(step));
    let inside = "at 1:17 of the template";
    assert_eq!(
        errors,
        vec![format!("10:13: steps[0].message.body: {UNKNOWN}, {inside}")]
    );
}

#[test]
fn errors_found_after_reading_are_all_reported_in_file_order() {
    let text = "\
id: many
version: 1
workspace: default
entry:
  event: \"Signed\\u0001Up\"
steps:
  - id: first
    message: { channel: push, body: \"{{ a | nope }}\" }
    next: missing
  - id: second
    wait_for: { event: Order Completed, timeout: 1h, on_event: gone }
";
    let (code, errors) = lint_one(text);
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![
            format!("5:10: entry.event: {REFUSED}: {CONTROL}"),
            format!("8:45: steps[0].message.body: {UNKNOWN}, at 1:8 of the template"),
            "9:11: steps[0].next: no step with id `missing`".to_string(),
            "11:64: steps[1].on_event: no step with id `gone`".to_string(),
        ]
    );
}

/// Two versions of one journey in one file, each document from `entry:` on as given.
fn two_versions(first: &str, second: &str) -> String {
    format!(
        "id: twice\nversion: 1\nworkspace: default\n{first}---\nid: twice\nversion: 2\n\
         workspace: default\n{second}"
    )
}

#[test]
fn an_error_in_the_second_document_is_placed_in_it_not_in_the_first() {
    let good = "entry: {event: X}\nsteps:\n  - id: a\n    message: {channel: push, body: hi}\n";
    let bad = format!("{good}    exit: true\n");
    let (code, errors) = lint_one(&two_versions(good, &bad));
    assert_eq!(code, Some(1), "{errors:?}");
    let kinds = "expected exactly one of delay, wait_for, wait_until, branch, split, message, \
                 live_activity, set_traits, webhook, exit";
    assert_eq!(errors, vec![format!("14:3: steps[0]: {kinds}")]);

    // Checks between documents too: the same version twice, a segment nobody defined.
    let again = "id: twice\nversion: 1\nworkspace: default\nentry: {segment: nope}\nsteps:\n  \
                 - id: a\n    exit: true\n";
    let text = format!("{}---\n{again}", two_versions(good, good));
    let (_, errors) = lint_one(&text);
    let errors: Vec<&str> = errors
        .iter()
        .map(|e| e.split(" (also in ").next().unwrap_or(e))
        .collect();
    assert_eq!(
        errors,
        vec![
            "17:1: id: journey twice version 1 is defined twice",
            "20:18: segment: expected the id of a segment in this workspace, found `nope`",
        ]
    );
}

#[test]
fn an_empty_document_at_the_end_defines_nothing() {
    let text = "id: t\nversion: 1\nworkspace: default\nentry: {event: X}\nsteps:\n  - id: a\n    \
                exit: true\n---\n";
    let (code, errors) = lint_one(text);
    assert_eq!((code, errors), (Some(0), Vec::<String>::new()));

    // Its comments do not make it a definition either.
    let (code, errors) = lint_one(&format!("{text}# nothing yet\n"));
    assert_eq!((code, errors), (Some(0), Vec::<String>::new()));
}

#[test]
fn an_id_that_is_not_ascii_is_placed_at_its_value() {
    let text = "id: \"héllo\"\nversion: 1\nworkspace: default\nentry: {event: X}\nsteps:\n  \
                - id: a\n    exit: true\n";
    let (code, errors) = lint_one(text);
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec!["1:5: id: expected letters, digits, `-` or `_`"]
    );

    let segment = "kind: segment\nversion: 1\nworkspace: default\nid: bé\ncondition:\n  \
                   trait: {name: plan, exists: true}\n";
    let (_, errors) = lint_one(segment);
    assert_eq!(
        errors,
        vec!["4:5: id: expected letters, digits, `-` or `_`"]
    );
}
