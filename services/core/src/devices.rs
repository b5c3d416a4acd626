//! A user's push devices and contact addresses, kept as traits of the user.
//!
//! Apps register devices with an identify call:
//!
//! ```json
//! {"type": "identify", "userId": "u1", "traits": {
//!   "email": "ada@example.com", "phone": "+15555550100",
//!   "devices": {"ios": ["<apns token>"], "fcm": ["<fcm token>"],
//!               "ios-liveactivity": ["<activity push token>"]}}}
//! ```
//!
//! `devices` maps a platform to its tokens. When a provider calls a token invalid, the
//! gateway reports a `Device Token Invalid` event carrying the platform and the token, and
//! applying that event removes the token here: the user's state has one writer, its actor,
//! so the device goes away through the same path as any other change.

use serde_json::Value;

use crate::effect::Contacts;
use crate::event::Event;
use crate::state::UserState;

/// The trait holding the devices, by platform.
pub const DEVICES_TRAIT: &str = "devices";
/// The trait holding the email address.
pub const EMAIL_TRAIT: &str = "email";
/// The trait holding the phone number (E.164).
pub const PHONE_TRAIT: &str = "phone";
/// The event a gateway reports when a provider refuses a token for good.
pub const DEVICE_TOKEN_INVALID: &str = "Device Token Invalid";
/// Properties of that event: the platform and the token.
pub const PLATFORM_PROPERTY: &str = "platform";
pub const TOKEN_PROPERTY: &str = "token";

/// The user's tokens for one platform, in registration order.
pub fn tokens(state: &UserState, platform: &str) -> Vec<String> {
    state
        .trait_value(DEVICES_TRAIT)
        .and_then(|d| d.get(platform))
        .map(list_of_strings)
        .unwrap_or_default()
}

/// The strings of a list of tokens; anything else in it is not a token.
fn list_of_strings(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// A string trait (`email`, `phone`), when set.
pub fn address(state: &UserState, name: &str) -> Option<String> {
    state
        .trait_value(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// What a message on `channel` needs of the user's addresses: the email address for email,
/// the phone number for SMS, the device tokens for push and Live Activities; `None` for
/// channels that need none (in-app, webhook).
pub fn contacts_for(state: &UserState, channel: &str) -> Option<Contacts> {
    match channel {
        "email" => Some(Contacts {
            email: address(state, EMAIL_TRAIT),
            ..Contacts::default()
        }),
        "sms" => Some(Contacts {
            phone: address(state, PHONE_TRAIT),
            ..Contacts::default()
        }),
        "push" | "live_activity" => {
            let platforms = state.trait_value(DEVICES_TRAIT).and_then(Value::as_object);
            let devices = platforms
                .into_iter()
                .flatten()
                .filter_map(|(platform, list)| {
                    let tokens = list_of_strings(list);
                    (!tokens.is_empty()).then(|| (platform.clone(), tokens))
                })
                .collect();
            Some(Contacts {
                devices,
                ..Contacts::default()
            })
        }
        _ => None,
    }
}

/// Applies a `Device Token Invalid` event: removes the token from the platform's list.
/// Returns true when a token was removed. Other events change nothing.
pub fn apply_invalid_token(state: &mut UserState, event: &Event) -> bool {
    if event.name != DEVICE_TOKEN_INVALID {
        return false;
    }
    let prop = |name: &str| event.properties.get(name).and_then(Value::as_str);
    let (Some(platform), Some(token)) = (prop(PLATFORM_PROPERTY), prop(TOKEN_PROPERTY)) else {
        return false;
    };
    let Some(stored) = state.traits.get_mut(DEVICES_TRAIT) else {
        return false;
    };
    let Some(list) = stored.value.get_mut(platform).and_then(Value::as_array_mut) else {
        return false;
    };
    let before = list.len();
    list.retain(|t| t.as_str() != Some(token));
    before != list.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Props};
    use crate::time::Ts;
    use serde_json::json;

    fn event(name: &str, props: Value) -> Event {
        Event {
            kind: EventKind::Track,
            message_id: "gw-1".into(),
            user: "u1".into(),
            anonymous_id: None,
            name: name.into(),
            properties: props.as_object().cloned().unwrap_or_default(),
            traits: Props::new(),
            timestamp: Ts(10),
            previous_id: None,
        }
    }

    #[test]
    fn an_invalid_token_event_removes_only_that_token() {
        let mut state = UserState::new("w", "u1");
        let devices = json!({"ios": ["aa", "bb"], "fcm": ["aa"]});
        state.set_trait(DEVICES_TRAIT, devices, Ts(1));

        let bad = event(
            DEVICE_TOKEN_INVALID,
            json!({"platform": "ios", "token": "aa", "reason": "Unregistered"}),
        );
        assert!(apply_invalid_token(&mut state, &bad));
        assert_eq!(tokens(&state, "ios"), vec!["bb".to_string()]);
        assert_eq!(tokens(&state, "fcm"), vec!["aa".to_string()]);

        // Applying it again, or any other event, changes nothing.
        assert!(!apply_invalid_token(&mut state, &bad));
        let failed = event("Message Failed", json!({"platform": "ios", "token": "bb"}));
        assert!(!apply_invalid_token(&mut state, &failed));
        assert_eq!(tokens(&state, "ios"), vec!["bb".to_string()]);
    }

    #[test]
    fn a_message_carries_what_its_channel_needs() {
        let mut state = UserState::new("w", "u1");
        state.set_trait(EMAIL_TRAIT, json!("ada@example.com"), Ts(1));
        state.set_trait(PHONE_TRAIT, json!("+15555550100"), Ts(1));
        let devices = json!({"ios": ["aa"], "fcm": [], "ios-liveactivity": ["la"]});
        state.set_trait(DEVICES_TRAIT, devices, Ts(1));

        let email = contacts_for(&state, "email").expect("email");
        assert_eq!(email.email.as_deref(), Some("ada@example.com"));
        assert_eq!((email.phone, email.devices.len()), (None, 0));
        let sms = contacts_for(&state, "sms").expect("sms");
        assert_eq!(sms.phone.as_deref(), Some("+15555550100"));
        assert_eq!(sms.email, None);

        let push = contacts_for(&state, "push").expect("push");
        assert_eq!(push.tokens("ios"), Some(&["aa".to_string()][..]));
        assert_eq!(push.tokens("fcm"), None, "no tokens is not an answer");
        assert_eq!(
            push.tokens("ios-liveactivity"),
            Some(&["la".to_string()][..])
        );
        assert_eq!(push.email, None);
        assert_eq!(contacts_for(&state, "live_activity"), Some(push));

        assert_eq!(contacts_for(&state, "in_app"), None);
        assert_eq!(contacts_for(&state, "webhook"), None);
        let nobody = contacts_for(&UserState::new("w", "u2"), "email").expect("email");
        assert_eq!(nobody, Contacts::default());
    }
}
