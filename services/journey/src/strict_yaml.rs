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
    fn the_same_key_in_different_mappings_is_fine() {
        let text = "name: a\ninner: {size: 1}\nlist:\n  - size: 2\n  - size: 3\n";
        let read: Outer = from_str(text).expect("reads");
        assert_eq!(read.list.len(), 2);
        assert_eq!(read.inner, Some(Inner { size: 1 }));
    }
}
