//! How `beckon user get` prints a user: one JSON document, so the output reads plainly and
//! pipes into `jq` or another program.

use beckon_core::Ts;
use beckon_proto::convert::timestamp_to_millis;
use beckon_proto::v1::{JourneyPosition, UserView};
use serde::Serialize;
use serde_json::Value;

#[derive(Serialize)]
struct Printed<'a> {
    user_id: &'a str,
    version: u64,
    segments: &'a [String],
    journeys: Vec<Position<'a>>,
    /// The behavioural state as a JSON value, not as a string holding JSON.
    state: Value,
}

#[derive(Serialize)]
struct Position<'a> {
    journey: &'a str,
    version: u32,
    step: &'a str,
    /// RFC 3339, as every other time the command prints.
    #[serde(skip_serializing_if = "Option::is_none")]
    entered_at: Option<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    key: &'a str,
}

impl<'a> From<&'a JourneyPosition> for Position<'a> {
    fn from(p: &'a JourneyPosition) -> Self {
        Position {
            journey: &p.journey,
            version: p.version,
            step: &p.step,
            entered_at: p
                .entered_at
                .as_ref()
                .map(|t| Ts(timestamp_to_millis(t)).to_string()),
            key: &p.key,
        }
    }
}

/// The view as indented JSON, ending with a newline.
pub fn render(view: &UserView) -> String {
    // A state the service sent as something other than JSON is still shown, as a string.
    let state = serde_json::from_str(&view.state_json)
        .unwrap_or_else(|_| Value::String(view.state_json.clone()));
    let printed = Printed {
        user_id: &view.user_id,
        version: view.version,
        segments: &view.segments,
        journeys: view.journeys.iter().map(Position::from).collect(),
        state,
    };
    // Strings, numbers and JSON values only: serialising cannot fail.
    let mut text = serde_json::to_string_pretty(&printed).unwrap_or_default();
    text.push('\n');
    text
}
