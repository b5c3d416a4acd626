//! Conversions between protobuf well-known types and JSON values.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Timestamp, Value};

/// A protobuf `Struct` as a JSON object.
pub fn struct_to_json(s: &Struct) -> serde_json::Map<String, serde_json::Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

pub fn value_to_json(v: &Value) -> serde_json::Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_json(s)),
    }
}

/// [`struct_to_json`] for a `Struct` that is no longer needed: its keys and strings move into
/// the JSON object instead of being copied.
pub fn struct_into_json(s: Struct) -> serde_json::Map<String, serde_json::Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_into_json(v)))
        .collect()
}

/// [`value_to_json`], taking the value.
pub fn value_into_json(v: Value) -> serde_json::Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
        Some(Kind::NumberValue(n)) => number(n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.into_iter().map(value_into_json).collect())
        }
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_into_json(s)),
    }
}

/// Protobuf numbers are doubles; whole numbers come back as JSON integers so that `3` stays
/// `3` in templates and comparisons.
fn number(n: f64) -> serde_json::Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

/// A JSON object as a protobuf `Struct`.
pub fn json_to_struct(m: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

pub fn json_to_value(v: &serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(m) => Kind::StructValue(json_to_struct(m)),
    };
    Value { kind: Some(kind) }
}

/// Milliseconds since the epoch as a protobuf `Timestamp`.
pub fn millis_to_timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A protobuf `Timestamp` as milliseconds since the epoch.
pub fn timestamp_to_millis(t: &Timestamp) -> i64 {
    t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_struct() {
        let json = serde_json::json!({"a": 1, "b": [true, null, "x"], "c": {"d": 2.5}});
        let obj = json.as_object().cloned().unwrap_or_default();
        assert_eq!(
            serde_json::Value::Object(struct_to_json(&json_to_struct(&obj))),
            json
        );
    }

    #[test]
    fn taking_a_struct_gives_what_copying_it_gives() {
        let json = serde_json::json!({"n": 3.0, "f": 0.5, "big": 1e300, "l": [{"x": null}, "s"]});
        let obj = json.as_object().cloned().unwrap_or_default();
        let s = json_to_struct(&obj);
        assert_eq!(struct_into_json(s.clone()), struct_to_json(&s));
    }

    #[test]
    fn timestamps_round_trip_before_and_after_the_epoch() {
        for ms in [0, 1, 999, 1_511_568_000_123, -1, -1001] {
            assert_eq!(timestamp_to_millis(&millis_to_timestamp(ms)), ms);
        }
    }
}
