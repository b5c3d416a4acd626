//! Parsing the Segment spec (`track`, `identify`, `alias`, `page`, `screen`).
//!
//! A missing `messageId` is replaced by one derived from the event's content, so the same
//! input always yields the same id and replays stay deterministic.

use beckon_core::{Event, EventKind, Props, Ts, check_event_time, parse_event_time};
use serde_json::Value;

use crate::error::{RejectReason, Rejection};

/// Parses one JSON line.
pub fn parse_line(line: &str) -> Result<Event, Rejection> {
    if line.len() > MAX_EVENT_BYTES {
        return Err(Rejection::new(
            RejectReason::BadField,
            "",
            format!("{} bytes, larger than {MAX_EVENT_BYTES}", line.len()),
        ));
    }
    // Most lines are well-formed events: read their fields straight from the text. Anything
    // the direct read does not take (bad JSON, a field of another type, a rule broken) goes the
    // general way, which accepts or rejects it with the precise reason.
    if let Some(event) = parse_direct(line) {
        return Ok(event);
    }
    let value: Value = serde_json::from_str(line)
        .map_err(|e| Rejection::new(RejectReason::MalformedJson, "", e.to_string()))?;
    parse_value(value, line)
}

/// The fields of a Segment event as they appear in a line: each text field a string or
/// absent (`null` counts as absent), properties and traits objects. A repeated key keeps its
/// last value, as in a decoded JSON object.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Fields {
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub timestamp: Option<String>,
    pub event: Option<String>,
    pub name: Option<String>,
    pub previous_id: Option<String>,
    pub message_id: Option<String>,
    pub properties: Option<Props>,
    pub traits: Option<Props>,
}

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Fields, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Segment event object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut f = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Type => f.kind = map.next_value()?,
                Key::UserId => f.user_id = map.next_value()?,
                Key::AnonymousId => f.anonymous_id = map.next_value()?,
                Key::Timestamp => f.timestamp = map.next_value()?,
                Key::Event => f.event = map.next_value()?,
                Key::Name => f.name = map.next_value()?,
                Key::PreviousId => f.previous_id = map.next_value()?,
                Key::MessageId => f.message_id = map.next_value()?,
                Key::Properties => f.properties = map.next_value()?,
                Key::Traits => f.traits = map.next_value()?,
                // Decoded in full, not skipped: a value the general way refuses (a number out
                // of range, a broken escape) must fail here too.
                Key::Other => {
                    map.next_value::<Value>()?;
                }
            }
        }
        Ok(f)
    }
}

/// A top-level key, recognised without copying it.
enum Key {
    Type,
    UserId,
    AnonymousId,
    Timestamp,
    Event,
    Name,
    PreviousId,
    MessageId,
    Properties,
    Traits,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl serde::de::Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "type" => Key::Type,
            "userId" => Key::UserId,
            "anonymousId" => Key::AnonymousId,
            "timestamp" => Key::Timestamp,
            "event" => Key::Event,
            "name" => Key::Name,
            "previousId" => Key::PreviousId,
            "messageId" => Key::MessageId,
            "properties" => Key::Properties,
            "traits" => Key::Traits,
            _ => Key::Other,
        })
    }
}

pub use beckon_core::ids::{MAX_ID_BYTES, id_problem, name_problem};

/// Largest event accepted, in bytes: its JSON line, or its encoded protobuf message. An event
/// is kept in the log and its properties in the user's record, which is read and written
/// whole on every change; one outsized event would slow every later one of that user.
/// Segment's own limit is the same.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;

/// Checks the name of an event of `kind`, by field: `event` for a track, `name` for a page or
/// screen (the other kinds' names are Beckon's own).
fn check_name(kind: EventKind, name: &str) -> Result<(), Rejection> {
    let field = match kind {
        EventKind::Track => "event",
        EventKind::Page | EventKind::Screen => "name",
        EventKind::Identify | EventKind::Alias => return Ok(()),
    };
    match name_problem(name) {
        Some(why) => Err(Rejection::new(RejectReason::BadField, field, why)),
        None => Ok(()),
    }
}

fn check_id(field: &str, id: Option<&str>) -> Result<(), Rejection> {
    match id.and_then(id_problem) {
        Some(why) => Err(Rejection::new(RejectReason::BadField, field, why)),
        None => Ok(()),
    }
}

/// The event of a well-formed line, built by the same rules as [`parse_value`]; `None` for
/// anything else, which the general way then judges.
fn parse_direct(line: &str) -> Option<Event> {
    // The plainest lines need no decoder at all.
    let f: Fields = match crate::scan::fields(line) {
        Some(f) => f,
        None => serde_json::from_str(line).ok()?,
    };
    let timestamp = Ts::parse_rfc3339(f.timestamp.as_deref()?).ok()?;
    let kind = f.kind?;
    let name = match kind.as_str() {
        "page" | "screen" => f.name,
        _ => f.event,
    };
    let draft = Draft {
        kind,
        user_id: f.user_id,
        anonymous_id: f.anonymous_id,
        timestamp: Some(timestamp),
        name,
        previous_id: f.previous_id,
        message_id: f.message_id,
        properties: f.properties.unwrap_or_default(),
        traits: f.traits.unwrap_or_default(),
    };
    draft.build(|| derived_id(line)).ok()
}

/// An event's fields as read from a line or a protobuf message, before the Segment rules are
/// applied: each as given, `None` where it is absent. Text fields are not yet checked.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    /// The `type`, as sent.
    pub kind: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub timestamp: Option<Ts>,
    /// The `event` of a track, the `name` of a page or screen; unused for the other kinds.
    pub name: Option<String>,
    pub previous_id: Option<String>,
    pub message_id: Option<String>,
    pub properties: Props,
    /// Kept only for an identify.
    pub traits: Props,
}

impl Draft {
    /// The event, or the first rule it breaks, checked in the order [`parse_value`] checks
    /// them so that both report the same field and reason. `derived` names an event that
    /// came without a message id; it is called only then.
    pub(crate) fn build(self, derived: impl FnOnce() -> String) -> Result<Event, Rejection> {
        let kind = EventKind::parse(&self.kind).ok_or_else(|| unknown_type(&self.kind))?;

        let user_id = self.user_id.filter(|s| !s.is_empty());
        let anonymous_id = self.anonymous_id.filter(|s| !s.is_empty());
        check_id("userId", user_id.as_deref())?;
        check_id("anonymousId", anonymous_id.as_deref())?;
        // The anonymous id is kept beside a user id, and becomes the user without one.
        let (user, anonymous_id) = match (user_id, anonymous_id) {
            (Some(user), anonymous_id) => (user, anonymous_id),
            (None, Some(anonymous_id)) => (anonymous_id, None),
            (None, None) => return Err(missing_user()),
        };

        let timestamp = self
            .timestamp
            .ok_or_else(|| Rejection::new(RejectReason::BadTimestamp, "timestamp", "missing"))?;
        let timestamp = check_event_time(timestamp)
            .map_err(|why| Rejection::new(RejectReason::BadTimestamp, "timestamp", why))?;

        let name = match kind {
            EventKind::Track => self
                .name
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Rejection::new(RejectReason::MissingEvent, "event", "missing"))?,
            EventKind::Page => self.name.unwrap_or_else(|| "Page Viewed".into()),
            EventKind::Screen => self.name.unwrap_or_else(|| "Screen Viewed".into()),
            EventKind::Identify => "Identify".into(),
            EventKind::Alias => "Alias".into(),
        };
        check_name(kind, &name)?;

        check_id("previousId", self.previous_id.as_deref())?;
        if kind == EventKind::Alias && self.previous_id.is_none() {
            return Err(alias_without_previous_id());
        }

        // As in `parse_value`: only an identify's own traits count.
        let traits = match kind {
            EventKind::Identify => self.traits,
            _ => Props::new(),
        };
        let message_id = match self.message_id {
            Some(id) if !id.is_empty() => id,
            _ => derived(),
        };
        check_id("messageId", Some(&message_id))?;

        Ok(Event {
            kind,
            message_id,
            user,
            anonymous_id,
            name,
            properties: self.properties,
            traits,
            timestamp,
            previous_id: self.previous_id,
        })
    }
}

fn unknown_type(kind_text: &str) -> Rejection {
    let shown: String = kind_text.chars().take(40).collect();
    Rejection::new(
        RejectReason::UnknownType,
        "type",
        format!("{shown:?} is not one of track, identify, alias, page, screen"),
    )
}

fn missing_user() -> Rejection {
    Rejection::new(
        RejectReason::MissingUserId,
        "userId",
        "neither userId nor anonymousId",
    )
}

fn alias_without_previous_id() -> Rejection {
    Rejection::new(
        RejectReason::BadField,
        "previousId",
        "alias needs previousId",
    )
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
    let kind = EventKind::parse(&kind_text).ok_or_else(|| unknown_type(&kind_text))?;

    let user_id = take_string(&mut obj, "userId")?.filter(|s| !s.is_empty());
    let anonymous_id = take_string(&mut obj, "anonymousId")?.filter(|s| !s.is_empty());
    check_id("userId", user_id.as_deref())?;
    check_id("anonymousId", anonymous_id.as_deref())?;
    let user = user_id
        .clone()
        .or_else(|| anonymous_id.clone())
        .ok_or_else(missing_user)?;

    let timestamp = match take_string(&mut obj, "timestamp")? {
        Some(text) => parse_event_time(&text)
            .map_err(|why| Rejection::new(RejectReason::BadTimestamp, "timestamp", why))?,
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
    check_name(kind, &name)?;

    let previous_id = take_string(&mut obj, "previousId")?;
    check_id("previousId", previous_id.as_deref())?;
    if kind == EventKind::Alias && previous_id.is_none() {
        return Err(alias_without_previous_id());
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
    check_id("messageId", Some(&message_id))?;

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
pub(crate) fn derived_id(raw: &str) -> String {
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
    fn ids_that_cannot_be_keys_are_refused_by_field() {
        let line = |user: &str, message: &str| {
            serde_json::json!({"type": "track", "userId": user, "event": "Opened",
                "messageId": message, "timestamp": "2017-11-25T00:00:00Z"})
            .to_string()
        };
        let long = "u".repeat(MAX_ID_BYTES + 1);
        for (l, field, why) in [
            (line(&long, "m1"), "userId", "longer than 512"),
            (line("   ", "m1"), "userId", "only whitespace"),
            (line("a\nb", "m1"), "userId", "control character"),
            (line("u1", "m\u{0}"), "messageId", "control character"),
        ] {
            let r = parse_line(&l).expect_err("refused");
            assert_eq!(
                (r.reason, r.field.as_str()),
                (RejectReason::BadField, field)
            );
            assert!(r.detail.contains(why), "{}", r.detail);
        }
        // The longest id accepted, and ids with spaces or any script, pass.
        assert!(parse_line(&line(&"u".repeat(MAX_ID_BYTES), "m1")).is_ok());
        assert!(parse_line(&line("Zoë Ω 42", "m 1")).is_ok());
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
    fn timestamps_outside_1970_to_the_calendar_end_are_refused_with_the_range() {
        let line = |at: &str| {
            serde_json::json!({"type": "track", "userId": "u1", "event": "Opened",
                "messageId": "m1", "timestamp": at})
            .to_string()
        };
        let range = "the supported range is 1970-01-01T00:00:00.000Z to 9999-12-30T22:00:00.999Z";
        for (at, why) in [
            ("0000-01-01T00:00:00Z", "before 1970-01-01T00:00:00.000Z"),
            (
                "1969-12-31T23:59:59.999Z",
                "before 1970-01-01T00:00:00.000Z",
            ),
            ("9999-12-31T23:59:59.999Z", "out of range"),
        ] {
            let r = parse_line(&line(at)).expect_err(at);
            assert_eq!(
                (r.reason, r.field.as_str()),
                (RejectReason::BadTimestamp, "timestamp")
            );
            assert_eq!(r.detail, format!("{at:?} is {why}; {range}"));
        }
        // The edges themselves are events; far in the future is for the server to judge.
        for at in ["1970-01-01T00:00:00Z", "9999-12-30T22:00:00.999Z"] {
            assert!(parse_line(&line(at)).is_ok(), "{at}");
        }
    }

    #[test]
    fn direct_read_agrees_with_the_general_way() {
        let lines = [
            r#"{"type":"track","userId":"u1","event":"Product Added","properties":{"sku":"a","n":1.5},"messageId":"m1","timestamp":"2017-11-25T00:00:00.000Z"}"#,
            r#"{"type":"identify","userId":"u1","anonymousId":"a1","traits":{"plan":"pro"},"context":{"ip":"1.2.3.4"},"timestamp":"2017-11-25T00:00:00Z"}"#,
            r#"{"type":"page","anonymousId":"a1","name":null,"properties":null,"timestamp":"2017-11-25T00:00:00Z"}"#,
            r#"{"type":"screen","userId":"","anonymousId":"a2","timestamp":"2017-11-25T00:00:00Z","messageId":""}"#,
            r#"{"type":"alias","userId":"u1","previousId":"a1","timestamp":"2017-11-25T00:00:00Z"}"#,
            r#"{"type":"track","userId":"u1","event":"A","event":"B","properties":{"x":1},"properties":{"y":2},"timestamp":"2017-11-25T00:00:00Z"}"#,
            r#"{"typ\u0065":"track","userId":"u1","event":"x","traits":{"a":1},"timestamp":"2017-11-25T00:00:00Z"}"#,
        ];
        for line in lines {
            let general = serde_json::from_str(line)
                .ok()
                .and_then(|v| parse_value(v, line).ok());
            assert!(general.is_some(), "{line}");
            assert_eq!(parse_direct(line), general, "{line}");
        }
    }

    #[test]
    fn lines_the_direct_read_leaves_get_the_general_answer() {
        let numeric =
            r#"{"type":"track","userId":42,"event":"x","timestamp":"2017-11-25T00:00:00Z"}"#;
        assert!(parse_direct(numeric).is_none());
        assert_eq!(parse_line(numeric).ok().map(|e| e.user), Some("42".into()));

        let bad_escape = r#"{"type":"track","userId":"u","event":"x","extra":"\ud800","timestamp":"2017-11-25T00:00:00Z"}"#;
        assert!(parse_direct(bad_escape).is_none());
        assert_eq!(reason(bad_escape), Some(RejectReason::MalformedJson));

        let bad_traits = r#"{"type":"track","userId":"u","event":"x","traits":[1],"timestamp":"2017-11-25T00:00:00Z"}"#;
        assert_eq!(reason(bad_traits), Some(RejectReason::BadField));
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
