//! A [`Record`] built from its kind's name and its fields as [`Value`]s, through the
//! record's own serde derive: what lets the binding write any kind with one method, so a
//! new kind needs no writer of its own (docs/format.md, "Adding a record kind").
//!
//! The fields are the variant's serde fields by name (docs/format.md's table); each is
//! given as the [`Value`] of its type: a number, text, `None` for an absent option, a
//! list for a list or tuple (a dict for a list of pairs), a [`Phase`](super::Phase) or
//! [`Role`](super::Role) by its lower-case name, any value where the field holds one.

use std::fmt;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::Deserialize;

use super::{Record, RecordKind, Value, ValueKind};

/// Why [`Record::from_fields`] could not build a record: the kind, the field (when one is to
/// blame) and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldsError {
    /// The kind asked for, as given.
    pub kind: String,
    /// The field whose value was wrong; `None` for an unknown kind, or a field missing or
    /// unknown (the message names it).
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for FieldsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "record kind {:?}, field {field:?}: {}",
                self.kind, self.message
            ),
            None => write!(f, "record kind {:?}: {}", self.kind, self.message),
        }
    }
}

impl std::error::Error for FieldsError {}

/// A serde error on the way down; the kind and field are added on the way up.
#[derive(Debug)]
struct Error {
    field: Option<String>,
    message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Error {
        Error {
            field: None,
            message: msg.to_string(),
        }
    }
}

impl Record {
    /// The record of kind `kind` ([`RecordKind::name`]: `"crash"`, `"run_end"`, ...) with
    /// `fields`, every field of the variant by its name and none other. The error names the
    /// kind, the field and what it expected (`record kind "run_end", field "exit_status":
    /// invalid type: string "x", expected i32`).
    pub fn from_fields(kind: &str, fields: Vec<(String, Value)>) -> Result<Record, FieldsError> {
        let fail = |field, message| FieldsError {
            kind: kind.to_owned(),
            field,
            message,
        };
        let Some(k) = RecordKind::ALL.iter().copied().find(|k| k.name() == kind) else {
            let names: Vec<&str> = RecordKind::ALL.iter().map(|k| k.name()).collect();
            return Err(fail(
                None,
                format!("no such kind: use one of {}", names.join(", ")),
            ));
        };
        Record::deserialize(RecordDe { kind: k, fields }).map_err(|e| fail(e.field, e.message))
    }
}

/// A whole record: the variant of `kind` (by its tag), its fields a map.
struct RecordDe {
    kind: RecordKind,
    fields: Vec<(String, Value)>,
}

impl<'de> de::Deserializer<'de> for RecordDe {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de> de::EnumAccess<'de> for RecordDe {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Error> {
        let tag: u32 = self.kind.tag().into();
        Ok((seed.deserialize(tag.into_deserializer())?, self))
    }
}

impl<'de> de::VariantAccess<'de> for RecordDe {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Err(de::Error::custom("a record kind without fields"))
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, _: S) -> Result<S::Value, Error> {
        Err(de::Error::custom("a record kind without named fields"))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("a record kind without named fields"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let fields = self.fields.into_iter().map(|(name, value)| {
            let field = Field {
                name: name.clone(),
                value: ValueDe(value),
            };
            (name, field)
        });
        let mut map = MapDeserializer::new(fields);
        let out = visitor.visit_map(&mut map)?;
        map.end()?;
        Ok(out)
    }
}

/// One field's value: its errors name the field.
struct Field {
    name: String,
    value: ValueDe,
}

impl Field {
    fn named<T>(name: String, r: Result<T, Error>) -> Result<T, Error> {
        r.map_err(|mut e| {
            e.field.get_or_insert(name);
            e
        })
    }
}

impl IntoDeserializer<'_, Error> for Field {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for Field {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        Field::named(self.name, self.value.deserialize_any(visitor))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        Field::named(self.name, self.value.deserialize_option(visitor))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        Field::named(self.name, self.value.deserialize_seq(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        Field::named(self.name, self.value.deserialize_tuple(len, visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        Field::named(
            self.name,
            self.value.deserialize_enum(name, variants, visitor),
        )
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct tuple_struct map struct identifier ignored_any
    }
}

/// A [`Value`] as serde's data model; a field of type [`Value`] takes it whole.
struct ValueDe(Value);

impl IntoDeserializer<'_, Error> for ValueDe {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// A list of pairs as a list of two-item lists (`ProcessInfo::env`, `Value::Dict`).
fn pairs(p: Vec<(String, Value)>) -> impl Iterator<Item = ValueDe> {
    p.into_iter()
        .map(|(k, v)| ValueDe(Value::List(vec![Value::Str(k), v])))
}

impl<'de> de::Deserializer<'de> for ValueDe {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::None => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(i) => visitor.visit_i64(i),
            Value::Float(f) => visitor.visit_f64(f),
            Value::Str(s) => visitor.visit_string(s),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            Value::List(items) => seq(items.into_iter().map(ValueDe), visitor),
            Value::Dict(p) => {
                let mut map = MapDeserializer::new(p.into_iter().map(|(k, v)| (k, ValueDe(v))));
                let out = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(out)
            }
            // Beyond i64: a u64 field (a time) may still hold it.
            Value::BigInt(s) => match s.parse::<u64>() {
                Ok(u) => visitor.visit_u64(u),
                Err(_) => Err(de::Error::invalid_value(
                    de::Unexpected::Other(&format!("integer {s}")),
                    &visitor,
                )),
            },
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::None => visitor.visit_none(),
            v => visitor.visit_some(ValueDe(v)),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Dict(p) => seq(pairs(p), visitor),
            Value::Bytes(b) => seq(
                b.into_iter().map(|x| ValueDe(Value::Int(x.into()))),
                visitor,
            ),
            v => ValueDe(v).deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // A field of type `Value` takes the value as it is, by its tag.
        if name == "Value" {
            return visitor.visit_enum(ValueAsValue(self.0));
        }
        // A unit enum (`Phase`, `Role`) by its lower-case name, as JSON writes it.
        let Value::Str(s) = &self.0 else {
            return Err(de::Error::invalid_type(unexpected(&self.0), &visitor));
        };
        let folded: String = s.chars().filter(|&c| c != '_').collect();
        if let Some(v) = variants.iter().find(|v| v.eq_ignore_ascii_case(&folded)) {
            return visitor.visit_enum((*v).into_deserializer());
        }
        let names: Vec<String> = variants.iter().map(|v| v.to_lowercase()).collect();
        Err(de::Error::custom(format_args!(
            "unknown {} {s:?}: use one of {}",
            name.to_lowercase(),
            names.join(", ")
        )))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct tuple_struct map struct identifier ignored_any
    }
}

fn seq<'de, V: Visitor<'de>>(
    items: impl Iterator<Item = ValueDe>,
    visitor: V,
) -> Result<V::Value, Error> {
    let mut s = SeqDeserializer::new(items);
    let out = visitor.visit_seq(&mut s)?;
    s.end()?;
    Ok(out)
}

fn unexpected(v: &Value) -> de::Unexpected<'_> {
    match v {
        Value::None => de::Unexpected::Option,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Int(i) => de::Unexpected::Signed(*i),
        Value::Float(f) => de::Unexpected::Float(*f),
        Value::Str(s) => de::Unexpected::Str(s),
        Value::Bytes(b) => de::Unexpected::Bytes(b),
        Value::List(_) => de::Unexpected::Seq,
        Value::Dict(_) => de::Unexpected::Map,
        Value::BigInt(_) => de::Unexpected::Other("integer beyond 64 bits"),
    }
}

/// A [`Value`] deserialized as the `Value` type: its variant by its tag, its payload.
struct ValueAsValue(Value);

impl<'de> de::EnumAccess<'de> for ValueAsValue {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Error> {
        let tag: u32 = ValueKind::of(&self.0).tag().into();
        Ok((seed.deserialize(tag.into_deserializer())?, self))
    }
}

impl<'de> de::VariantAccess<'de> for ValueAsValue {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Error> {
        match self.0 {
            // The payload's own type (a `String`) reads it.
            Value::BigInt(s) => seed.deserialize(ValueDe(Value::Str(s))),
            v => seed.deserialize(ValueDe(v)),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("a value has no tuple variant"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Error> {
        Err(de::Error::custom("a value has no struct variant"))
    }
}

#[cfg(test)]
mod tests {
    use serde::ser::{self, Impossible, Serialize, SerializeSeq, SerializeStructVariant};

    use super::{Error, Record, RecordKind, Value};

    impl ser::Error for Error {
        fn custom<T: std::fmt::Display>(msg: T) -> Error {
            <Error as serde::de::Error>::custom(msg)
        }
    }

    /// The fields of `rec` as [`Record::from_fields`] takes them, through the record's own
    /// serde derive (the inverse of the deserializer above).
    fn fields_of(rec: &Record) -> Vec<(String, Value)> {
        match rec.serialize(ToValue).unwrap() {
            Value::Dict(fields) => fields,
            v => panic!("{v:?}"),
        }
    }

    struct ToValue;
    struct List(Vec<Value>);
    struct Fields(Vec<(String, Value)>);

    impl ser::Serializer for ToValue {
        type Ok = Value;
        type Error = Error;
        type SerializeSeq = List;
        type SerializeTuple = List;
        type SerializeTupleStruct = Impossible<Value, Error>;
        type SerializeTupleVariant = Impossible<Value, Error>;
        type SerializeMap = Impossible<Value, Error>;
        type SerializeStruct = Impossible<Value, Error>;
        type SerializeStructVariant = Fields;

        fn serialize_bool(self, v: bool) -> Result<Value, Error> {
            Ok(Value::Bool(v))
        }
        fn serialize_i8(self, v: i8) -> Result<Value, Error> {
            Ok(Value::Int(v.into()))
        }
        fn serialize_i16(self, v: i16) -> Result<Value, Error> {
            Ok(Value::Int(v.into()))
        }
        fn serialize_i32(self, v: i32) -> Result<Value, Error> {
            Ok(Value::Int(v.into()))
        }
        fn serialize_i64(self, v: i64) -> Result<Value, Error> {
            Ok(Value::Int(v))
        }
        fn serialize_u8(self, v: u8) -> Result<Value, Error> {
            Ok(Value::Int(v.into()))
        }
        fn serialize_u16(self, v: u16) -> Result<Value, Error> {
            Ok(Value::Int(v.into()))
        }
        fn serialize_u32(self, v: u32) -> Result<Value, Error> {
            Ok(Value::Int(v.into()))
        }
        fn serialize_u64(self, v: u64) -> Result<Value, Error> {
            Ok(i64::try_from(v).map_or_else(|_| Value::BigInt(v.to_string()), Value::Int))
        }
        fn serialize_f32(self, v: f32) -> Result<Value, Error> {
            Ok(Value::Float(v.into()))
        }
        fn serialize_f64(self, v: f64) -> Result<Value, Error> {
            Ok(Value::Float(v))
        }
        fn serialize_char(self, v: char) -> Result<Value, Error> {
            Ok(Value::Str(v.into()))
        }
        fn serialize_str(self, v: &str) -> Result<Value, Error> {
            Ok(Value::Str(v.into()))
        }
        fn serialize_bytes(self, v: &[u8]) -> Result<Value, Error> {
            Ok(Value::Bytes(v.into()))
        }
        fn serialize_none(self) -> Result<Value, Error> {
            Ok(Value::None)
        }
        fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<Value, Error> {
            v.serialize(self)
        }
        fn serialize_unit(self) -> Result<Value, Error> {
            Ok(Value::None)
        }
        fn serialize_unit_struct(self, _: &'static str) -> Result<Value, Error> {
            Ok(Value::None)
        }
        fn serialize_unit_variant(
            self,
            name: &'static str,
            _: u32,
            variant: &'static str,
        ) -> Result<Value, Error> {
            // `Value::None`, or a `Phase` / `Role` by its lower-case name.
            Ok(if name == "Value" {
                Value::None
            } else {
                Value::Str(variant.to_lowercase())
            })
        }
        fn serialize_newtype_struct<T: ?Sized + Serialize>(
            self,
            _: &'static str,
            v: &T,
        ) -> Result<Value, Error> {
            v.serialize(self)
        }
        fn serialize_newtype_variant<T: ?Sized + Serialize>(
            self,
            name: &'static str,
            _: u32,
            variant: &'static str,
            v: &T,
        ) -> Result<Value, Error> {
            assert_eq!(name, "Value", "the only newtype variants are a Value's");
            let inner = v.serialize(ToValue)?;
            Ok(match (variant, inner) {
                ("Bytes", Value::List(items)) => Value::Bytes(
                    items
                        .into_iter()
                        .map(|i| match i {
                            Value::Int(b) => u8::try_from(b).unwrap(),
                            _ => unreachable!(),
                        })
                        .collect(),
                ),
                ("BigInt", Value::Str(s)) => Value::BigInt(s),
                ("Dict", Value::List(pairs)) => Value::Dict(
                    pairs
                        .into_iter()
                        .map(|p| match p {
                            Value::List(kv) => match <[Value; 2]>::try_from(kv) {
                                Ok([Value::Str(k), v]) => (k, v),
                                _ => unreachable!(),
                            },
                            _ => unreachable!(),
                        })
                        .collect(),
                ),
                (_, inner) => inner,
            })
        }
        fn serialize_seq(self, len: Option<usize>) -> Result<List, Error> {
            Ok(List(Vec::with_capacity(len.unwrap_or(0))))
        }
        fn serialize_tuple(self, len: usize) -> Result<List, Error> {
            Ok(List(Vec::with_capacity(len)))
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, Error> {
            Err(ser::Error::custom("no tuple structs in a record"))
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Error> {
            Err(ser::Error::custom("no tuple variants in a record"))
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
            Err(ser::Error::custom("no maps in a record"))
        }
        fn serialize_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStruct, Error> {
            Err(ser::Error::custom("no structs in a record"))
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            len: usize,
        ) -> Result<Fields, Error> {
            Ok(Fields(Vec::with_capacity(len)))
        }
    }

    impl SerializeSeq for List {
        type Ok = Value;
        type Error = Error;
        fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), Error> {
            self.0.push(v.serialize(ToValue)?);
            Ok(())
        }
        fn end(self) -> Result<Value, Error> {
            Ok(Value::List(self.0))
        }
    }

    impl ser::SerializeTuple for List {
        type Ok = Value;
        type Error = Error;
        fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), Error> {
            SerializeSeq::serialize_element(self, v)
        }
        fn end(self) -> Result<Value, Error> {
            SerializeSeq::end(self)
        }
    }

    impl SerializeStructVariant for Fields {
        type Ok = Value;
        type Error = Error;
        fn serialize_field<T: ?Sized + Serialize>(
            &mut self,
            key: &'static str,
            v: &T,
        ) -> Result<(), Error> {
            self.0.push((key.to_owned(), v.serialize(ToValue)?));
            Ok(())
        }
        fn end(self) -> Result<Value, Error> {
            Ok(Value::Dict(self.0))
        }
    }

    /// Every kind's sample, taken apart into its fields, is built back the same.
    #[test]
    fn from_fields_builds_every_kind_back() {
        for &k in RecordKind::ALL {
            let rec = k.sample();
            let fields = fields_of(&rec);
            assert_eq!(
                Record::from_fields(k.name(), fields.clone()),
                Ok(rec.clone())
            );
            // In any order.
            let reversed = fields.iter().rev().cloned().collect();
            assert_eq!(Record::from_fields(k.name(), reversed), Ok(rec));
        }
    }

    fn err(kind: &str, fields: &[(&str, Value)]) -> String {
        let fields = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        Record::from_fields(kind, fields).unwrap_err().to_string()
    }

    #[test]
    fn from_fields_says_which_kind_and_field_is_wrong() {
        let t = || Value::Str("t.py::test_a".into());
        assert_eq!(
            err("run_ends", &[]),
            format!(
                "record kind \"run_ends\": no such kind: use one of {}",
                RecordKind::ALL
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        );
        assert_eq!(
            err(
                "run_end",
                &[("exit_status", Value::Str("x".into())), ("wall_ns", Value::Int(1))]
            ),
            "record kind \"run_end\", field \"exit_status\": invalid type: string \"x\", expected i32"
        );
        assert_eq!(
            err("run_end", &[("exit_status", Value::Int(1))]),
            "record kind \"run_end\": missing field `wall_ns`"
        );
        assert!(err(
            "run_end",
            &[
                ("exit_status", Value::Int(1)),
                ("wall_ns", Value::Int(1)),
                ("pid", Value::Int(1))
            ]
        )
        .starts_with("record kind \"run_end\": unknown field `pid`, expected"));
        assert_eq!(
            err("test_end", &[("nodeid", t()), ("mono_ns", Value::Int(-1))]),
            "record kind \"test_end\", field \"mono_ns\": invalid value: integer `-1`, expected u64"
        );
        assert_eq!(
            err(
                "intentional_exit",
                &[("phase", Value::Str("lunch".into())), ("code", Value::Int(0)), ("wall_ns", Value::Int(1))]
            ),
            "record kind \"intentional_exit\", field \"phase\": unknown phase \"lunch\": use one of setup, call, teardown"
        );
        // An option left out is None; a dict gives a list of pairs; an int a float.
        let rec = Record::from_fields(
            "process_info",
            vec![
                (
                    "env".into(),
                    Value::Dict(vec![("A".into(), Value::Str("1".into()))]),
                ),
                ("mono_ns".into(), Value::Int(2)),
                ("wall_ns".into(), Value::BigInt(u64::MAX.to_string())),
            ],
        );
        assert_eq!(
            rec,
            Ok(Record::ProcessInfo {
                env: vec![("A".into(), "1".into())],
                memory_cgroup: None,
                oom_kills: None,
                mono_ns: 2,
                wall_ns: u64::MAX,
            })
        );
        let rec = Record::from_fields(
            "timed",
            vec![
                ("name".into(), Value::Str("f".into())),
                ("duration_s".into(), Value::Int(2)),
                ("mono_ns".into(), Value::Int(3)),
            ],
        );
        assert_eq!(
            rec,
            Ok(Record::Timed {
                name: "f".into(),
                test: None,
                duration_s: 2.0,
                mono_ns: 3,
            })
        );
    }
}
