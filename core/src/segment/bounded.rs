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

use crate::record::{Phase, Record, RecordKind, RecordRef, Value, ValueKind};

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
    record
        .carried_value()
        .is_some_and(|v| over(v, MAX_VALUE_DEPTH))
}

// ---------------------------------------------------------------------------------------
// The borrowed decoder of the hot record kinds
// ---------------------------------------------------------------------------------------

/// The depth budget of a record's fields: the record's own enum level is spent.
const FIELD_DEPTH: usize = MAX_DECODE_DEPTH - 1;

/// Decodes a record of a hot kind (see [`RecordRef`]) from `bytes`, which it must fill
/// exactly, borrowing its text and values. Accepts exactly what [`decode_record`] accepts
/// for these kinds, with the same depth bound (a test holds it to that); `None` for
/// anything else, whose reason [`decode_record`] then gives.
///
/// With `checked` true the bytes were already accepted by a call with `checked` false (a
/// first pass on another thread): text is not checked for UTF-8 again and a phase report
/// is not looked at. Bounds are always checked, so this never panics whatever the bytes.
pub(crate) fn decode_hot(bytes: &[u8], checked: bool) -> Option<RecordRef<'_>> {
    let mut c = Cursor {
        bytes,
        pos: 0,
        utf8: !checked,
    };
    let rec = match RecordKind::from_tag(c.varint_u32()?)? {
        RecordKind::TestStart => RecordRef::TestStart {
            nodeid: c.text()?,
            mono_ns: c.varint_u64()?,
        },
        RecordKind::TestPhase => {
            let nodeid = c.text()?;
            let phase = Phase::from_tag(c.varint_u32()?)?;
            let outcome = c.text()?;
            let duration_s = c.f64()?;
            let mono_ns = c.varint_u64()?;
            if checked {
                return Some(RecordRef::TestPhase {
                    nodeid,
                    phase,
                    outcome,
                    duration_s,
                    mono_ns,
                });
            }
            // Option<Value>: the option spends a level.
            if c.tag()? {
                c.value(FIELD_DEPTH - 1)?;
            }
            RecordRef::TestPhase {
                nodeid,
                phase,
                outcome,
                duration_s,
                mono_ns,
            }
        }
        RecordKind::TestEnd => RecordRef::TestEnd {
            nodeid: c.text()?,
            mono_ns: c.varint_u64()?,
        },
        kind @ (RecordKind::PropertySet | RecordKind::PropertyAppend) => {
            let test = c.opt_text()?;
            let key = c.text()?;
            let start = c.pos;
            c.value(FIELD_DEPTH)?;
            let value = &bytes[start..c.pos];
            RecordRef::Property {
                append: kind == RecordKind::PropertyAppend,
                test,
                key,
                value,
                mono_ns: c.varint_u64()?,
            }
        }
        RecordKind::Fixture => {
            let name = c.text()?;
            let scope = c.text()?;
            let setup = c.bool()?;
            c.opt_text()?;
            let duration_s = c.f64()?;
            c.varint_u64()?;
            RecordRef::Fixture {
                name,
                scope,
                setup,
                duration_s,
            }
        }
        RecordKind::Timed => {
            let name = c.text()?;
            c.opt_text()?;
            let duration_s = c.f64()?;
            c.varint_u64()?;
            RecordRef::Timed { name, duration_s }
        }
        // Every other kind (a new one too) is read by `decode_record`.
        _ => return None,
    };
    (c.pos == bytes.len()).then_some(rec)
}

/// Decodes one encoded [`Value`] that fills `bytes` exactly (what [`RecordRef`] holds),
/// within the depth bound of a record's field.
pub(crate) fn decode_value(bytes: &[u8]) -> Option<Value> {
    let mut c = Cursor {
        bytes,
        pos: 0,
        utf8: true,
    };
    let v = c.owned_value(FIELD_DEPTH)?;
    (c.pos == bytes.len()).then_some(v)
}

/// Postcard's wire format, read by hand: the same checks as `postcard::Deserializer`
/// (varints of at most 5 / 10 bytes with the same limit on the last one, bools and option
/// tags 0 or 1, UTF-8 text), and the depth accounting of [`Bounded`].
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Check text for UTF-8 (off for bytes a checking pass already accepted).
    utf8: bool,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    #[inline]
    fn varint_u32(&mut self) -> Option<u32> {
        // One byte: most variant indexes and lengths.
        if let Some(&b) = self.bytes.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Some(u32::from(b));
            }
        }
        let mut out = 0u32;
        for i in 0..5 {
            let b = self.byte()?;
            out |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return (i < 4 || b <= 0x0f).then_some(out);
            }
        }
        None
    }

    #[inline]
    fn varint_u64(&mut self) -> Option<u64> {
        if let Some(&b) = self.bytes.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Some(u64::from(b));
            }
        }
        let mut out = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return (i < 9 || b <= 0x01).then_some(out);
            }
        }
        None
    }

    #[inline]
    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.varint_u64()?).ok()
    }

    #[inline]
    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A bool, or an option's tag: one byte, 0 or 1.
    #[inline]
    fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    #[inline]
    fn tag(&mut self) -> Option<bool> {
        self.bool()
    }

    #[inline]
    fn text(&mut self) -> Option<&'a [u8]> {
        let n = self.len()?;
        let s = self.take(n)?;
        // Most text is ASCII: a word-at-a-time check, inlined, before the general one.
        if self.utf8 && !s.is_ascii() {
            std::str::from_utf8(s).ok()?;
        }
        Some(s)
    }

    #[allow(clippy::option_option)] // failed, absent, present
    fn opt_text(&mut self) -> Option<Option<&'a [u8]>> {
        if self.tag()? {
            Some(Some(self.text()?))
        } else {
            Some(None)
        }
    }

    /// Skips one `Value` decoded with `depth` levels left, as [`Bounded`] counts them: the
    /// enum one level, a list's or a byte string's sequence one more, each dict entry's
    /// pair one more.
    fn value(&mut self, depth: usize) -> Option<()> {
        let depth = depth.checked_sub(1)?;
        match ValueKind::from_tag(self.varint_u32()?)? {
            ValueKind::None => {}
            ValueKind::Bool => {
                self.bool()?;
            }
            ValueKind::Int => {
                self.varint_u64()?;
            }
            ValueKind::Float => {
                self.take(8)?;
            }
            ValueKind::Str | ValueKind::BigInt => {
                self.text()?;
            }
            ValueKind::Bytes => {
                depth.checked_sub(1)?;
                let n = self.len()?;
                self.take(n)?;
            }
            ValueKind::List => {
                let inner = depth.checked_sub(1)?;
                for _ in 0..self.len()? {
                    self.value(inner)?;
                }
            }
            ValueKind::Dict => {
                let pair = depth.checked_sub(1)?;
                let n = self.len()?;
                if n > 0 {
                    let inner = pair.checked_sub(1)?;
                    for _ in 0..n {
                        self.text()?;
                        self.value(inner)?;
                    }
                }
            }
        }
        Some(())
    }

    /// [`value`](Self::value), building the `Value`.
    fn owned_value(&mut self, depth: usize) -> Option<Value> {
        let depth = depth.checked_sub(1)?;
        let text = |c: &mut Self| -> Option<String> {
            Some(std::str::from_utf8(c.text()?).ok()?.to_owned())
        };
        Some(match ValueKind::from_tag(self.varint_u32()?)? {
            ValueKind::None => Value::None,
            ValueKind::Bool => Value::Bool(self.bool()?),
            ValueKind::Int => {
                let n = self.varint_u64()?;
                Value::Int(((n >> 1) as i64) ^ -((n & 1) as i64))
            }
            ValueKind::Float => Value::Float(self.f64()?),
            ValueKind::Str => Value::Str(text(self)?),
            ValueKind::BigInt => Value::BigInt(text(self)?),
            ValueKind::Bytes => {
                depth.checked_sub(1)?;
                let n = self.len()?;
                Value::Bytes(self.take(n)?.to_vec())
            }
            ValueKind::List => {
                let inner = depth.checked_sub(1)?;
                let n = self.len()?;
                let mut items = Vec::with_capacity(n.min(PREALLOCATE));
                for _ in 0..n {
                    items.push(self.owned_value(inner)?);
                }
                Value::List(items)
            }
            ValueKind::Dict => {
                let pair = depth.checked_sub(1)?;
                let n = self.len()?;
                let mut pairs = Vec::with_capacity(n.min(PREALLOCATE));
                if n > 0 {
                    let inner = pair.checked_sub(1)?;
                    for _ in 0..n {
                        let k = text(self)?;
                        pairs.push((k, self.owned_value(inner)?));
                    }
                }
                Value::Dict(pairs)
            }
        })
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
            Record::Resume {
                run: "20261207-053000-1a2b".into(),
                attempt: 2,
                retry: true,
            },
        ]
        .into_iter()
        .chain(crate::record::front_code(&[
            "t.py::a",
            "t.py::é[1]",
            "t.py::é[2]",
        ]))
        .chain(RecordKind::ALL.iter().map(|k| k.sample()))
        {
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

    /// The hot records of a test run, with values at the edges of the depth bound, and a
    /// record of every kind (which the borrowed decoder leaves to serde unless it is hot).
    fn hot_records() -> Vec<Record> {
        let mut recs: Vec<Record> = RecordKind::ALL.iter().map(|k| k.sample()).collect();
        recs.extend([
            Record::TestStart {
                nodeid: "t.py::é[1]".into(),
                mono_ns: u64::MAX,
            },
            Record::TestEnd {
                nodeid: String::new(),
                mono_ns: 0,
            },
            Record::Fixture {
                name: "db".into(),
                scope: "session".into(),
                setup: false,
                test: Some("t.py::x".into()),
                duration_s: -0.0,
                mono_ns: 1 << 40,
            },
            Record::Timed {
                name: "load".into(),
                test: None,
                duration_s: f64::NAN,
                mono_ns: 3,
            },
        ]);
        for (i, phase) in [Phase::Setup, Phase::Call, Phase::Teardown]
            .into_iter()
            .enumerate()
        {
            recs.push(Record::TestPhase {
                nodeid: "t.py::x".into(),
                phase,
                outcome: ["passed", "failed", "skipped"][i].into(),
                duration_s: 0.25,
                mono_ns: 7,
                report: (i > 0).then(|| nested(MAX_VALUE_DEPTH + 40 * i)),
            });
        }
        let mut values = vec![
            Value::None,
            Value::Bool(true),
            Value::Int(i64::MIN),
            Value::Int(-1),
            Value::Float(1e300),
            Value::Str("ß\u{1F600}".into()),
            Value::Bytes(vec![0, 255, 128]),
            Value::BigInt("-123456789012345678901234567890".into()),
            Value::Dict(Vec::new()),
            Value::List(Vec::new()),
        ];
        // Around the depth the reader allows: lists cost 2 levels, dicts 3, bytes 1 more.
        for d in (170..=270).step_by(3) {
            let mut v = Value::Bytes(vec![1]);
            for _ in 0..d {
                v = Value::List(vec![v]);
            }
            values.push(v);
            values.push(nested(d));
        }
        for (i, value) in values.into_iter().enumerate() {
            recs.push(Record::PropertyAppend {
                test: (i % 2 == 0).then(|| format!("t.py::x[{i}]")),
                key: "k".into(),
                value,
                mono_ns: i as u64,
            });
        }
        recs
    }

    fn encoded(rec: &Record) -> Vec<u8> {
        let mut buf = vec![0u8; rec.encoded_len()];
        rec.encode_into(&mut buf).unwrap();
        buf
    }

    fn is_hot_kind(rec: &Record) -> bool {
        matches!(
            rec,
            Record::TestStart { .. }
                | Record::TestPhase { .. }
                | Record::TestEnd { .. }
                | Record::PropertySet { .. }
                | Record::PropertyAppend { .. }
                | Record::Fixture { .. }
                | Record::Timed { .. }
        )
    }

    /// Whether `r` (from `decode_hot`) holds the fields of `rec` (a report aside).
    #[allow(clippy::many_single_char_names)] // one letter per field compared
    fn same(r: &RecordRef<'_>, rec: &Record) -> bool {
        let s = |b: &[u8]| std::str::from_utf8(b).unwrap().to_owned();
        let f = |x: f64, y: f64| x.to_bits() == y.to_bits();
        match (*r, rec) {
            (
                RecordRef::TestStart { nodeid, mono_ns },
                Record::TestStart {
                    nodeid: n,
                    mono_ns: m,
                },
            )
            | (
                RecordRef::TestEnd { nodeid, mono_ns },
                Record::TestEnd {
                    nodeid: n,
                    mono_ns: m,
                },
            ) => s(nodeid) == *n && mono_ns == *m,
            (
                RecordRef::TestPhase {
                    nodeid,
                    phase,
                    outcome,
                    duration_s,
                    mono_ns,
                },
                Record::TestPhase {
                    nodeid: n,
                    phase: p,
                    outcome: o,
                    duration_s: d,
                    mono_ns: m,
                    ..
                },
            ) => {
                s(nodeid) == *n
                    && phase == *p
                    && s(outcome) == *o
                    && f(duration_s, *d)
                    && mono_ns == *m
            }
            (
                RecordRef::Property {
                    append,
                    test,
                    key,
                    value,
                    mono_ns,
                },
                Record::PropertySet {
                    test: t,
                    key: k,
                    value: v,
                    mono_ns: m,
                }
                | Record::PropertyAppend {
                    test: t,
                    key: k,
                    value: v,
                    mono_ns: m,
                },
            ) => {
                append == matches!(rec, Record::PropertyAppend { .. })
                    && test.map(s) == *t
                    && s(key) == *k
                    && decode_value(value).as_ref() == Some(v)
                    && mono_ns == *m
            }
            (
                RecordRef::Fixture {
                    name,
                    scope,
                    setup,
                    duration_s,
                },
                Record::Fixture {
                    name: n,
                    scope: c,
                    setup: u,
                    duration_s: d,
                    ..
                },
            ) => s(name) == *n && s(scope) == *c && setup == *u && f(duration_s, *d),
            (
                RecordRef::Timed { name, duration_s },
                Record::Timed {
                    name: n,
                    duration_s: d,
                    ..
                },
            ) => s(name) == *n && f(duration_s, *d),
            _ => false,
        }
    }

    /// `decode_hot` accepts exactly what `decode_record` accepts for the hot kinds, with
    /// the same fields: on records at the edges of the depth bound, and on every cut and
    /// thousands of corruptions of them.
    #[test]
    fn the_borrowed_decoder_agrees_with_the_serde_decoder() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut checked = 0;
        let mut accepted = 0;
        for rec in hot_records() {
            let bytes = encoded(&rec);
            let mut variants: Vec<Vec<u8>> = vec![bytes.clone(), [&bytes[..], &[0]].concat()];
            variants.extend((0..bytes.len()).map(|n| bytes[..n].to_vec()));
            for _ in 0..200 {
                let mut b = bytes.clone();
                let at = usize::try_from(rand() % b.len() as u64).unwrap();
                b[at] = match rand() % 4 {
                    0 => b[at] ^ 0x80,
                    1 => 0xff,
                    2 => 0,
                    _ => rand().to_le_bytes()[0],
                };
                variants.push(b);
            }
            for b in variants {
                let hot = decode_hot(&b, false);
                let serde = decode_record(&b);
                let serde_hot = serde.as_ref().ok().filter(|r| is_hot_kind(r));
                assert_eq!(hot.is_some(), serde_hot.is_some(), "{b:?}: {serde:?}");
                if let (Some(h), Some(r)) = (hot, serde_hot) {
                    // NaN != NaN: compare a NaN-free record's value only.
                    let nan = matches!(r, Record::PropertyAppend { value: Value::Float(x), .. } if x.is_nan());
                    assert!(nan || same(&h, r), "{h:?} / {r:?}");
                    // The second pass accepts what the first did, with the same fields.
                    assert_eq!(
                        format!("{:?}", decode_hot(&b, true)),
                        format!("{:?}", Some(h))
                    );
                    accepted += 1;
                }
                checked += 1;
            }
        }
        assert!(checked > 10_000 && accepted > 100, "{checked} {accepted}");
        // The depth bound is where the serde decoder puts it, not near it.
        assert!(hot_records()
            .iter()
            .any(|r| decode_record(&encoded(r)).is_err()));
    }

    #[test]
    fn a_deeply_nested_frame_is_refused_not_a_stack_overflow() {
        // PropertySet { test: None, key: "", value: [[[[...]]]], mono_ns: 0 }, 1M levels.
        let mut p = vec![RecordKind::PropertySet.tag(), 0, 0];
        for _ in 0..1_000_000 {
            p.extend_from_slice(&[ValueKind::List.tag(), 1]);
        }
        p.extend_from_slice(&[0, 0]);
        let e = decode_record(&p).unwrap_err();
        assert!(e.contains("nested more than"), "{e}");
    }
}
