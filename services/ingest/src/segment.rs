//! Parsing the Segment spec (`track`, `identify`, `alias`, `page`, `screen`).
//!
//! A missing `messageId` is replaced by one derived from the event's content, so the same
//! input always yields the same id and replays stay deterministic.

use beckon_core::{Event, EventKind, Props, Ts};
use serde_json::Value;

use crate::error::{RejectReason, Rejection};

/// Parses one JSON line.
pub fn parse_line(line: &str) -> Result<Event, Rejection> {
    let value: Value = serde_json::from_str(line)
        .map_err(|e| Rejection::new(RejectReason::MalformedJson, "", e.to_string()))?;
    parse_value(value, line)
}

/// Validates a decoded event. `raw` seeds the generated message id when none is given.
pub fn parse_value(value: Value, raw: &str) -> Result<Event, Rejection> {
    let Value::Object(mut obj) = value else {
        return Err(Rejection::new(
            RejectReason::NotAnObject,
            "",
            "expected a JSON object",
        ));
    };

    let kind_text = take_string(&mut obj, "type")?.unwrap_or_default();
    let kind = EventKind::parse(&kind_text).ok_or_else(|| {
        let shown: String = kind_text.chars().take(40).collect();
        Rejection::new(
            RejectReason::UnknownType,
            "type",
            format!("{shown:?} is not one of track, identify, alias, page, screen"),
        )
    })?;

    let user_id = take_string(&mut obj, "userId")?.filter(|s| !s.is_empty());
    let anonymous_id = take_string(&mut obj, "anonymousId")?.filter(|s| !s.is_empty());
    let user = user_id
        .clone()
        .or_else(|| anonymous_id.clone())
        .ok_or_else(|| {
            Rejection::new(
                RejectReason::MissingUserId,
                "userId",
                "neither userId nor anonymousId",
            )
        })?;

    let timestamp = match take_string(&mut obj, "timestamp")? {
        Some(text) => Ts::parse_rfc3339(&text)
            .map_err(|e| Rejection::new(RejectReason::BadTimestamp, "timestamp", e.to_string()))?,
        None => {
            return Err(Rejection::new(
                RejectReason::BadTimestamp,
                "timestamp",
                "missing",
            ));
        }
    };

    let name = match kind {
        EventKind::Track => take_string(&mut obj, "event")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Rejection::new(RejectReason::MissingEvent, "event", "missing"))?,
        EventKind::Page => take_string(&mut obj, "name")?.unwrap_or_else(|| "Page Viewed".into()),
        EventKind::Screen => {
            take_string(&mut obj, "name")?.unwrap_or_else(|| "Screen Viewed".into())
        }
        EventKind::Identify => "Identify".into(),
        EventKind::Alias => "Alias".into(),
    };

    let previous_id = take_string(&mut obj, "previousId")?;
    if kind == EventKind::Alias && previous_id.is_none() {
        return Err(Rejection::new(
            RejectReason::BadField,
            "previousId",
            "alias needs previousId",
        ));
    }

    let properties = take_object(&mut obj, "properties")?;
    let mut traits = take_object(&mut obj, "traits")?;
    // Segment puts identify traits at the top level of `context.traits` too; only `traits`
    // is authoritative here.
    if kind != EventKind::Identify {
        traits.clear();
    }

    let message_id = match take_string(&mut obj, "messageId")? {
        Some(id) if !id.is_empty() => id,
        _ => derived_id(raw),
    };

    Ok(Event {
        kind,
        message_id,
        user,
        anonymous_id: if user_id.is_some() {
            anonymous_id
        } else {
            None
        },
        name,
        properties,
        traits,
        timestamp,
        previous_id,
    })
}

fn take_string(obj: &mut Props, key: &str) -> Result<Option<String>, Rejection> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        // Numeric user ids are common in exports; accept them as their decimal text.
        Some(Value::Number(n)) if key != "type" && key != "timestamp" => Ok(Some(n.to_string())),
        Some(other) => Err(Rejection::new(
            if key == "timestamp" {
                RejectReason::BadTimestamp
            } else {
                RejectReason::BadField
            },
            key,
            format!("expected a string, found {}", kind_of(&other)),
        )),
    }
}

fn take_object(obj: &mut Props, key: &str) -> Result<Props, Rejection> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(Props::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(Rejection::new(
            RejectReason::BadField,
            key,
            format!("expected an object, found {}", kind_of(&other)),
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A stable id for an event that came without one: FNV-1a of its raw text.
fn derived_id(raw: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in raw.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("gen-{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(line: &str) -> Option<RejectReason> {
        parse_line(line).err().map(|r| r.reason)
    }

    #[test]
    fn accepts_track_identify_page() {
        let e = parse_line(
            r#"{"type":"track","userId":"u1","event":"Product Added","properties":{"sku":"a"},
            "messageId":"m1","timestamp":"2017-11-25T00:00:00.000Z"}"#,
        );
        let e = e.ok();
        assert_eq!(e.as_ref().map(|e| e.name.as_str()), Some("Product Added"));
        assert_eq!(e.map(|e| e.timestamp), Some(Ts(1_511_568_000_000)));

        let p =
            parse_line(r#"{"type":"page","anonymousId":"a1","timestamp":"2017-11-25T00:00:00Z"}"#);
        assert_eq!(
            p.ok().map(|e| (e.user, e.name)),
            Some(("a1".into(), "Page Viewed".into()))
        );
    }

    #[test]
    fn rejects_each_kind_of_bad_line() {
        assert_eq!(reason("{not json"), Some(RejectReason::MalformedJson));
        assert_eq!(reason("[1]"), Some(RejectReason::NotAnObject));
        assert_eq!(
            reason(r#"{"type":"track","event":"x","timestamp":"2017-11-25T00:00:00Z"}"#),
            Some(RejectReason::MissingUserId)
        );
        assert_eq!(
            reason(r#"{"type":"bogus","userId":"u","timestamp":"2017-11-25T00:00:00Z"}"#),
            Some(RejectReason::UnknownType)
        );
        assert_eq!(
            reason(r#"{"type":"track","userId":"u","event":"x","timestamp":"yesterday"}"#),
            Some(RejectReason::BadTimestamp)
        );
        assert_eq!(
            reason(r#"{"type":"track","userId":"u","timestamp":"2017-11-25T00:00:00Z"}"#),
            Some(RejectReason::MissingEvent)
        );
    }

    #[test]
    fn missing_message_id_is_derived_deterministically() {
        let line =
            r#"{"type":"track","userId":"u","event":"x","timestamp":"2017-11-25T00:00:00Z"}"#;
        let a = parse_line(line).ok().map(|e| e.message_id);
        assert_eq!(a, parse_line(line).ok().map(|e| e.message_id));
        assert!(a.is_some_and(|id| id.starts_with("gen-")));
    }
}
