//! Where a string still appears in a server's data: key names and the contents of every key,
//! whatever its type. For checks that forgetting a user left nothing naming them.

use redis::{Connection, Value};

use crate::Result;

/// Every key matching `pattern` whose name or content holds `needle`, described as
/// `key <name>` or `value of <name>`. Strings, hashes, sets, sorted sets, lists and streams are
/// read whole; a key of another type is reported as unread, so the check never passes by
/// skipping something.
pub fn mentions(con: &mut Connection, pattern: &str, needle: &str) -> Result<Vec<String>> {
    let keys: Vec<String> = redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(1000)
        .clone()
        .iter(con)?
        .collect::<std::result::Result<_, _>>()?;

    let mut found = Vec::new();
    for key in keys {
        if key.contains(needle) {
            found.push(format!("key {key}"));
            continue;
        }
        let kind: String = redis::cmd("TYPE").arg(&key).query(con)?;
        let mut read = match kind.as_str() {
            "string" => redis::cmd("GET"),
            "hash" => redis::cmd("HGETALL"),
            "set" => redis::cmd("SMEMBERS"),
            "zset" => redis::cmd("ZRANGE"),
            "list" => redis::cmd("LRANGE"),
            "stream" => redis::cmd("XRANGE"),
            // Gone since the scan saw it.
            "none" => continue,
            other => {
                found.push(format!("unread {other} {key}"));
                continue;
            }
        };
        read.arg(&key);
        match kind.as_str() {
            "zset" => read.arg(0).arg(-1).arg("WITHSCORES"),
            "list" => read.arg(0).arg(-1),
            "stream" => read.arg("-").arg("+"),
            _ => &mut read,
        };
        let value: Value = read.query(con)?;
        if holds(&value, needle.as_bytes()) {
            found.push(format!("value of {key}"));
        }
    }
    Ok(found)
}

/// Whether any string inside the reply contains `needle`.
fn holds(value: &Value, needle: &[u8]) -> bool {
    let has = |bytes: &[u8]| bytes.windows(needle.len().max(1)).any(|w| w == needle);
    match value {
        Value::BulkString(b) => has(b),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => has(s.as_bytes()),
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
            items.iter().any(|v| holds(v, needle))
        }
        Value::Map(pairs) => pairs
            .iter()
            .any(|(k, v)| holds(k, needle) || holds(v, needle)),
        Value::Attribute { data, .. } => holds(data, needle),
        _ => false,
    }
}
