//! The rules every service applies to the ids and names clients send: user, anonymous,
//! previous and message ids, and event names. One rule wherever they arrive (events over
//! gRPC or in files, requests that name a user, messages handed to a gateway), so what one
//! service accepts another does not refuse later.

/// Longest id accepted (user, anonymous, previous and message ids, in bytes). Ids become part
/// of store keys and of every message and decision about the user, so one unbounded id would
/// cost every structure that names it.
pub const MAX_ID_BYTES: usize = 512;

/// Longest idempotency key a gateway accepts, in bytes. Journeys build a message's key from
/// the workspace, the user id, the journey and step ids and two counters, so the journey and
/// step ids a spec may use are bounded by what is left of it.
pub const MAX_KEY_BYTES: usize = 4096;

/// Longest workspace name, in bytes (1 to 64 letters, digits, `-` or `_`).
pub const MAX_WORKSPACE_BYTES: usize = 64;

/// What a workspace name must be, in the words every refusal of one uses.
pub const WORKSPACE_RULE: &str = "expected 1 to 64 letters, digits, '-' or '_'";

/// Whether `name` can name a workspace: it is a part of every store key, in a Redis Cluster
/// hash tag, so only plain characters that can never close the tag or split the key.
pub fn workspace_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_WORKSPACE_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Why an id cannot be used, if it cannot: too long, blank, or holding control characters
/// (which keys, logs and exported files would carry along unseen). The one rule for user ids
/// wherever they arrive: in events, and in requests that name a user.
pub fn id_problem(id: &str) -> Option<String> {
    if id.len() <= MAX_ID_BYTES && id.trim().is_empty() {
        return Some("only whitespace".into());
    }
    name_problem(id)
}

/// Why an event, page or screen name cannot be used, if it cannot: too long or holding
/// control characters. Names key the counts and windows kept per user and are printed in
/// every decision about the event, as ids are.
pub fn name_problem(name: &str) -> Option<String> {
    if name.len() > MAX_ID_BYTES {
        return Some(format!("{} bytes, longer than {MAX_ID_BYTES}", name.len()));
    }
    if name.chars().any(char::is_control) {
        return Some("contains a control character".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_found_in_ascii_and_in_other_text() {
        for c in (0..=0x10ffff_u32).filter_map(char::from_u32) {
            for name in [format!("ab{c}"), format!("é{c}")] {
                assert_eq!(name_problem(&name).is_some(), c.is_control(), "{:?}", c);
            }
        }
        assert_eq!(id_problem(" \t"), Some("only whitespace".into()));
        assert_eq!(name_problem("Product Viewed"), None);
    }
}
