//! Reading YAML strictly, with every refusal placed at its line and column: spec files and the
//! services' config files alike.
//!
//! serde keeps one of two values given for the same key without a word (a map keeps the last,
//! a struct refuses without saying where). Here every mapping, at any depth, remembers the
//! keys it has read, and a key given again is refused while the YAML reader still stands on
//! it, so the error carries the second key's line and column like any other error.

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// Reads `text` as a `T`. The error names the key's path, the reason, and the line and column
/// where the reader was.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    T::deserialize(strict(serde_norway::Deserializer::from_str(text))).map_err(located)
}

/// `de` made strict: a key given twice in one mapping is an error, raised where the second
/// one is read.
pub fn strict<'de, D: Deserializer<'de>>(de: D) -> impl Deserializer<'de, Error = D::Error> {
    Strict { de, keys: None }
}

/// The error's text with its place. The YAML reader leaves the place out when it is the very
/// first character, where a first key that is unknown or misspelt is.
fn located(e: serde_norway::Error) -> String {
    match e.location() {
        Some(at) if at.line() == 1 && at.column() == 1 => format!("{e} at line 1 column 1"),
        _ => e.to_string(),
    }
}

/// Where the value of the key at `path` is written in `text` (line and column from 1), for a
/// problem found after reading, when the reader's own place is gone: a setting checked
/// against another. Block mappings are followed by indentation, flow mappings
/// (`retry: { base_delay: 100 }`) by their braces; the key's own place when its value starts
/// on the next line. `None` when the key is not written plainly (inside a list, quoted,
/// merged from an anchor).
pub fn value_place(text: &str, path: &[&str]) -> Option<(u32, u32)> {
    if path.is_empty() {
        return None;
    }
    // The keys of the block mappings that hold the current line, with their indentation.
    let mut outer: Vec<(usize, &str)> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let number = u32::try_from(number + 1).ok()?;
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') || content.starts_with("---") {
            continue;
        }
        let indent = line.len() - content.len();
        while outer.last().is_some_and(|(i, _)| *i >= indent) {
            outer.pop();
        }
        // A list item holds what follows it; no path given here goes through a list.
        let (indent, content) = match content.strip_prefix('-') {
            Some(item) if item.is_empty() || item.starts_with(' ') => {
                outer.push((indent, "-"));
                let item_content = item.trim_start();
                (line.len() - item_content.len(), item_content)
            }
            _ => (indent, content),
        };
        let Some((key, after)) = plain_key(content) else {
            continue;
        };
        outer.push((indent, key));

        let at = indent + key.len() + 1;
        let value = at + (after.len() - after.trim_start().len());
        let held = outer.iter().map(|(_, k)| *k);
        if held.clone().eq(path.iter().copied()) {
            let column = if after.trim().is_empty() || after.trim_start().starts_with('#') {
                indent
            } else {
                value
            };
            return Some((number, column_of(line, column)));
        }
        if after.trim_start().starts_with('{') {
            let keys: Vec<&str> = held.collect();
            if let Some(rest) = path.strip_prefix(keys.as_slice())
                && let Some(byte) = flow_place(&line[value..], rest)
            {
                return Some((number, column_of(line, value + byte)));
            }
        }
    }
    None
}

/// `key` and what follows its colon, when `content` starts with a plain mapping key.
fn plain_key(content: &str) -> Option<(&str, &str)> {
    let end = content
        .char_indices()
        .find(|(i, c)| {
            *c == ':'
                && content[i + 1..]
                    .chars()
                    .next()
                    .is_none_or(char::is_whitespace)
        })
        .map(|(i, _)| i)?;
    let key = &content[..end];
    let plain = !key.is_empty()
        && !key.starts_with(['-', '{', '[', '"', '\'', '&', '*', '!', '?'])
        && !key.contains([' ', ',', '{', '}', '#']);
    plain.then(|| (key, &content[end + 1..]))
}

/// The byte offset in `flow` (text that opens with `{`) of the value of the key at `path`
/// inside it.
fn flow_place(flow: &str, path: &[&str]) -> Option<usize> {
    // The key read last at each depth of braces; a key is a run of plain characters ending
    // in `: `.
    let mut keys: Vec<Option<&str>> = Vec::new();
    let mut token_start: Option<usize> = None;
    let mut chars = flow.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => {
                keys.push(None);
                token_start = None;
            }
            '}' => {
                keys.pop();
                if keys.is_empty() {
                    return None;
                }
                token_start = None;
            }
            ',' => {
                if let Some(last) = keys.last_mut() {
                    *last = None;
                }
                token_start = None;
            }
            '"' | '\'' => {
                // Quoted text is skipped whole; a quote closes it.
                for (_, q) in chars.by_ref() {
                    if q == c {
                        break;
                    }
                }
                token_start = None;
            }
            ':' if chars.peek().is_none_or(|(_, n)| n.is_whitespace()) => {
                let key = token_start.map(|s| flow[s..i].trim());
                if let (Some(key), Some(last)) = (key, keys.last_mut()) {
                    *last = Some(key);
                }
                token_start = None;

                let held: Vec<&str> = keys.iter().map(|k| k.unwrap_or_default()).collect();
                if held == path {
                    let after = &flow[i + 1..];
                    return Some(i + 1 + after.len() - after.trim_start().len());
                }
            }
            c if c.is_whitespace() => {}
            _ => {
                token_start.get_or_insert(i);
            }
        }
    }
    None
}

/// The column (from 1, in characters) of byte `at` of `line`.
fn column_of(line: &str, at: usize) -> u32 {
    u32::try_from(line[..at].chars().count() + 1).unwrap_or(u32::MAX)
}

/// A deserializer that hands its visitors on wrapped, so every mapping below it checks its
/// keys. `keys` is set while a mapping key is read: the keys read before it in that mapping.
struct Strict<'k, D> {
    de: D,
    keys: Option<&'k mut Vec<String>>,
}

/// A visitor that wraps what it is given in turn, and refuses a mapping key already seen.
struct Wrap<'k, V> {
    inner: V,
    keys: Option<&'k mut Vec<String>>,
}

impl<'k, D> Strict<'k, D> {
    fn wrap<V>(self, inner: V) -> (D, Wrap<'k, V>) {
        (
            self.de,
            Wrap {
                inner,
                keys: self.keys,
            },
        )
    }
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $t:ty),*);)*) => {
        $(
            fn $method<V: Visitor<'de>>(
                self,
                $($arg: $t,)*
                visitor: V,
            ) -> Result<V::Value, D::Error> {
                let (de, visitor) = self.wrap(visitor);
                de.$method($($arg,)* visitor)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<'_, D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

impl<'k, V> Wrap<'k, V> {
    /// Remembers `key` in its mapping, or refuses it when the mapping already had it.
    fn first_time<E: de::Error>(&mut self, key: &str) -> Result<(), E> {
        let Some(keys) = self.keys.as_deref_mut() else {
            return Ok(());
        };
        if keys.iter().any(|k| k == key) {
            return Err(E::custom(format!(
                "duplicate key `{key}` (given before in the same mapping)"
            )));
        }
        keys.push(key.to_string());
        Ok(())
    }
}

macro_rules! forward_visit {
    ($($method:ident($t:ty);)*) => {
        $(
            fn $method<E: de::Error>(self, v: $t) -> Result<V::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<V::Value, E> {
        self.first_time(v)?;
        self.inner.visit_str(v)
    }

    fn visit_borrowed_str<E: de::Error>(mut self, v: &'de str) -> Result<V::Value, E> {
        self.first_time(v)?;
        self.inner.visit_borrowed_str(v)
    }

    fn visit_string<E: de::Error>(mut self, v: String) -> Result<V::Value, E> {
        self.first_time(&v)?;
        self.inner.visit_string(v)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Strict { de, keys: None })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Strict { de, keys: None })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(StrictSeq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(StrictMap {
            map,
            keys: Vec::new(),
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(StrictEnum(data))
    }
}

/// A value inside a mapping, sequence or enum, read strictly.
struct StrictSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for StrictSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Strict { de, keys: None })
    }
}

/// A mapping key, checked against the keys before it.
struct KeySeed<'k, S> {
    seed: S,
    keys: &'k mut Vec<String>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Strict {
            de,
            keys: Some(self.keys),
        })
    }
}

struct StrictSeq<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for StrictSeq<A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        self.0.next_element_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct StrictMap<A> {
    map: A,
    /// The keys of this mapping read so far.
    keys: Vec<String>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for StrictMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.map.next_key_seed(KeySeed {
            seed,
            keys: &mut self.keys,
        })
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

struct StrictEnum<A>(A);

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for StrictEnum<A> {
    type Error = A::Error;
    type Variant = StrictVariant<A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let (value, variant) = self.0.variant_seed(StrictSeed(seed))?;
        Ok((value, StrictVariant(variant)))
    }
}

struct StrictVariant<A>(A);

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for StrictVariant<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        self.0.newtype_variant_seed(StrictSeed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(
            len,
            Wrap {
                inner: visitor,
                keys: None,
            },
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(
            fields,
            Wrap {
                inner: visitor,
                keys: None,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        routes: BTreeMap<String, String>,
        #[serde(default)]
        list: Vec<Inner>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        size: u32,
    }

    fn refusal(text: &str) -> String {
        from_str::<Outer>(text).expect_err("refused")
    }

    #[test]
    fn a_key_given_twice_is_refused_where_it_is_given_again() {
        let err = refusal("name: a\ninner: {size: 1}\nname: b\n");
        assert!(err.contains("duplicate key `name`"), "{err}");
        assert!(err.ends_with("at line 3 column 1"), "{err}");

        let err = refusal("name: a\ninner:\n  size: 1\n  size: 2\n");
        assert!(err.starts_with("inner: duplicate key `size`"), "{err}");
        assert!(err.ends_with("at line 4 column 3"), "{err}");

        // A map would have kept the last value without a word.
        let err = refusal("name: a\nroutes:\n  push: apns\n  email: smtp\n  push: fcm\n");
        assert!(err.starts_with("routes: duplicate key `push`"), "{err}");
        assert!(err.ends_with("at line 5 column 3"), "{err}");

        // Mappings in a list each have keys of their own.
        let err = refusal("name: a\nlist:\n  - size: 1\n  - size: 2\n    size: 3\n");
        assert!(err.contains("duplicate key `size`"), "{err}");
        assert!(err.ends_with("at line 5 column 5"), "{err}");
    }

    #[test]
    fn unknown_keys_are_placed_even_on_the_first_line() {
        let err = refusal("nmae: a\n");
        assert!(err.contains("unknown field `nmae`"), "{err}");
        assert!(err.ends_with("at line 1 column 1"), "{err}");

        let err = refusal("name: a\ninner:\n  sise: 1\n");
        assert!(err.starts_with("inner: unknown field `sise`"), "{err}");
        assert!(err.ends_with("at line 3 column 3"), "{err}");
    }

    #[test]
    fn values_are_found_by_their_path_in_blocks_and_braces() {
        let text = "\
workspace: shop   # a comment
evict_after_ms: 1000
providers:
  channels: { push: apns }
  webhook:
    url: http://127.0.0.1:9/
    policy: { retry: { base_delay: 100, max_delay: 50 }, breaker: {} }
  twilio:
    policy:
      retry:
        max_delay:
          200
";
        let at = |path: &[&str]| value_place(text, path);
        assert_eq!(at(&["workspace"]), Some((1, 12)));
        assert_eq!(at(&["evict_after_ms"]), Some((2, 17)));
        assert_eq!(at(&["providers", "channels", "push"]), Some((4, 21)));
        assert_eq!(at(&["providers", "webhook", "url"]), Some((6, 10)));
        let retry = ["providers", "webhook", "policy", "retry"];
        assert_eq!(at(&[&retry[..], &["base_delay"]].concat()), Some((7, 36)));
        assert_eq!(at(&[&retry[..], &["max_delay"]].concat()), Some((7, 52)));
        let twilio = ["providers", "twilio", "policy", "retry", "max_delay"];
        assert_eq!(at(&twilio), Some((11, 9)));
        assert_eq!(at(&["providers", "webhook", "timeout_ms"]), None);
        assert_eq!(at(&["url"]), None);

        let text = "list:\n  - size: 1\n    other: 2\nsize: 3\n";
        assert_eq!(value_place(text, &["list", "other"]), None);
        assert_eq!(value_place(text, &["size"]), Some((4, 7)));
    }

    #[test]
    fn the_same_key_in_different_mappings_is_fine() {
        let text = "name: a\ninner: {size: 1}\nlist:\n  - size: 2\n  - size: 3\n";
        let read: Outer = from_str(text).expect("reads");
        assert_eq!(read.list.len(), 2);
        assert_eq!(read.inner, Some(Inner { size: 1 }));
    }
}
