//! What a template's loops are bound to spend, as far as its text tells.
//!
//! A loop over a range with written bounds (`(1..500)`), and `limit:` and `offset:` written as
//! numbers if it has them, runs a number of iterations known before any data. Nested in
//! another, it runs that many for each of the outer loop's. The lint adds these up along each
//! nest and refuses the loop where the sum first goes past [`MAX_LOOP_ITERATIONS`]: rendering
//! it could only fail. What the text cannot tell is taken at its least: a loop over a list, a
//! range with a variable bound, or one holding a `break` counts as one iteration, so the
//! refusal holds whenever the refused loop runs at all, and everything else is left to the
//! budget at render time.

use super::loops::MAX_LOOP_ITERATIONS;
use super::tags::{Pieces, place};

/// A loop bound to spend more than the budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OverBudget {
    /// Where its list or range is written: line and column (in characters), both from 1.
    pub at: (u32, u32),
    /// The iterations it runs, with the loops inside it, each time it runs.
    pub iterations: u64,
    /// Whether loops inside it count towards `iterations`.
    pub nested: bool,
    /// Whether `iterations` is a least count (part of the nest depends on data or a `break`).
    pub at_least: bool,
}

/// One `for` or `tablerow` of the text.
struct Loop {
    at: (u32, u32),
    /// Its iterations, when the text tells them.
    count: Option<u64>,
    /// A `break` of its own may end it early.
    breaks: bool,
    children: Vec<usize>,
}

/// A block open at some point of the text.
enum Open {
    Block,
    /// A loop, by index, and whether its `else` part has begun.
    Loop(usize, bool),
}

/// The first loop of `source` (in the order written) bound to spend more than the budget
/// while no loop inside it is. `source` is a template that compiles.
pub(super) fn over_budget(source: &str) -> Option<OverBudget> {
    let loops = scan(source);

    // Inner loops come after their outer loop, so a walk from the end finds every inner
    // loop's cost before its outer loop needs it.
    let mut least = vec![(0u64, true); loops.len()];
    for i in (0..loops.len()).rev() {
        let l = &loops[i];
        let (own, mut exact) = match l.count {
            Some(n) if l.breaks => (n.min(1), false),
            Some(n) => (n, true),
            None => (1, false),
        };
        let inner = l.children.iter().map(|&c| least[c]).max_by_key(|c| c.0);
        let each = inner.map_or(0, |c| c.0);
        exact &= inner.is_none_or(|c| c.1);
        least[i] = (own.saturating_mul(each.saturating_add(1)), exact);
    }

    let over = |i: usize| least[i].0 > MAX_LOOP_ITERATIONS;
    let first =
        (0..loops.len()).find(|&i| over(i) && !loops[i].children.iter().any(|&c| over(c)))?;
    let l = &loops[first];
    Some(OverBudget {
        at: l.at,
        iterations: least[first].0,
        nested: l.children.iter().any(|&c| least[c].0 > 0),
        at_least: !least[first].1,
    })
}

/// The loops of `source`, in the order written, each with the loops run inside its body.
fn scan(source: &str) -> Vec<Loop> {
    let mut loops: Vec<Loop> = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    let mut pieces = Pieces::new(source);

    while let Some(tag) = pieces.next_read() {
        if tag.output {
            continue;
        }
        match tag.name() {
            keyword @ ("for" | "tablerow") => {
                let index = loops.len();
                let (count, offset) = head(&tag.text[keyword.len()..]);
                let at = place(source, tag.start + keyword.len() + offset);
                loops.push(Loop {
                    at,
                    count,
                    breaks: false,
                    children: Vec::new(),
                });
                if let Some(parent) = running(&open) {
                    loops[parent].children.push(index);
                }
                open.push(Open::Loop(index, false));
            }
            "if" | "unless" | "case" | "capture" | "ifchanged" => open.push(Open::Block),
            "else" => {
                if let Some(Open::Loop(_, in_else)) = open.last_mut() {
                    *in_else = true;
                }
            }
            "break" => {
                if let Some(owner) = running(&open) {
                    loops[owner].breaks = true;
                }
            }
            word if word.starts_with("end") => {
                open.pop();
            }
            _ => {}
        }
    }
    loops
}

/// The loop whose iterations the current point of the text runs in: the innermost one open,
/// passing over loops in their `else` part (which runs once, when there is nothing to walk).
fn running(open: &[Open]) -> Option<usize> {
    open.iter().rev().find_map(|o| match o {
        Open::Loop(index, false) => Some(*index),
        _ => None,
    })
}

/// The iterations a loop's tag tells, from its text after `for` or `tablerow`
/// (`item in (1..5) limit: 2`), and where in that text its list or range starts.
fn head(text: &str) -> (Option<u64>, usize) {
    let name_at = after_space(text, 0);
    let name_end = text[name_at..]
        .find(char::is_whitespace)
        .map_or(text.len(), |end| name_at + end);
    let in_at = after_space(text, name_end);
    if !text[in_at..].starts_with("in") {
        return (None, in_at);
    }
    let source_at = after_space(text, in_at + 2);
    let rest = &text[source_at..];

    let Some(inside) = rest.strip_prefix('(') else {
        return (None, source_at);
    };
    let Some(close) = inside.find(')') else {
        return (None, source_at);
    };
    let len = inside[..close]
        .split_once("..")
        .and_then(|(first, last)| Some((number(first)?, number(last)?)))
        .map(|(first, last)| {
            let len = (i128::from(last) - i128::from(first) + 1).max(0);
            u64::try_from(len).unwrap_or(u64::MAX)
        });

    // The parameters, `limit: 2` or `limit:2`, each word apart.
    let parameters = inside[close + 1..].replace([':', ','], " ");
    let mut words = parameters.split_whitespace();
    let (mut limit, mut offset) = (Some(None), Some(0u64));
    while let Some(word) = words.next() {
        if matches!(word, "limit" | "offset" | "cols") {
            // Read as Liquid reads them: a negative number stands for a very large one.
            let value = words.next().and_then(number).map(|n| n as u64);
            match word {
                "limit" => limit = value.map(Some),
                "offset" => offset = value,
                _ => {}
            }
        }
    }

    let count = match (len, limit, offset) {
        (Some(len), Some(limit), Some(offset)) => {
            let offset = offset.min(len);
            Some(limit.map_or(len - offset, |l| l.min(len)))
        }
        _ => None,
    };
    (count, source_at)
}

/// The first byte from `at` on that is not white space.
fn after_space(text: &str, at: usize) -> usize {
    let rest = &text[at..];
    at + (rest.len() - rest.trim_start().len())
}

/// A whole number written as Liquid writes one.
fn number(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn over(source: &str) -> Option<(u32, u32, u64, bool, bool)> {
        over_budget(source).map(|o| (o.at.0, o.at.1, o.iterations, o.nested, o.at_least))
    }

    #[test]
    fn a_range_past_the_budget_is_found_at_its_range() {
        assert_eq!(
            over("Hi {% for i in (1..100001) %}x{% endfor %}"),
            Some((1, 16, 100_001, false, false))
        );
        assert_eq!(over("{% for i in (1..100000) %}x{% endfor %}"), None);
        assert_eq!(over("{% for i in (5..1) %}x{% endfor %}"), None);
    }

    #[test]
    fn nested_ranges_multiply_and_the_outer_loop_is_named() {
        let src =
            "a\n{% for i in (1..1000) %}\n  {% for j in (1..1000) %}{% endfor %}\n{% endfor %}";
        assert_eq!(over(src), Some((2, 13, 1_001_000, true, false)));

        // The inner loop alone is over: it is the one named.
        let src = "{% for i in (1..2) %}{% for j in (1..200000) %}{% endfor %}{% endfor %}";
        assert_eq!(over(src), Some((1, 34, 200_000, false, false)));

        let src = "{% for i in (1..100000000) %}{% for j in (1..1000) %}{% endfor %}{% endfor %}";
        assert_eq!(over(src), Some((1, 13, 100_100_000_000, true, false)));
    }

    #[test]
    fn limit_and_offset_written_as_numbers_count() {
        assert_eq!(
            over("{% for i in (1..1000000) limit: 10 %}{% endfor %}"),
            None
        );
        assert_eq!(
            over("{% for i in (1..1000000) offset:999990 %}{% endfor %}"),
            None
        );
        assert_eq!(
            over("{% tablerow i in (1..1000000) cols:3 limit:5 %}{% endtablerow %}"),
            None
        );
        assert!(over("{% tablerow i in (1..1000000) cols:3 %}{% endtablerow %}").is_some());
    }

    #[test]
    fn what_depends_on_data_counts_once() {
        assert_eq!(over("{% for i in (1..user.n) %}{% endfor %}"), None);
        assert_eq!(
            over("{% for i in (1..9000000) limit: user.n %}{% endfor %}"),
            None
        );
        let src = "{% for i in user.items %}{% for j in (1..300000) %}{% endfor %}{% endfor %}";
        assert_eq!(over(src), Some((1, 38, 300_000, false, false)));
        let src = "{% for i in (1..1000) %}{% for j in user.items %}\
                   {% for k in (1..1000) %}{% endfor %}{% endfor %}{% endfor %}";
        assert_eq!(over(src), Some((1, 13, 1_002_000, true, true)));
    }

    #[test]
    fn a_break_may_end_a_loop_early() {
        let src = "{% for i in (1..1000000) %}{% if i > 3 %}{% break %}{% endif %}{% endfor %}";
        assert_eq!(over(src), None);
        // A `break` of an inner loop ends only that one.
        let src = "{% for i in (1..1000000) %}{% for j in (1..2) %}{% break %}{% endfor %}\
                   {% endfor %}";
        assert_eq!(over(src), Some((1, 13, 2_000_000, true, true)));
    }

    #[test]
    fn an_else_part_runs_once_not_per_iteration() {
        let src = "{% for i in (1..1000) %}x{% else %}{% for j in (1..1000) %}{% endfor %}\
                   {% endfor %}";
        assert_eq!(over(src), None);
        let src = "{% for i in (1..1000) %}{% if i %}{% else %}{% for j in (1..1000) %}\
                   {% endfor %}{% endif %}{% endfor %}";
        assert!(over(src).is_some());
    }

    #[test]
    fn raw_comments_strings_and_output_hide_no_loop_and_show_none() {
        let src = "{% raw %}{% for i in (1..9000000) %}{% endraw %}\
                   {% comment %}{% comment %}{% endcomment %}{% for i in (1..9000000) %}\
                   {% endfor %}{% endcomment %}{{ \"{% for\" }}";
        assert_eq!(over(src), None);
        let src = "{% if a == \"%}\" %}{% endif %}\n  {%- for i in ( 1 .. 200000 ) -%}{% endfor %}";
        assert_eq!(over(src), Some((2, 16, 200_000, false, false)));
    }

    #[test]
    fn places_count_characters_not_bytes() {
        let src = "ü ü\n€ {% for i in (1..200000) %}{% endfor %}";
        assert_eq!(over(src).map(|o| (o.0, o.1)), Some((2, 15)));
    }
}
