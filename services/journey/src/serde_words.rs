//! serde's words for a value it cannot take, said in a spec's own terms.
//!
//! serde describes a refused value by Rust's types ("invalid type: integer `-1`, expected
//! u32", "integer `...` as u128"). People who write specs think in what a field accepts: "a
//! whole number from 0 to 4294967295". The field's name refines that where the type alone
//! says too little (a percentage is a `u32` that stops at 100).

use crate::condition::MAX_WINDOW;
use crate::spec::MAX_WAIT;

/// `message`, a serde error about `field` (a path such as `steps[1].split[0].percent`), in the
/// spec's terms. Messages that already are pass through unchanged.
pub fn in_spec_terms(field: &str, message: &str) -> String {
    let name = last_name(field);
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            return format!(
                "expected {}, found {}",
                accepts(name, expected),
                seen(found)
            );
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant ")
        && let Some((found, expected)) = rest.rsplit_once(", expected ")
    {
        return format!("expected {}, found {found}", expected.replace('`', ""));
    }
    if let Some(text) = too_long_duration(message) {
        return longest(name, text);
    }
    message.to_string()
}

/// The field's own name: `percent` for `steps[1].split[0].percent`.
fn last_name(field: &str) -> &str {
    let last = field.rsplit('.').next().unwrap_or(field);
    last.split('[').next().unwrap_or(last)
}

/// What a field accepts, from serde's name for the type it expected.
fn accepts(name: &str, expected: &str) -> String {
    if matches!(name, "holdout" | "percent") && is_integer(expected) {
        return "a percentage from 0 to 100".into();
    }
    let whole = |min: i128, max: i128| format!("a whole number from {min} to {max}");
    match expected {
        "u8" => whole(0, u8::MAX.into()),
        "u16" => whole(0, u16::MAX.into()),
        "u32" => whole(0, u32::MAX.into()),
        "u64" | "usize" => whole(0, u64::MAX.into()),
        "i8" => whole(i8::MIN.into(), i8::MAX.into()),
        "i16" => whole(i16::MIN.into(), i16::MAX.into()),
        "i32" => whole(i32::MIN.into(), i32::MAX.into()),
        "i64" | "isize" => whole(i64::MIN.into(), i64::MAX.into()),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a string" | "a borrowed string" | "a character" | "a char" => "text".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping of names to values".into(),
        "unit" => "nothing".into(),
        _ if expected.starts_with("struct ") => "a mapping of the keys this field takes".into(),
        // Expectations written for specs ("a duration such as 2d or 90m") say it already.
        other => other.to_string(),
    }
}

fn is_integer(expected: &str) -> bool {
    matches!(
        expected,
        "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" | "isize"
    )
}

/// What was found, from serde's description of it.
fn seen(found: &str) -> String {
    for kind in ["integer ", "floating point ", "boolean "] {
        if let Some(value) = found.strip_prefix(kind) {
            // "`99999999999999999999` as u128": the number as written, not the type it fit.
            let value = value.split(" as ").next().unwrap_or(value);
            return value.to_string();
        }
    }
    if let Some(text) = found.strip_prefix("string ") {
        return text.to_string();
    }
    match found {
        "map" => "a mapping".into(),
        "sequence" => "a list".into(),
        "unit value" | "unit" => "nothing".into(),
        other => other.to_string(),
    }
}

/// The text of a duration refused for being too long to count in milliseconds.
fn too_long_duration(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("duration \"")?;
    let (text, reason) = rest.split_once("\" is not valid: ")?;
    matches!(reason, "number too large" | "too long").then_some(text)
}

/// The refusal of a duration longer than the field allows, naming the longest it takes.
fn longest(name: &str, text: &str) -> String {
    if matches!(name, "within" | "for") {
        return format!("expected a window from 1ms to {MAX_WINDOW}, found {text}");
    }
    format!("expected a duration of at most {MAX_WAIT}, found {text}")
}

#[cfg(test)]
mod tests {
    use super::in_spec_terms;

    #[test]
    fn types_are_said_as_what_the_field_accepts() {
        let cases = [
            (
                "version",
                "invalid type: integer `99999999999999999999999` as u128, expected u32",
                "expected a whole number from 0 to 4294967295, found `99999999999999999999999`",
            ),
            (
                "holdout",
                "invalid value: integer `-1`, expected u32",
                "expected a percentage from 0 to 100, found `-1`",
            ),
            (
                "steps[0].message.transactional",
                "invalid type: string \"yes please\", expected a boolean",
                "expected true or false, found \"yes please\"",
            ),
            (
                "steps",
                "invalid type: map, expected a sequence",
                "expected a list, found a mapping",
            ),
            (
                "steps[0]",
                "invalid type: string \"x\", expected struct StepSpec",
                "expected a mapping of the keys this field takes, found \"x\"",
            ),
            (
                "steps[0].wait_for.timeout",
                "duration \"99999999999999999999d\" is not valid: number too large",
                "expected a duration of at most 36500d, found 99999999999999999999d",
            ),
            (
                "condition.did.within",
                "duration \"9999999999999999w\" is not valid: too long",
                "expected a window from 1ms to 90d, found 9999999999999999w",
            ),
        ];
        for (field, serde, ours) in cases {
            assert_eq!(in_spec_terms(field, serde), ours, "{field}");
        }
    }

    #[test]
    fn messages_in_spec_terms_pass_unchanged() {
        let message = "unknown field `timout`, expected one of `event`, `timeout`";
        assert_eq!(in_spec_terms("steps[0].wait_for", message), message);
        assert_eq!(
            in_spec_terms("", "missing field `id`"),
            "missing field `id`"
        );
    }
}
