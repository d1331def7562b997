//! Decoding a record with a bound on how deeply it nests.
//!
//! [`Value`](crate::record::Value) nests (lists and dicts of values), and serde decodes it by
//! recursion: a hostile or corrupted frame with a valid checksum and a value nested a
//! million levels deep would overflow the reader's stack, which kills the process (the CLI,
//! or the pytest session reading its own run). [`Bounded`] wraps any serde deserializer and
//! counts every compound level (enum, sequence, tuple, map, struct, option, newtype); past
//! the limit it fails with an error instead of descending. Writers refuse values nested
//! deeper than [`MAX_VALUE_DEPTH`] (see `SegmentWriter::append`), so every record a writer
//! accepts reads back.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde::Deserialize;

use crate::record::{Record, Value};

/// The deepest [`Value`] a writer accepts: containers (lists, dicts) nested inside each
/// other, the outermost value counting as level 1.
pub const MAX_VALUE_DEPTH: usize = 128;

/// The most elements a decoded list or dict reserves room for up front. A length prefix
/// is the encoder's word: serde reserves up to 1 MiB for it, at every level of nesting, so
/// a few hundred hostile bytes could make the reader allocate hundreds of MiB. Past this,
/// lists grow as their elements actually arrive.
const PREALLOCATE: usize = 64;

/// Compound levels the decoder allows: a dict level of a value costs three (enum, sequence,
/// pair), and the record around the value a few more.
const MAX_DECODE_DEPTH: usize = 4 * MAX_VALUE_DEPTH + 16;

/// Decodes one record that fills `bytes` exactly, refusing nesting deeper than a writer can
/// produce. The same answers as `Record::decode` for every record a writer accepts.
pub(crate) fn decode_record(bytes: &[u8]) -> Result<Record, String> {
    let too_deep = Cell::new(false);
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let rec = Record::deserialize(Bounded {
        inner: &mut de,
        depth: MAX_DECODE_DEPTH,
        too_deep: &too_deep,
    });
    let rec = match rec {
        Ok(r) => r,
        Err(_) if too_deep.get() => {
            return Err(format!(
                "undecodable record: nested more than {MAX_DECODE_DEPTH} levels deep (writers stop at values {MAX_VALUE_DEPTH} deep)"
            ))
        }
        Err(e) => return Err(format!("undecodable record: {e}")),
    };
    match de.finalize() {
        Ok([]) => Ok(rec),
        Ok(rest) => Err(format!("{} trailing bytes after the record", rest.len())),
        Err(e) => Err(format!("undecodable record: {e}")),
    }
}

/// Whether `record` holds a value nested deeper than [`MAX_VALUE_DEPTH`]. Recursion here is
/// bounded by that limit.
pub(crate) fn too_deep(record: &Record) -> bool {
    fn over(v: &Value, budget: usize) -> bool {
        if budget == 0 {
            return true;
        }
        match v {
            Value::List(items) => items.iter().any(|x| over(x, budget - 1)),
            Value::Dict(pairs) => pairs.iter().any(|(_, x)| over(x, budget - 1)),
            _ => false,
        }
    }
    // Every variant that carries a Value (new ones must be added here).
    match record {
        Record::PropertySet { value, .. } | Record::PropertyAppend { value, .. } => {
            over(value, MAX_VALUE_DEPTH)
        }
        Record::TestPhase {
            report: Some(v), ..
        } => over(v, MAX_VALUE_DEPTH),
        _ => false,
    }
}

/// A deserializer that allows `depth` more compound levels.
struct Bounded<'a, D> {
    inner: D,
    depth: usize,
    too_deep: &'a Cell<bool>,
}

impl<D> Bounded<'_, D> {
    fn nest<E: de::Error>(&self) -> Result<usize, E> {
        if self.depth == 0 {
            self.too_deep.set(true);
            Err(E::custom("nested too deeply"))
        } else {
            Ok(self.depth - 1)
        }
    }
}

/// Wraps the visitor / access / seed `$v` so what it meets below stays bounded.
macro_rules! wrap {
    ($ty:ident, $v:expr, $depth:expr, $flag:expr) => {
        $ty {
            inner: $v,
            depth: $depth,
            too_deep: $flag,
        }
    };
}

macro_rules! forward_plain {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                self.inner.$method(visitor)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Bounded<'_, D> {
    type Error = D::Error;

    forward_plain!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_unit,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let depth = self.nest()?;
        self.inner
            .deserialize_any(wrap!(BoundedVisitor, visitor, depth, self.too_deep))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let depth = self.nest()?;
        self.inner
            .deserialize_option(wrap!(BoundedVisitor, visitor, depth, self.too_deep))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let depth = self.nest()?;
        self.inner
            .deserialize_newtype_struct(name, wrap!(BoundedVisitor, visitor, depth, self.too_deep))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let depth = self.nest()?;
        self.inner
            .deserialize_seq(wrap!(BoundedVisitor, visitor, depth, self.too_deep))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let depth = self.nest()?;
        self.inner
            .deserialize_tuple(len, wrap!(BoundedVisitor, visitor, depth, self.too_deep))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let depth = self.nest()?;
        self.inner.deserialize_tuple_struct(
            name,
            len,
            wrap!(BoundedVisitor, visitor, depth, self.too_deep),
        )
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let depth = self.nest()?;
        self.inner
            .deserialize_map(wrap!(BoundedVisitor, visitor, depth, self.too_deep))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let depth = self.nest()?;
        self.inner.deserialize_struct(
            name,
            fields,
            wrap!(BoundedVisitor, visitor, depth, self.too_deep),
        )
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let depth = self.nest()?;
        self.inner.deserialize_enum(
            name,
            variants,
            wrap!(BoundedVisitor, visitor, depth, self.too_deep),
        )
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

struct BoundedVisitor<'a, V> {
    inner: V,
    depth: usize,
    too_deep: &'a Cell<bool>,
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for BoundedVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner
            .visit_some(wrap!(Bounded, d, self.depth, self.too_deep))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner
            .visit_newtype_struct(wrap!(Bounded, d, self.depth, self.too_deep))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner
            .visit_seq(wrap!(BoundedAccess, seq, self.depth, self.too_deep))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner
            .visit_map(wrap!(BoundedAccess, map, self.depth, self.too_deep))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner
            .visit_enum(wrap!(BoundedAccess, data, self.depth, self.too_deep))
    }
}

/// Wraps a seed so the value it decodes goes through [`Bounded`].
struct BoundedSeed<'a, S> {
    inner: S,
    depth: usize,
    too_deep: &'a Cell<bool>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for BoundedSeed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner
            .deserialize(wrap!(Bounded, d, self.depth, self.too_deep))
    }
}

/// A sequence, map, enum or variant access whose elements stay bounded.
struct BoundedAccess<'a, A> {
    inner: A,
    depth: usize,
    too_deep: &'a Cell<bool>,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for BoundedAccess<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner
            .next_element_seed(wrap!(BoundedSeed, seed, self.depth, self.too_deep))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint().map(|n| n.min(PREALLOCATE))
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for BoundedAccess<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.inner
            .next_key_seed(wrap!(BoundedSeed, seed, self.depth, self.too_deep))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner
            .next_value_seed(wrap!(BoundedSeed, seed, self.depth, self.too_deep))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint().map(|n| n.min(PREALLOCATE))
    }
}

impl<'a, 'de, A: EnumAccess<'de>> EnumAccess<'de> for BoundedAccess<'a, A> {
    type Error = A::Error;
    type Variant = BoundedAccess<'a, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (v, variant) =
            self.inner
                .variant_seed(wrap!(BoundedSeed, seed, self.depth, self.too_deep))?;
        Ok((v, wrap!(BoundedAccess, variant, self.depth, self.too_deep)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for BoundedAccess<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner
            .newtype_variant_seed(wrap!(BoundedSeed, seed, self.depth, self.too_deep))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(
            len,
            wrap!(BoundedVisitor, visitor, self.depth, self.too_deep),
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(
            fields,
            wrap!(BoundedVisitor, visitor, self.depth, self.too_deep),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Value {
        let mut v = Value::Int(1);
        for i in 1..depth {
            v = if i % 2 == 0 {
                Value::List(vec![v])
            } else {
                Value::Dict(vec![("k".into(), v)])
            };
        }
        v
    }

    fn prop(value: Value) -> Record {
        Record::PropertySet {
            test: Some("t.py::x".into()),
            key: "k".into(),
            value,
            mono_ns: 9,
        }
    }

    #[test]
    fn every_record_a_writer_accepts_decodes_the_same() {
        for rec in [
            prop(nested(MAX_VALUE_DEPTH)),
            prop(Value::Str("é".into())),
            Record::TestPhase {
                nodeid: "t.py::x".into(),
                phase: crate::record::Phase::Call,
                outcome: "passed".into(),
                duration_s: 0.5,
                mono_ns: 3,
                report: Some(nested(MAX_VALUE_DEPTH)),
            },
            Record::Crash {
                test: None,
                pid: 7,
                worker: Some("gw1".into()),
                signal: 11,
                exit_code: None,
                phase: Some("call".into()),
                detail: String::new(),
                wall_ns: 1,
            },
        ] {
            assert!(!too_deep(&rec));
            let mut buf = vec![0u8; rec.encoded_len()];
            rec.encode_into(&mut buf).unwrap();
            assert_eq!(decode_record(&buf).unwrap(), rec);
            assert_eq!(Record::decode(&buf).unwrap(), rec);
            let mut longer = buf.clone();
            longer.push(0);
            assert!(decode_record(&longer).unwrap_err().contains("trailing"));
        }
        assert!(too_deep(&prop(nested(MAX_VALUE_DEPTH + 1))));
    }

    #[test]
    fn a_deeply_nested_frame_is_refused_not_a_stack_overflow() {
        // PropertySet { test: None, key: "", value: [[[[...]]]], mono_ns: 0 }, 1M levels.
        let mut p = vec![6u8, 0, 0];
        for _ in 0..1_000_000 {
            p.extend_from_slice(&[6, 1]);
        }
        p.extend_from_slice(&[0, 0]);
        let e = decode_record(&p).unwrap_err();
        assert!(e.contains("nested more than"), "{e}");
    }
}
