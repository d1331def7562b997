//! The fast path of `record` and `append`: a property record encoded straight from the
//! caller's Python objects, with no [`Value`](blackbox_core::Value) tree between.
//!
//! The bytes are exactly postcard's encoding of `Record::PropertySet` / `PropertyAppend`
//! (see `core/src/record.rs`, whose [`RecordKind`] and [`ValueKind`] name the tags written
//! here; checked by the tests below and by `tests/test_values.py`).
//! Only values made of exact plain types take this path: None, bool, int in i64, float,
//! str (valid UTF-8), bytes, list, tuple and dict with str keys, nested at most as deep and
//! as large as the `Converter` stores them as they are. On anything else the walk stops and
//! the caller converts the value with the `Converter` instead, which notes, warns and
//! refuses exactly as it always did.
//!
//! The walk runs before the recorder's lock is taken, into a buffer on the stack: it calls
//! into `CPython`, and the one call that can fail (the UTF-8 of a str with lone surrogates)
//! raises, which allocates, which can run the cyclic GC and with it any finalizer - one
//! that records into the same recorder must not find its lock held.

use std::mem::MaybeUninit;

use blackbox_core::{EncodeRecord, RecordKind, ValueKind, MAX_RECORD};
use pyo3::ffi;

/// Bytes encoded on the stack before the buffer moves to the heap: a typical record (a
/// nodeid, a key and a small dict) is 100 to 200.
const STACK_BYTES: usize = 512;

/// Where an encoding goes: a stack buffer (left uninitialized: it is written before it
/// is read), then a `Vec` once it no longer fits.
pub(crate) struct Out<'s> {
    stack: &'s mut [MaybeUninit<u8>],
    /// Bytes written so far (on the stack, or in `heap` once there is one).
    len: usize,
    heap: Option<Vec<u8>>,
}

impl<'s> Out<'s> {
    pub(crate) fn new(stack: &'s mut [MaybeUninit<u8>]) -> Self {
        Out {
            stack,
            len: 0,
            heap: None,
        }
    }

    #[inline]
    fn put(&mut self, b: &[u8]) {
        if self.heap.is_none() && b.len() <= self.stack.len() - self.len {
            // SAFETY: `len + b.len()` is within the stack buffer (checked), which `b` cannot
            // overlap (it is borrowed mutably here).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    b.as_ptr(),
                    self.stack.as_mut_ptr().add(self.len).cast::<u8>(),
                    b.len(),
                );
            }
            self.len += b.len();
        } else {
            self.put_heap(b);
        }
    }

    #[cold]
    fn put_heap(&mut self, b: &[u8]) {
        let end = self.len + b.len();
        if let Some(v) = &mut self.heap {
            v.extend_from_slice(b);
        } else {
            let mut v = Vec::with_capacity((2 * end).max(4096));
            v.extend_from_slice(self.stack_bytes());
            v.extend_from_slice(b);
            self.heap = Some(v);
        }
        self.len = end;
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        if self.heap.is_none() && self.len < self.stack.len() {
            self.stack[self.len] = MaybeUninit::new(b);
            self.len += 1;
        } else {
            self.put_heap(&[b]);
        }
    }

    /// The bytes written on the stack (all of them until the buffer moved to the heap).
    fn stack_bytes(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the stack buffer were written (`put`, `byte`)
        // while `heap` was `None`, and `len` only passes the buffer's end with a heap.
        unsafe { std::slice::from_raw_parts(self.stack.as_ptr().cast::<u8>(), self.len) }
    }

    /// postcard's varint: LEB128, seven bits a byte, low bits first.
    #[inline]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte((v as u8) | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    /// A `String` (or `Vec<u8>`, a sequence of bytes): its length, then the bytes.
    #[inline]
    fn str(&mut self, s: &[u8]) {
        self.varint(s.len() as u64);
        self.put(s);
    }

    fn zigzag(&mut self, i: i64) {
        self.varint(((i << 1) ^ (i >> 63)) as u64);
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match &self.heap {
            Some(v) => v,
            None => self.stack_bytes(),
        }
    }
}

/// Encodes the head of a property record (everything before its value).
fn head(out: &mut Out<'_>, append: bool, test: Option<&str>, key: &str) {
    let kind = if append {
        RecordKind::PropertyAppend
    } else {
        RecordKind::PropertySet
    };
    out.byte(kind.tag());
    match test {
        None => out.byte(0),
        Some(t) => {
            out.byte(1);
            out.str(t.as_bytes());
        }
    }
    out.str(key.as_bytes());
}

/// Why the walk stopped: the value is not stored as it is, and the `Converter` must see it.
pub(crate) struct NotPlain;

/// A property record encoded from Python objects.
pub(crate) struct Encoded<'s> {
    pub out: Out<'s>,
    /// A tuple was stored as a list: the stored value is not the caller's object.
    pub reshaped: bool,
}

/// Encodes a property record whose value is `value`, or says it is not plain. `mono_ns` is
/// asked for once the value is walked.
///
/// # Safety
/// The GIL is held and `value` is a live object.
pub(crate) unsafe fn property<'s>(
    stack: &'s mut [MaybeUninit<u8>; STACK_BYTES],
    append: bool,
    test: Option<&str>,
    key: &str,
    value: *mut ffi::PyObject,
    mono_ns: impl FnOnce() -> u64,
) -> Result<Encoded<'s>, NotPlain> {
    let mut w = Walk {
        out: Out::new(stack),
        values: 0,
        bytes: 0,
        reshaped: false,
    };
    head(&mut w.out, append, test, key);
    // SAFETY: as this function's.
    unsafe { w.value(value, 0)? };
    w.out.varint(mono_ns());
    Ok(Encoded {
        out: w.out,
        reshaped: w.reshaped,
    })
}

/// A stack buffer for [`property`].
pub(crate) fn stack() -> [MaybeUninit<u8>; STACK_BYTES] {
    [MaybeUninit::uninit(); STACK_BYTES]
}

struct Walk<'s> {
    out: Out<'s>,
    /// Values and string bytes so far, counted as the `Converter` counts them.
    values: usize,
    bytes: usize,
    reshaped: bool,
}

impl Walk<'_> {
    /// Counts a value of `bytes` string bytes; past what one record may hold, stops (the
    /// `Converter` refuses the value with its message).
    #[inline]
    fn count(&mut self, bytes: usize) -> Result<(), NotPlain> {
        self.values += 1;
        self.bytes += bytes;
        if self.values > crate::convert::MAX_VALUES || self.bytes > MAX_RECORD {
            return Err(NotPlain);
        }
        Ok(())
    }

    /// Encodes `obj` as a `Value`, if it is one exactly.
    ///
    /// No Python code runs here: every call is on an exact builtin type and cannot call back,
    /// so borrowed items stay alive and containers cannot change while they are walked. The
    /// one call that can fail and raise ends the walk at once.
    ///
    /// # Safety
    /// The GIL is held and `obj` is a live object.
    unsafe fn value(&mut self, obj: *mut ffi::PyObject, depth: usize) -> Result<(), NotPlain> {
        // SAFETY (whole body): the GIL is held and `obj` is alive (the caller's promise, and
        // for items, their container's reference, which nothing can drop meanwhile).
        unsafe {
            if obj == ffi::Py_None() {
                self.count(1)?;
                self.out.byte(ValueKind::None.tag());
            } else if ffi::PyBool_Check(obj) != 0 {
                self.count(1)?;
                self.out.byte(ValueKind::Bool.tag());
                self.out.byte(u8::from(obj == ffi::Py_True()));
            } else if ffi::PyLong_CheckExact(obj) != 0 {
                let mut overflow = 0;
                let i = ffi::PyLong_AsLongLongAndOverflow(obj, &raw mut overflow);
                if overflow != 0 {
                    return Err(NotPlain); // a big int: kept as its decimal text
                }
                self.count(1)?;
                self.out.byte(ValueKind::Int.tag());
                self.out.zigzag(i);
            } else if ffi::PyFloat_CheckExact(obj) != 0 {
                self.count(1)?;
                self.out.byte(ValueKind::Float.tag());
                self.out.put(&ffi::PyFloat_AsDouble(obj).to_le_bytes());
            } else if ffi::PyUnicode_CheckExact(obj) != 0 {
                let s = utf8(obj)?;
                self.count(s.len())?;
                self.out.byte(ValueKind::Str.tag());
                self.out.str(s);
            } else if ffi::PyBytes_CheckExact(obj) != 0 {
                let mut ptr = std::ptr::null_mut();
                let mut len: ffi::Py_ssize_t = 0;
                if ffi::PyBytes_AsStringAndSize(obj, &raw mut ptr, &raw mut len) != 0 {
                    ffi::PyErr_Clear();
                    return Err(NotPlain);
                }
                let b = std::slice::from_raw_parts(ptr.cast::<u8>(), len as usize);
                self.count(b.len())?;
                self.out.byte(ValueKind::Bytes.tag());
                self.out.str(b);
            } else if ffi::PyList_CheckExact(obj) != 0 || ffi::PyTuple_CheckExact(obj) != 0 {
                let list = ffi::PyList_CheckExact(obj) != 0;
                self.container(depth)?;
                let n = if list {
                    ffi::PyList_Size(obj)
                } else {
                    self.reshaped = true;
                    ffi::PyTuple_Size(obj)
                };
                self.out.byte(ValueKind::List.tag());
                self.out.varint(n as u64);
                for i in 0..n {
                    let item = if list {
                        ffi::PyList_GetItem(obj, i)
                    } else {
                        ffi::PyTuple_GetItem(obj, i)
                    };
                    if item.is_null() {
                        ffi::PyErr_Clear();
                        return Err(NotPlain);
                    }
                    self.value(item, depth + 1)?;
                }
            } else if ffi::PyDict_CheckExact(obj) != 0 {
                self.container(depth)?;
                self.out.byte(ValueKind::Dict.tag());
                self.out.varint(ffi::PyDict_Size(obj) as u64);
                let mut pos: ffi::Py_ssize_t = 0;
                let mut k = std::ptr::null_mut();
                let mut v = std::ptr::null_mut();
                while ffi::PyDict_Next(obj, &raw mut pos, &raw mut k, &raw mut v) != 0 {
                    if ffi::PyUnicode_CheckExact(k) == 0 {
                        return Err(NotPlain); // stored as str(key), noted
                    }
                    let s = utf8(k)?;
                    self.count(s.len())?;
                    self.out.str(s);
                    self.value(v, depth + 1)?;
                }
            } else {
                return Err(NotPlain);
            }
        }
        Ok(())
    }

    /// A list or dict at `depth`: deeper than the `Converter` keeps (where a cycle ends up
    /// too) is its business.
    #[inline]
    fn container(&mut self, depth: usize) -> Result<(), NotPlain> {
        if depth >= crate::convert::MAX_DEPTH {
            return Err(NotPlain);
        }
        self.count(1)
    }
}

/// The UTF-8 of an exact str, or `NotPlain` (error cleared) for lone surrogates.
///
/// # Safety
/// The GIL is held and `s` is a live str; the bytes live as long as it does.
unsafe fn utf8<'a>(s: *mut ffi::PyObject) -> Result<&'a [u8], NotPlain> {
    let mut size: ffi::Py_ssize_t = 0;
    // SAFETY: as this function's; CPython caches the UTF-8 in the str.
    unsafe {
        let ptr = pyo3::ffi::PyUnicode_AsUTF8AndSize(s, &raw mut size);
        if ptr.is_null() {
            ffi::PyErr_Clear();
            return Err(NotPlain);
        }
        Ok(std::slice::from_raw_parts(ptr.cast::<u8>(), size as usize))
    }
}

/// An already encoded record, for [`blackbox_core::Recorder::record_encoded`].
pub(crate) struct Bytes<'a>(pub &'a [u8]);

impl EncodeRecord for Bytes<'_> {
    fn encode_into(&self, buf: &mut [u8]) -> blackbox_core::Result<Option<usize>> {
        let n = self.0.len();
        Ok(buf.get_mut(..n).map(|dst| {
            dst.copy_from_slice(self.0);
            n
        }))
    }

    fn encoded_len(&self) -> blackbox_core::Result<usize> {
        Ok(self.0.len())
    }

    fn too_deep(&self) -> bool {
        // At most MAX_DEPTH (32) levels of containers, well within MAX_VALUE_DEPTH.
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blackbox_core::{Record, Value};

    /// A `Value` encoded with this module's writer, the way the walk writes Python objects.
    fn value(out: &mut Out<'_>, v: &Value) {
        match v {
            Value::None => out.byte(ValueKind::None.tag()),
            Value::Bool(b) => {
                out.byte(ValueKind::Bool.tag());
                out.byte(u8::from(*b));
            }
            Value::Int(i) => {
                out.byte(ValueKind::Int.tag());
                out.zigzag(*i);
            }
            Value::Float(f) => {
                out.byte(ValueKind::Float.tag());
                out.put(&f.to_le_bytes());
            }
            Value::Str(s) => {
                out.byte(ValueKind::Str.tag());
                out.str(s.as_bytes());
            }
            Value::Bytes(b) => {
                out.byte(ValueKind::Bytes.tag());
                out.str(b);
            }
            Value::List(items) => {
                out.byte(ValueKind::List.tag());
                out.varint(items.len() as u64);
                for x in items {
                    value(out, x);
                }
            }
            Value::Dict(pairs) => {
                out.byte(ValueKind::Dict.tag());
                out.varint(pairs.len() as u64);
                for (k, x) in pairs {
                    out.str(k.as_bytes());
                    value(out, x);
                }
            }
            Value::BigInt(_) => unreachable!("never on the fast path"),
        }
    }

    fn postcard(r: &Record) -> Vec<u8> {
        let mut buf = vec![0; r.encoded_len()];
        let n = r.encode_into(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    fn ours(append: bool, test: Option<&str>, key: &str, v: &Value, mono_ns: u64) -> Vec<u8> {
        let mut stack = stack();
        let mut out = Out::new(&mut stack);
        head(&mut out, append, test, key);
        value(&mut out, v);
        out.varint(mono_ns);
        out.as_bytes().to_vec()
    }

    fn values() -> Vec<Value> {
        let mut vs = vec![
            Value::None,
            Value::Bool(false),
            Value::Bool(true),
            Value::Float(0.99),
            Value::Float(f64::NAN),
            Value::Float(f64::NEG_INFINITY),
            Value::Float(-0.0),
            Value::Str(String::new()),
            Value::Str("resnet50 \u{e9}\u{1f600}".into()),
            Value::Str("x".repeat(300)),
            Value::Str("y".repeat(70_000)),
            Value::Bytes(vec![0, 255, 128]),
            Value::Bytes(vec![7; 1000]),
            Value::List(vec![]),
            Value::Dict(vec![]),
        ];
        for i in [
            0,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            127,
            128,
            300,
            -300,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
            i64::MAX,
            i64::MIN,
        ] {
            vs.push(Value::Int(i));
        }
        let small: Vec<Value> = vs.clone();
        vs.push(Value::List(small.clone()));
        vs.push(Value::List((0..200).map(Value::Int).collect()));
        vs.push(Value::Dict(vec![
            ("i".into(), Value::Int(7)),
            ("pcc".into(), Value::Float(0.99)),
            ("passed".into(), Value::Bool(true)),
            ("model".into(), Value::Str("resnet50".into())),
            ("nested".into(), Value::List(small)),
            (
                "d".into(),
                Value::Dict(vec![(String::new(), Value::None); 130]),
            ),
        ]));
        vs
    }

    #[test]
    fn property_records_encode_as_postcard_does() {
        let long_key = "k".repeat(200);
        for v in values() {
            for (test, key, mono_ns) in [
                (None, "metric", 0),
                (Some("t.py::test[a]"), "m\u{e9}tric", 1),
                (Some(""), long_key.as_str(), u64::MAX),
                (Some("x"), "", 1 << 40),
            ] {
                for append in [false, true] {
                    let (test_s, key_s) = (test.map(str::to_owned), key.to_owned());
                    let rec = if append {
                        Record::PropertyAppend {
                            test: test_s,
                            key: key_s,
                            value: v.clone(),
                            mono_ns,
                        }
                    } else {
                        Record::PropertySet {
                            test: test_s,
                            key: key_s,
                            value: v.clone(),
                            mono_ns,
                        }
                    };
                    assert_eq!(
                        ours(append, test, key, &v, mono_ns),
                        postcard(&rec),
                        "{rec:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_buffer_moves_to_the_heap_intact() {
        let mut stack = [MaybeUninit::uninit(); 4];
        let mut out = Out::new(&mut stack);
        out.put(b"ab");
        out.byte(b'c');
        out.put(b"defgh");
        out.byte(b'i');
        assert_eq!(out.as_bytes(), b"abcdefghi");
    }

    #[test]
    fn bytes_encode_only_into_room_enough() {
        let b = Bytes(b"abc");
        assert_eq!(b.encode_into(&mut [0; 2]).unwrap(), None);
        let mut buf = [0; 5];
        assert_eq!(b.encode_into(&mut buf).unwrap(), Some(3));
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(b.encoded_len().unwrap(), 3);
    }
}
