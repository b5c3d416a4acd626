//! `beckon lint` refuses an entry, goal or `wait_for` event name that reads as a name reserved
//! for the gateway's reports without being written as it (`message opened`, `Message Opened `):
//! the gateway writes its reports only as named and ingest refuses the other spellings from
//! anyone else, so no event could match. The error is at the name and names the report.

mod support;

use support::lint::lint_one;

const REFUSED: &str = "not an event name ingest accepts";

#[test]
fn an_entry_name_in_other_case_is_refused_at_its_value_naming_the_report() {
    let text = "\
id: opened
version: 1
workspace: default
entry:
  event: message opened
steps:
  - id: bye
    exit: true
";
    let (code, errors) = lint_one(text);
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![format!(
            "5:10: entry.event: {REFUSED}: `message opened` reads as `Message Opened`, which \
             is reserved for the gateway's reports; the gateway writes it only as `Message \
             Opened`, so write that"
        )]
    );
}

#[test]
fn goal_and_wait_for_names_with_space_around_them_are_refused_and_the_exact_name_passes() {
    let text = "\
id: clicked
version: 1
workspace: default
entry:
  event: Signed Up
goal: {event: \"MESSAGE CLICKED\"}
steps:
  - id: wait
    wait_for:
      event: \"Message Opened \"
      timeout: 1h
  - id: again
    wait_for: {event: Message Failed, timeout: 1h}
";
    let (code, errors) = lint_one(text);
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!(
            "6:15: goal: {REFUSED}: `MESSAGE CLICKED` reads as `Message Clicked`"
        )),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with(&format!(
            "10:14: steps[0].wait_for.event: {REFUSED}: `Message Opened ` reads as \
             `Message Opened`"
        )),
        "{errors:?}"
    );

    // Written as the gateway writes it, the name is what journeys wait for.
    let fixed = text
        .replace("\"MESSAGE CLICKED\"", "Message Clicked")
        .replace("\"Message Opened \"", "Message Opened");
    let (code, errors) = lint_one(&fixed);
    assert_eq!((code, errors), (Some(0), Vec::new()));
}
