//! `beckon lint` refuses what would fail every render of a message, at its place in the
//! file: an `include` or `render` tag, and a `divided_by` or `modulo` by a zero written in the
//! template. A divisor read from the data passes: it is known only as the message renders.

mod support;

use support::lint::lint_one;

/// A journey whose one email has `subject` on line 10 and `body` on line 11.
fn journey(subject: &str, body: &str) -> String {
    format!(
        "id: failing\nversion: 1\nworkspace: default\nentry:\n  event: Signed Up\nsteps:\n  \
         - id: hi\n    message:\n      channel: email\n      subject: \"{subject}\"\n      \
         body: \"{body}\"\n"
    )
}

#[test]
fn include_and_render_tags_are_refused_at_the_tag() {
    let (code, errors) = lint_one(&journey("Hi", "<p>Hello</p>{% include 'footer' %}"));
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![
            "11:29: steps[0].message.body: `include` takes in another template, and a \
             message's template has none beside it: every render reaching it would fail and \
             skip its message; write the text here instead, at 1:16 of the template"
                .to_string()
        ]
    );

    let (code, errors) = lint_one(&journey("{% render 'subject' %}", "Hello"));
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("10:20: steps[0].message.subject: `render` takes in"),
        "{errors:?}"
    );
}

#[test]
fn a_written_zero_divisor_is_refused_at_the_filter_and_a_trait_divisor_passes() {
    let body = "Each pays {{ entry.total | divided_by: 0 }}, {{ entry.total | modulo: 0.0 }} left";
    let (code, errors) = lint_one(&journey("Hi", body));
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![
            "11:41: steps[0].message.body: `divided_by: 0` divides by zero: every render \
             reaching it would fail and skip its message, at 1:28 of the template"
                .to_string()
        ]
    );

    let body = "Each pays {{ entry.total | divided_by: user.seats | default: 0 }}";
    let (code, errors) = lint_one(&journey("Hi", body));
    assert_eq!((code, errors), (Some(0), Vec::new()));
}
