//! What the text alone shows will fail at every render that reaches it.
//!
//! Two things compile as Liquid yet can never render here:
//!
//! - `{% include %}` and `{% render %}`: a message's template renders on its own, with no
//!   other templates beside it to take in, so Liquid finds nothing by the name given;
//! - `divided_by` and `modulo` by zero, which Liquid refuses to compute.
//!
//! Either fails the render, and the message is skipped with its reason, for every user. The
//! lint refuses them instead, where they are written. Only a zero written as a literal
//! (`divided_by: 0`, `modulo: "0.0"`) can be told from the text: a divisor read from the data
//! (`divided_by: user.seats`) or set by the template (`assign`) is known only when it
//! renders, and a zero there still skips that one message, with its reason.

use super::TemplateError;
use super::reads::{Token, tokens};
use super::tags::{Pieces, place};

/// The first tag or filter of `source`, in the order written, that fails whenever it runs,
/// as the lint's error: at the tag's name or the filter's. What a `comment` or `raw` holds
/// never runs and is passed over. `source` is a template that compiles.
pub(super) fn first(source: &str) -> Option<TemplateError> {
    let mut pieces = Pieces::new(source);
    while let Some(piece) = pieces.next_read() {
        let name = piece.name();
        if matches!(name, "include" | "render") {
            return Some(TemplateError {
                reason: format!(
                    "`{name}` takes in another template, and a message's template has none \
                     beside it: every render reaching it would fail and skip its message; \
                     write the text here instead"
                ),
                at: Some(place(source, piece.start)),
            });
        }

        // `| divided_by: 0`, in an output or in an `assign`, the only tags with filters.
        let tokens = tokens(piece.text, piece.start);
        for four in tokens.windows(4) {
            let [bar, Token::Word(filter, at), colon, Token::Literal(operand)] = four else {
                continue;
            };
            let divides = matches!(*filter, "divided_by" | "modulo");
            if divides && bar.is("|") && colon.is(":") && is_zero(operand) {
                return Some(TemplateError {
                    reason: format!(
                        "`{filter}: {operand}` divides by zero: every render reaching it \
                         would fail and skip its message"
                    ),
                    at: Some(place(source, *at)),
                });
            }
        }
    }
    None
}

/// Whether a literal is a zero to Liquid's arithmetic: a number, or a quoted text, that reads
/// as the integer 0 or, failing that, as a float equal to 0 (`0`, `-0`, `0.0`, `"0"`), as
/// its `divided_by` and `modulo` read their operand before refusing a zero.
fn is_zero(literal: &str) -> bool {
    let unquoted = ['"', '\''].iter().find_map(|q| {
        literal
            .strip_prefix(*q)
            .and_then(|rest| rest.strip_suffix(*q))
    });
    let text = unquoted.unwrap_or(literal);
    match text.parse::<i64>() {
        Ok(n) => n == 0,
        Err(_) => text.parse::<f64>().is_ok_and(|f| f == 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(source: &str) -> Option<(u32, u32)> {
        first(source).and_then(|e| e.at)
    }

    #[test]
    fn include_and_render_are_found_at_their_name() {
        assert_eq!(found("Hi {% include 'footer' %}"), Some((1, 7)));
        assert_eq!(found("Hi\n  {%- render \"card\", x: 1 -%}"), Some((2, 7)));
        assert_eq!(found("Hi {{ user.name }}"), None);
    }

    #[test]
    fn zero_divisors_written_as_literals_are_found_at_the_filter() {
        assert_eq!(found("{{ user.n | divided_by: 0 }}"), Some((1, 13)));
        assert_eq!(found("{{ 7 | plus: 1 | modulo:0.0 }}"), Some((1, 18)));
        assert_eq!(
            found("{% assign x = 5 | divided_by: \"0\" %}"),
            Some((1, 19))
        );
        assert_eq!(found("{{ 5 | divided_by: -0 }}"), Some((1, 8)));
        assert_eq!(found("{{ 5 | divided_by: '0e3' }}"), Some((1, 8)));
    }

    #[test]
    fn other_divisors_and_text_that_never_runs_pass() {
        for source in [
            "{{ 5 | divided_by: 2 }}",
            "{{ 5 | divided_by: 0.5 }}",
            "{{ 5 | divided_by: user.seats }}",
            "{{ 5 | times: 0 }}",
            "{{ \"| divided_by: 0\" }}",
            "{% raw %}{% include 'x' %}{{ 1 | divided_by: 0 }}{% endraw %}",
            "{% comment %}{% include 'x' %}{{ 1 | modulo: 0 }}{% endcomment %}",
        ] {
            assert_eq!(found(source), None, "{source}");
        }
    }

    #[test]
    fn zero_is_read_as_liquid_reads_it() {
        for zero in ["0", "-0", "0.0", "00", "\"0\"", "'-0.0'"] {
            assert!(is_zero(zero), "{zero}");
        }
        for other in ["1", "0.001", "\"\"", "\"zero\"", "\" 0\""] {
            assert!(!is_zero(other), "{other}");
        }
    }
}
