//! A journey version published before reserved names were read in any case, waiting on
//! `message opened`, still loads when read back, so services start with what they have; the
//! check's error is kept with it, and a new spec with the name is refused.

use beckon_journey::{load_definitions_str, load_published_str};

const SPEC: &str = "\
id: opened
version: 1
workspace: default
entry:
  event: Signed Up
steps:
  - id: wait
    wait_for: {event: message opened, timeout: 1d}
";

#[test]
fn a_new_spec_is_refused_and_a_published_one_loads_with_the_reason() {
    let errors = load_definitions_str("opened.yaml", SPEC)
        .err()
        .unwrap_or_default();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!((errors[0].line, errors[0].column), (8, 23));
    assert!(
        errors[0].message.contains("reads as `Message Opened`"),
        "{}",
        errors[0]
    );

    let Ok(defs) = load_published_str("opened.yaml", SPEC) else {
        panic!("a version published before the check loads");
    };
    let refused = defs.journeys[0].refused_by_newer_checks();
    assert_eq!(refused, errors);
    assert_eq!(defs.journeys[0].refused_names, errors);

    // A name ingest never accepted is refused whenever the journey was published.
    let broken = SPEC.replace("message opened", "\"Message\\u0007Opened\"");
    assert!(load_published_str("opened.yaml", &broken).is_err());
}
