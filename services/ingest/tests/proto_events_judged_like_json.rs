//! A protobuf event is converted straight into the typed event, and must come out exactly as
//! it did when it was first written out as Segment JSON and parsed by the general JSON path:
//! the same event (derived message ids included) or the same refusal, field and reason.

use beckon_ingest::grpc::from_proto;
use beckon_ingest::{IngestError, Rejection, parse_value};
use beckon_proto::convert::{json_to_struct, struct_to_json};
use beckon_proto::v1::Event as ProtoEvent;
use prost_types::Timestamp;
use serde_json::{Map, Value, json};

/// The conversion as it was: the proto as a Segment JSON object, judged by `parse_value`.
fn through_json(e: ProtoEvent, kind: Option<&str>) -> Result<beckon_core::Event, IngestError> {
    let invalid = |reason, field: &str, detail: String| {
        IngestError::Invalid(Rejection::new(reason, field, detail))
    };
    let kind = match (kind, e.r#type.as_str()) {
        (Some(k), "") => k.to_string(),
        (Some(k), t) if t != k => {
            return Err(invalid(
                beckon_ingest::RejectReason::UnknownType,
                "event.type",
                format!("this call takes {k:?} events, not {t:?}"),
            ));
        }
        (_, t) => t.to_string(),
    };
    let name_key = if matches!(kind.as_str(), "page" | "screen") {
        "name"
    } else {
        "event"
    };
    let mut obj = Map::new();
    obj.insert("type".into(), Value::String(kind));
    for (key, value) in [
        ("messageId", e.message_id),
        ("userId", e.user_id),
        ("anonymousId", e.anonymous_id),
        (name_key, e.event),
        ("previousId", e.previous_id),
    ] {
        if !value.is_empty() {
            obj.insert(key.into(), Value::String(value));
        }
    }
    if let Some(p) = &e.properties {
        obj.insert("properties".into(), Value::Object(struct_to_json(p)));
    }
    if let Some(t) = &e.traits {
        obj.insert("traits".into(), Value::Object(struct_to_json(t)));
    }
    if let Some(ts) = &e.timestamp {
        let at = beckon_core::Ts::from_parts(ts.seconds, ts.nanos).map_err(|detail| {
            invalid(
                beckon_ingest::RejectReason::BadTimestamp,
                "event.timestamp",
                detail,
            )
        })?;
        obj.insert("timestamp".into(), Value::String(at.to_string()));
    }
    let raw = if obj.contains_key("messageId") {
        String::new()
    } else {
        Value::Object(obj.clone()).to_string()
    };
    parse_value(Value::Object(obj), &raw).map_err(|mut r| {
        r.field = if r.field.is_empty() {
            "event".into()
        } else {
            format!("event.{}", r.field)
        };
        IngestError::Invalid(r)
    })
}

fn object(v: Value) -> Option<prost_types::Struct> {
    v.as_object().map(json_to_struct)
}

fn base(kind: &str) -> ProtoEvent {
    ProtoEvent {
        r#type: kind.into(),
        message_id: "m-1".into(),
        user_id: "u1".into(),
        anonymous_id: "a1".into(),
        event: "Product Added".into(),
        properties: object(json!({"sku": "a", "n": 3.0, "price": 9.5, "tags": ["x", null]})),
        traits: object(json!({"plan": "pro"})),
        timestamp: Some(Timestamp {
            seconds: 1_511_568_000,
            nanos: 123_456_789,
        }),
        previous_id: String::new(),
    }
}

/// Events of every kind, well-formed and broken in each way the rules look at, several
/// broken at once so that which rule answers first is compared too.
fn cases() -> Vec<(ProtoEvent, Option<&'static str>)> {
    let with = |kind: &str, change: &dyn Fn(&mut ProtoEvent)| {
        let mut e = base(kind);
        change(&mut e);
        e
    };
    let at = |seconds: i64, nanos: i32| Some(Timestamp { seconds, nanos });
    let long = "u".repeat(beckon_ingest::segment::MAX_ID_BYTES + 1);
    let mut cases = Vec::new();
    for kind in ["track", "identify", "alias", "page", "screen", "bogus", ""] {
        cases.push((base(kind), None));
        cases.push((with(kind, &|e| e.previous_id = "old".into()), None));
        cases.push((with(kind, &|e| e.message_id.clear()), None));
        cases.push((with(kind, &|e| e.event.clear()), None));
        cases.push((with(kind, &|e| e.user_id.clear()), None));
        cases.push((
            with(kind, &|e| {
                e.user_id.clear();
                e.anonymous_id.clear();
            }),
            None,
        ));
        cases.push((with(kind, &|e| e.timestamp = None), None));
        cases.push((with(kind, &|e| e.timestamp = at(i64::MAX, 0)), None));
        cases.push((with(kind, &|e| e.timestamp = at(0, -1)), None));
        cases.push((with(kind, &|e| e.user_id = "  ".into()), None));
        cases.push((with(kind, &|e| e.anonymous_id = "a\nb".into()), None));
        cases.push((with(kind, &|e| e.message_id = long.clone()), None));
        cases.push((with(kind, &|e| e.previous_id = "p\u{7}".into()), None));
        cases.push((with(kind, &|e| e.event = "Signed\nUp".into()), None));
        cases.push((with(kind, &|e| e.event = long.clone()), None));
        cases.push((
            with(kind, &|e| {
                e.message_id = "m\u{0}".into();
                e.event.clear();
                e.timestamp = None;
            }),
            None,
        ));
        cases.push((
            with(kind, &|e| {
                e.properties = None;
                e.traits = None;
                e.message_id.clear();
            }),
            None,
        ));
        for call in ["track", "identify", "alias"] {
            cases.push((base(kind), Some(call)));
            cases.push((with(kind, &|e| e.r#type.clear()), Some(call)));
        }
    }

    // Instants at the ends of the calendar, before the epoch, and between milliseconds.
    let min = jiff::Timestamp::MIN.as_second();
    let max = jiff::Timestamp::MAX.as_second();
    for (seconds, nanos) in [
        (min, 0),
        (min, 999_999_999),
        (min - 1, 0),
        (max, 0),
        (max, 999_999_999),
        (max + 1, 0),
        (-62_167_219_200, 0),
        (-1, 500_000_000),
        (-1, 999_999),
        (0, 0),
        (0, 1_000_000_000),
        (1_764_000_000, 1_999_999),
    ] {
        cases.push((with("track", &|e| e.timestamp = at(seconds, nanos)), None));
        cases.push((
            with("page", &|e| {
                e.timestamp = at(seconds, nanos);
                e.message_id.clear();
            }),
            None,
        ));
    }
    cases
}

fn outcome(result: Result<beckon_core::Event, IngestError>) -> Result<beckon_core::Event, String> {
    result.map_err(|e| match e {
        IngestError::Invalid(r) => format!("{:?} {} {}", r.reason, r.field, r.detail),
        other => format!("not a rejection: {other}"),
    })
}

#[test]
fn proto_events_convert_as_through_segment_json() {
    let cases = cases();
    let mut refused = 0;
    for (event, kind) in cases {
        let direct = outcome(from_proto(event.clone(), kind));
        let json = outcome(through_json(event.clone(), kind));
        assert_eq!(direct, json, "{event:?} on a {kind:?} call");
        refused += usize::from(direct.is_err());
    }
    // Both answers were exercised, not only one of them.
    assert!(refused > 50, "{refused} refused");
}

#[test]
fn an_event_without_message_id_keeps_its_derived_id() {
    let mut e = base("track");
    e.message_id.clear();
    let first = from_proto(e.clone(), Some("track")).expect("valid");
    let again = from_proto(e.clone(), None).expect("valid");
    assert!(first.message_id.starts_with("gen-"), "{}", first.message_id);
    assert_eq!(first.message_id, again.message_id);

    e.event = "Another".into();
    let other = from_proto(e, None).expect("valid");
    assert_ne!(other.message_id, first.message_id);
}

#[test]
fn names_holding_control_characters_are_refused_by_field_on_every_path() {
    for (kind, field) in [("track", "event"), ("page", "name"), ("screen", "name")] {
        let mut event = base(kind);
        event.event = "Signed\u{1b}[2JUp".into();
        let refusal = format!("BadField event.{field} contains a control character");
        let direct = outcome(from_proto(event.clone(), None));
        assert_eq!(direct.as_ref().err(), Some(&refusal), "{kind}");
        assert_eq!(outcome(through_json(event, None)), direct, "{kind}");

        // A JSON line, as replay reads it, by the same rule.
        let line = json!({"type": kind, "userId": "u1", field: "Signed\u{0}Up",
            "timestamp": "2026-03-02T09:00:00Z"});
        let r = beckon_ingest::parse_line(&line.to_string()).expect_err("refused");
        assert_eq!(r.field, field, "{kind}");
        assert_eq!(r.detail, "contains a control character", "{kind}");
    }
}

#[test]
fn an_outsized_event_is_refused_whole_on_every_path() {
    use beckon_ingest::segment::MAX_EVENT_BYTES;

    let mut big = base("track");
    big.properties = object(json!({"blob": "x".repeat(MAX_EVENT_BYTES)}));
    let refusal = outcome(from_proto(big, None)).expect_err("refused");
    assert!(refusal.starts_with("BadField event "), "{refusal}");
    assert!(
        refusal.contains(&format!("larger than {MAX_EVENT_BYTES}")),
        "{refusal}"
    );

    // An event just inside the limit passes.
    let mut fits = base("track");
    fits.properties = object(json!({"blob": "x".repeat(MAX_EVENT_BYTES - 200)}));
    assert!(outcome(from_proto(fits, None)).is_ok());

    // A JSON line, as replay reads it, by its length.
    let line = json!({"type": "track", "userId": "u1", "event": "Opened",
        "timestamp": "2026-03-02T09:00:00Z", "properties": {"blob": "x".repeat(MAX_EVENT_BYTES)}});
    let r = beckon_ingest::parse_line(&line.to_string()).expect_err("refused");
    assert!(
        r.detail.contains(&format!("larger than {MAX_EVENT_BYTES}")),
        "{}",
        r.detail
    );
}
