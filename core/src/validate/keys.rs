//! The duplicate-key check's fast path: a deserializer wrapper that sees every object key while
//! `T` decodes, so that the token scan ([`super::find_duplicate_key`]) runs only when a key may
//! repeat or some keys went by unseen.
//!
//! The wrapper changes nothing about the decode: every call goes to serde_json unchanged, with
//! its visitor, seeds and accesses wrapped so that the keys of every object reach a per-object
//! set. It answers one question, "must the scan run?", and answers yes (conservatively) when:
//! - an object repeats a key;
//! - a key reaches the visitor as anything but a string slice of the body (a key spelled with
//!   escapes, a number or a bool parsed from the key): the set compares only the body's text;
//! - `T` skips a value that is an object or an array (an unknown field holding a container):
//!   serde_json skips it without showing its keys, laxly (see [`super::find_duplicate_key`]);
//! - `T` holds a `RawValue`, whose keys serde_json never shows.
//!
//! The scan stays the one judge of what repeats and where: the wrapper only spares it on the
//! common payload. `validate` asserts in debug builds (every test run) that it never spares a
//! body the scan would reject; the `validate_json` fuzz target, built without debug
//! assertions, checks the same from outside with its own scan.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde_json::value::RawValue;
use smallvec::SmallVec;

use super::{LINEAR, key_tag, tag_bit};

/// Decodes a `T` from `de` and says whether the duplicate-key scan must run on the body.
pub(super) fn deserialize<'de, T, D>(de: D) -> Result<(T, bool), D::Error>
where
    T: de::Deserialize<'de>,
    D: Deserializer<'de>,
{
    let scan = Cell::new(false);
    let value = T::deserialize(Checked {
        inner: de,
        scan: &scan,
    })?;
    Ok((value, scan.get()))
}

/// The keys one object has shown so far.
struct Keys<'de> {
    /// One bit per key tag seen ([`tag_bit`]): a key whose bit is clear is new without
    /// comparing.
    tags: u64,
    seen: SmallVec<[&'de str; LINEAR]>,
    set: Option<HashSet<&'de str>>,
}

impl<'de> Keys<'de> {
    fn new() -> Self {
        Self {
            tags: 0,
            seen: SmallVec::new(),
            set: None,
        }
    }

    /// Adds `key`; false if the object already had it.
    #[inline]
    fn insert(&mut self, key: &'de str) -> bool {
        if let Some(set) = &mut self.set {
            return set.insert(key);
        }
        let bit = tag_bit(key_tag(key));
        if self.tags & bit != 0 && self.seen.contains(&key) {
            return false;
        }
        self.tags |= bit;
        self.seen.push(key);
        if self.seen.len() > LINEAR {
            self.set = Some(self.seen.drain(..).collect());
        }
        true
    }
}

/// One piece of serde's protocol, wrapped: as a deserializer, visitor, seed, or sequence, enum
/// or variant access (whichever trait `T` has), it hands every call on to `inner` and wraps
/// whatever it gets back to go deeper.
struct Checked<'a, T> {
    inner: T,
    scan: &'a Cell<bool>,
}

/// The same for an object's key and what leads to it (the map access, the key's seed, its
/// deserializer and its visitor, which records the key before handing it on).
struct Keyed<'a, 'k, 'de, T> {
    inner: T,
    scan: &'a Cell<bool>,
    keys: &'k mut Keys<'de>,
}

/// Deserializer methods that hand the visitor on wrapped (by the deserializer's `split`);
/// `every_but_two` is all of them but `deserialize_newtype_struct` and
/// `deserialize_ignored_any`, which a value's deserializer handles itself.
macro_rules! forward_deserializer {
    (every_but_two) => {
        forward_deserializer! {
            deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(),
            deserialize_i32(), deserialize_i64(), deserialize_i128(), deserialize_u8(),
            deserialize_u16(), deserialize_u32(), deserialize_u64(), deserialize_u128(),
            deserialize_f32(), deserialize_f64(), deserialize_char(), deserialize_str(),
            deserialize_string(), deserialize_bytes(), deserialize_byte_buf(), deserialize_option(),
            deserialize_unit(), deserialize_unit_struct(name: &'static str),
            deserialize_seq(), deserialize_tuple(len: usize),
            deserialize_tuple_struct(name: &'static str, len: usize), deserialize_map(),
            deserialize_struct(name: &'static str, fields: &'static [&'static str]),
            deserialize_enum(name: &'static str, variants: &'static [&'static str]),
            deserialize_identifier(),
        }
    };
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            let (inner, visitor) = self.split(visitor);
            inner.$method($($arg,)* visitor)
        }
    )*};
}

/// Visitor methods that hand a plain value on unchanged, after calling `$before` when one is
/// named; `every_but_borrowed_str` is all of them but `visit_borrowed_str`, the one a key's
/// visitor records.
macro_rules! forward_visits {
    ($($before:ident)?; every_but_borrowed_str) => {
        forward_visits! { $($before)?;
            visit_bool(bool), visit_i8(i8), visit_i16(i16), visit_i32(i32), visit_i64(i64),
            visit_i128(i128), visit_u8(u8), visit_u16(u16), visit_u32(u32), visit_u64(u64),
            visit_u128(u128), visit_f32(f32), visit_f64(f64), visit_char(char), visit_str(&str),
            visit_string(String), visit_bytes(&[u8]), visit_borrowed_bytes(&'de [u8]),
            visit_byte_buf(Vec<u8>),
        }
    };
    ($before:ident; $($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.$before();
            self.inner.$method(v)
        }
    )*};
    (; $($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'a, D> Checked<'a, D> {
    fn split<V>(self, visitor: V) -> (D, Checked<'a, V>) {
        let wrap = Checked {
            inner: visitor,
            scan: self.scan,
        };
        (self.inner, wrap)
    }
}

impl<'a, 'k, 'de, D> Keyed<'a, 'k, 'de, D> {
    fn split<V>(self, visitor: V) -> (D, Keyed<'a, 'k, 'de, V>) {
        let wrap = Keyed {
            inner: visitor,
            scan: self.scan,
            keys: self.keys,
        };
        (self.inner, wrap)
    }
}

/// Visitor methods that hand a deserializer or an access on unchanged, after `$before`.
macro_rules! forward_accesses {
    ($before:ident; $($method:ident($g:ident: $bound:ident)),* $(,)?) => {$(
        fn $method<$g: $bound<'de>>(self, v: $g) -> Result<Self::Value, $g::Error> {
            self.$before();
            self.inner.$method(v)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Checked<'_, D> {
    type Error = D::Error;

    forward_deserializer!(every_but_two);

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        if name.starts_with("$serde_json::private::") {
            // serde_json's own tokens (a `RawValue`): its protocol with the visitor is private,
            // so hand it on untouched, and let the scan see the keys inside.
            self.scan.set(true);
            return self.inner.deserialize_newtype_struct(name, visitor);
        }
        self.inner.deserialize_newtype_struct(
            name,
            Checked {
                inner: visitor,
                scan: self.scan,
            },
        )
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        // What serde_json's own `deserialize_ignored_any` does (skip the value, laxly, then
        // `visit_unit`), but with the skipped text in hand: a skipped container may hold keys.
        let skipped = <&RawValue>::deserialize(self.inner)?;
        if matches!(skipped.get().as_bytes().first(), Some(b'{' | b'[')) {
            self.scan.set(true);
        }
        visitor.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

impl<'de, 'k, D: Deserializer<'de>> Deserializer<'de> for Keyed<'_, 'k, 'de, D> {
    type Error = D::Error;

    forward_deserializer!(every_but_two);
    forward_deserializer! {
        deserialize_newtype_struct(name: &'static str), deserialize_ignored_any(),
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Checked<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visits!(; every_but_borrowed_str);
    forward_visits! { ; visit_borrowed_str(&'de str) }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Checked {
            inner: d,
            scan: self.scan,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Checked {
            inner: d,
            scan: self.scan,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_seq(Checked {
            inner: seq,
            scan: self.scan,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut keys = Keys::new();
        self.inner.visit_map(Keyed {
            inner: map,
            scan: self.scan,
            keys: &mut keys,
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(Checked {
            inner: data,
            scan: self.scan,
        })
    }
}

impl<'de, V: Visitor<'de>> Keyed<'_, '_, 'de, V> {
    /// A key the set cannot hold (not a slice of the body): only the scan can judge it.
    fn unseen(&self) {
        self.scan.set(true);
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Keyed<'_, '_, 'de, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        if !self.keys.insert(v) {
            self.scan.set(true);
        }
        self.inner.visit_borrowed_str(v)
    }

    // serde_json hands over a key spelled with escapes from its scratch buffer (`visit_str`);
    // numbers and bools parsed from a key arrive as such.
    forward_visits!(unseen; every_but_borrowed_str);

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.unseen();
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.unseen();
        self.inner.visit_unit()
    }

    forward_accesses! { unseen;
        visit_some(D: Deserializer), visit_newtype_struct(D: Deserializer),
        visit_seq(A: SeqAccess), visit_map(A: MapAccess), visit_enum(A: EnumAccess),
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Checked<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.deserialize(Checked {
            inner: d,
            scan: self.scan,
        })
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Keyed<'_, '_, 'de, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.deserialize(Keyed {
            inner: d,
            scan: self.scan,
            keys: self.keys,
        })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Checked<'_, A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        self.inner.next_element_seed(Checked {
            inner: seed,
            scan: self.scan,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Keyed<'_, '_, 'de, A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        self.inner.next_key_seed(Keyed {
            inner: seed,
            scan: self.scan,
            keys: &mut *self.keys,
        })
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.next_value_seed(Checked {
            inner: seed,
            scan: self.scan,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'a, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Checked<'a, A> {
    type Error = A::Error;
    type Variant = Checked<'a, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        // The variant's name is the key of a one-key object (or a string): serde_json refuses
        // a second key, so there is nothing to record.
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((
            value,
            Checked {
                inner: variant,
                scan: self.scan,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Checked<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.newtype_variant_seed(Checked {
            inner: seed,
            scan: self.scan,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(
            len,
            Checked {
                inner: visitor,
                scan: self.scan,
            },
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(
            fields,
            Checked {
                inner: visitor,
                scan: self.scan,
            },
        )
    }
}
