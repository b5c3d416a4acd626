//! `beckon lint` refuses a template whose written ranges alone run its loops past the
//! iteration budget of one render, placing the error at the range in the file; a range bound
//! to a trait is left to the budget at render time.

mod support;

use support::lint::lint_one;

/// A journey whose one message has `body`, written on line 10.
fn journey(body: &str) -> String {
    format!(
        "id: loops\nversion: 1\nworkspace: default\nentry:\n  event: Signed Up\nsteps:\n  \
         - id: hi\n    message:\n      channel: email\n      body: \"{body}\"\n"
    )
}

#[test]
fn nested_written_ranges_past_the_budget_are_refused_at_the_outer_range() {
    let body = "<p>{% for i in (1..1000) %}{% for j in (1..1000) %}.{% endfor %}{% endfor %}</p>";
    let (code, errors) = lint_one(&journey(body));
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![
            "10:29: steps[0].message.body: this loop and the loops inside it run 1001000 \
             iterations, more than the 100000 one message may run; bound it with `limit:`, \
             at 1:16 of the template"
                .to_string()
        ]
    );
}

#[test]
fn one_written_range_past_the_budget_is_refused_and_a_limit_lets_it_pass() {
    let body = "{% for i in (1..200000) %}x{% endfor %}";
    let (code, errors) = lint_one(&journey(body));
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(
        errors,
        vec![
            "10:26: steps[0].message.body: this loop runs 200000 iterations, more than the \
             100000 one message may run; bound it with `limit:`, at 1:13 of the template"
                .to_string()
        ]
    );

    let body = "{% for i in (1..200000) limit: 20 %}x{% endfor %}";
    let (code, errors) = lint_one(&journey(body));
    assert_eq!((code, errors), (Some(0), Vec::new()));
}

#[test]
fn a_range_bound_to_a_trait_passes_the_lint() {
    let body = "{% for i in (1..user.n) %}{% for j in (1..1000) %}{% endfor %}{% endfor %}";
    let (code, errors) = lint_one(&journey(body));
    assert_eq!((code, errors), (Some(0), Vec::new()));
}
