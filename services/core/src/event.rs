//! A validated behavioral event, in the shape of the Segment spec.

use serde::{Deserialize, Serialize};

use crate::time::Ts;

/// Event or trait properties: a JSON object that keeps its key order.
pub type Props = serde_json::Map<String, serde_json::Value>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Track,
    Identify,
    Alias,
    Page,
    Screen,
}

impl EventKind {
    pub fn parse(text: &str) -> Option<EventKind> {
        Some(match text {
            "track" => EventKind::Track,
            "identify" => EventKind::Identify,
            "alias" => EventKind::Alias,
            "page" => EventKind::Page,
            "screen" => EventKind::Screen,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Track => "track",
            EventKind::Identify => "identify",
            EventKind::Alias => "alias",
            EventKind::Page => "page",
            EventKind::Screen => "screen",
        }
    }
}

/// An event that passed validation. `user` is the id Beckon keys state by: the `userId` when
/// there is one, otherwise the `anonymousId`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub message_id: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    /// The event name: the `event` of a track, `Page Viewed: <name>` style names are not
    /// invented; pages and screens use their `name`, or "Page Viewed" / "Screen Viewed".
    pub name: String,
    #[serde(default, skip_serializing_if = "Props::is_empty")]
    pub properties: Props,
    #[serde(default, skip_serializing_if = "Props::is_empty")]
    pub traits: Props,
    pub timestamp: Ts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<String>,
}

impl Event {
    /// The name journeys and segments match on.
    pub fn name(&self) -> &str {
        &self.name
    }
}
