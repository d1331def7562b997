//! Python -> `Value`: plain types as they are; others the nearest plain type or their
//! repr, each kind noted once, and the notes become one warning per call.

use std::borrow::Cow;

use blackbox_core::Value;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyMemoryView, PySet,
    PyString, PyTuple,
};

use crate::errors::{too_large, warn_notes};

/// Deeper nesting than this is stored as `repr`.
pub(crate) const MAX_DEPTH: usize = 32;

// ---------------------------------------------------------------------------------------
// Values: Python -> Value (plain types as they are; others the nearest plain type or their
// repr, each kind noted once, and the notes become one warning per call) and back.
// ---------------------------------------------------------------------------------------

/// The most values (scalars, list items, dict entries) one record may hold. It bounds the
/// work of a value that shares a sub-list many times over (`a = [a, a]` forty times is
/// 2**40 values once expanded); a larger value is refused as too large.
pub(crate) const MAX_VALUES: usize = 1 << 20;

/// Characters of a key or repr quoted in a warning or an error message.
pub(crate) const QUOTE_CHARS: usize = 60;

/// A phase report too large for one record keeps this many bytes of each long string.
pub(crate) const REPORT_STR_LIMIT: usize = 64 * 1024;

/// Distinct notes kept for one warning; the rest are only counted.
pub(crate) const MAX_NOTES: usize = 16;

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "object".to_owned(), |n| n.to_string())
}

pub(crate) fn repr_of(obj: &Bound<'_, PyAny>) -> String {
    obj.repr().map_or_else(
        |_| format!("<unrepresentable {}>", type_name(obj)),
        |r| r.to_string(),
    )
}

/// `s` cut to `QUOTE_CHARS` characters, for messages.
pub(crate) fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

/// The UTF-8 of a str, borrowed; `None` (error cleared) for lone surrogates.
pub(crate) fn utf8_of<'a>(s: &'a Bound<'_, PyString>) -> Option<&'a str> {
    let mut size: pyo3::ffi::Py_ssize_t = 0;
    // SAFETY: `s` is a live str; CPython caches the UTF-8 in the object, which `s` keeps
    // alive for 'a, and never changes it (str is immutable).
    let ptr = unsafe { pyo3::ffi::PyUnicode_AsUTF8AndSize(s.as_ptr(), &raw mut size) };
    if ptr.is_null() {
        // SAFETY: the GIL is held (we have a Bound); clears the UnicodeEncodeError.
        unsafe { pyo3::ffi::PyErr_Clear() };
        return None;
    }
    // SAFETY: CPython guarantees `size` valid UTF-8 bytes at `ptr`.
    Some(unsafe {
        std::str::from_utf8_unchecked(std::slice::from_raw_parts(ptr.cast::<u8>(), size as usize))
    })
}

/// A nodeid as given (lone surrogates, which no pytest nodeid has, replaced).
pub(crate) fn nodeid_of(s: &Bound<'_, PyString>) -> String {
    utf8_of(s).map_or_else(|| s.to_string_lossy().into_owned(), str::to_owned)
}

/// The text of a str argument (a nodeid, a phase) as given, borrowed when it is valid
/// UTF-8 (lone surrogates, which no pytest nodeid has, replaced).
pub(crate) fn text_of<'a>(s: &'a Bound<'_, PyString>) -> Cow<'a, str> {
    utf8_of(s).map_or_else(|| s.to_string_lossy(), Cow::Borrowed)
}

/// The text of `s`; lone surrogates (not UTF-8) become `\udXXX` escapes, noted.
pub(crate) fn str_noted(s: &Bound<'_, PyString>, notes: &mut Notes) -> String {
    if let Some(c) = utf8_of(s) {
        return c.to_owned();
    }
    notes.push("a str with lone surrogates stored with \\udXXX escapes in their place".to_owned());
    s.call_method1("encode", ("utf-8", "backslashreplace"))
        .ok()
        .and_then(|b| {
            b.cast::<PyBytes>()
                .ok()
                .map(|b| String::from_utf8_lossy(b.as_bytes()).into_owned())
        })
        .unwrap_or_else(|| s.to_string_lossy().into_owned())
}

/// What one conversion noticed: the distinct notes (the first few in order) and how many
/// more distinct ones there were.
#[derive(Default)]
pub(crate) struct Notes {
    kept: Vec<String>,
    seen: std::collections::HashSet<String>,
    more: usize,
    /// Something plain changed shape (a tuple became a list): not noted, but the stored
    /// value is not the caller's object.
    pub(crate) reshaped: bool,
}

impl Notes {
    pub(crate) fn push(&mut self, note: String) {
        if self.seen.contains(&note) {
            return;
        }
        if self.kept.len() < MAX_NOTES {
            self.kept.push(note.clone());
        } else {
            self.more += 1;
        }
        if self.seen.len() < 4096 {
            self.seen.insert(note);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    pub(crate) fn message(&self, what: &str) -> String {
        let shown = self.kept.len().min(3);
        let hidden = self.kept.len() - shown + self.more;
        let more = if hidden > 0 {
            format!(" (and {hidden} more)")
        } else {
            String::new()
        };
        format!("blackbox: {what}: {}{more}", self.kept[..shown].join("; "))
    }
}

/// Converts one Python object tree into a [`Value`]; see `to_value`.
pub(crate) struct Converter<'n> {
    notes: &'n mut Notes,
    /// Values and string bytes so far: a lower bound of the encoded size.
    values: usize,
    bytes: usize,
    /// Set once the value cannot fit one record; conversion then stops early.
    pub(crate) too_large: bool,
    /// The containers being converted, outermost first: one seen again is a cycle.
    path: Vec<*mut pyo3::ffi::PyObject>,
    /// Strings and bytes longer than this are cut (phase reports only).
    max_str: Option<usize>,
}

impl<'n> Converter<'n> {
    pub(crate) fn new(notes: &'n mut Notes, max_str: Option<usize>) -> Self {
        Converter {
            notes,
            values: 0,
            bytes: 0,
            too_large: false,
            path: Vec::new(),
            max_str,
        }
    }

    fn count(&mut self, bytes: usize) -> bool {
        self.values += 1;
        self.bytes += bytes;
        if self.values > MAX_VALUES || self.bytes > blackbox_core::MAX_RECORD {
            self.too_large = true;
        }
        !self.too_large
    }

    fn string(&mut self, s: &Bound<'_, PyString>) -> Value {
        let text = str_noted(s, self.notes);
        let text = self.cut_str(text);
        self.count(text.len());
        Value::Str(text)
    }

    fn bytes_value(&mut self, mut b: Vec<u8>) -> Value {
        if let Some(max) = self.max_str {
            if b.len() > max {
                let cut = b.len() - max;
                b.truncate(max);
                b.extend_from_slice(format!("... [{cut} more bytes cut by blackbox]").as_bytes());
            }
        }
        self.count(b.len());
        Value::Bytes(b)
    }

    fn cut_str(&self, s: String) -> String {
        match self.max_str {
            Some(max) if s.len() > max => {
                let mut end = max;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                format!(
                    "{}... [{} more bytes cut by blackbox]",
                    &s[..end],
                    s.len() - end
                )
            }
            _ => s,
        }
    }

    fn repr(&mut self, obj: &Bound<'_, PyAny>, note: String) -> Value {
        self.notes.push(note);
        let r = self.cut_str(repr_of(obj));
        self.count(r.len());
        Value::Str(r)
    }

    fn int(&mut self, obj: &Bound<'_, PyAny>) -> Value {
        if let Ok(i) = obj.extract::<i64>() {
            self.count(1);
            Value::Int(i)
        } else if let Ok(text) = obj.str() {
            let text = text.to_string();
            self.count(text.len());
            Value::BigInt(text)
        } else {
            // Past Python's int-to-str digit limit: hex has no limit.
            self.notes
                .push("an int too long for str() stored as its hex str".to_owned());
            let hex = obj
                .py()
                .import("builtins")
                .and_then(|b| b.getattr("hex"))
                .and_then(|h| h.call1((obj,)))
                .map_or_else(|_| repr_of(obj), |h| h.to_string());
            let hex = self.cut_str(hex);
            self.count(hex.len());
            Value::Str(hex)
        }
    }

    /// Python -> Value: plain values as they are; subclasses and look-alikes as the nearest
    /// plain type; anything else as its repr; each with a note.
    pub(crate) fn value(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Value {
        if self.too_large {
            return Value::None;
        }
        // Exact plain types first: the common case, no note.
        if obj.is_none() {
            self.count(1);
            return Value::None;
        }
        if obj.is_exact_instance_of::<PyBool>() {
            self.count(1);
            return Value::Bool(obj.is_truthy().unwrap_or(false));
        }
        if obj.is_exact_instance_of::<PyInt>() {
            return self.int(obj);
        }
        if obj.is_exact_instance_of::<PyFloat>() {
            self.count(1);
            return Value::Float(obj.extract::<f64>().unwrap_or(f64::NAN));
        }
        if let Ok(s) = obj.cast_exact::<PyString>() {
            return self.string(s);
        }
        if let Ok(b) = obj.cast_exact::<PyBytes>() {
            return self.bytes_value(b.as_bytes().to_vec());
        }
        if obj.is_exact_instance_of::<PyList>() || obj.is_exact_instance_of::<PyTuple>() {
            if !obj.is_exact_instance_of::<PyList>() {
                self.notes.reshaped = true; // a tuple reads back as a list
            }
            return self.container(obj, depth, "[...]", |c, o| c.sequence(o, depth));
        }
        if let Ok(d) = obj.cast_exact::<PyDict>() {
            // PyDict_Next into a Vec first: no Python code runs while the dict is walked (a
            // repr during conversion could change it), and no list of tuples is made.
            let pairs: Vec<_> = d.iter().collect();
            return self.container(obj, depth, "{...}", |c, _| c.dict(pairs.into_iter(), depth));
        }
        self.look_alike(obj, &type_name(obj), depth)
    }

    /// A value that is not exactly a plain type: the nearest one, noted.
    fn look_alike(&mut self, obj: &Bound<'_, PyAny>, tn: &str, depth: usize) -> Value {
        let py = obj.py();
        if obj.is_instance_of::<PyInt>() {
            self.notes
                .push(format!("{tn} (an int subclass) stored as int"));
            return self.int(obj);
        }
        if obj.is_instance_of::<PyFloat>() {
            self.notes
                .push(format!("{tn} (a float subclass) stored as float"));
            self.count(1);
            return Value::Float(obj.extract::<f64>().unwrap_or(f64::NAN));
        }
        if let Ok(s) = obj.cast::<PyString>() {
            self.notes
                .push(format!("{tn} (a str subclass) stored as str"));
            return self.string(s);
        }
        if let Ok(b) = obj.cast::<PyBytes>() {
            self.notes
                .push(format!("{tn} (a bytes subclass) stored as bytes"));
            return self.bytes_value(b.as_bytes().to_vec());
        }
        if let Ok(b) = obj.cast::<PyByteArray>() {
            self.notes.push(format!("{tn} stored as bytes"));
            return self.bytes_value(b.to_vec());
        }
        if obj.is_instance_of::<PyMemoryView>() {
            if let Ok(b) = py.get_type::<PyBytes>().call1((obj,)) {
                if let Ok(b) = b.cast::<PyBytes>() {
                    self.notes.push(format!("{tn} stored as bytes"));
                    return self.bytes_value(b.as_bytes().to_vec());
                }
            }
            return self.repr(obj, format!("{tn} stored as its repr"));
        }
        if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
            self.notes.push(format!("{tn} stored as list"));
            return self.container(obj, depth, "[...]", |c, o| c.sequence(o, depth));
        }
        if let Ok(d) = obj.cast::<PyDict>() {
            self.notes.push(format!("{tn} stored as dict"));
            let items = d.items();
            return self.container(obj, depth, "{...}", |c, _| {
                c.dict(items.iter().filter_map(|i| i.extract().ok()), depth)
            });
        }
        if obj.is_instance_of::<PySet>() || obj.is_instance_of::<PyFrozenSet>() {
            self.notes.push(format!("{tn} stored as a sorted list"));
            return self.container(obj, depth, "[...]", |c, o| c.set(o, depth));
        }
        // numpy (and pandas, jax...) scalars and arrays: tolist() gives the plain values.
        if has(obj, "__array__") && has(obj, "tolist") {
            if let Ok(plain) = obj.call_method0("tolist") {
                self.notes.push(format!("{tn} stored as its tolist()"));
                return self.value(&plain, depth + 1);
            }
        }
        match abc_kind(obj) {
            Some(AbcKind::Mapping) => {
                if let Ok(items) = obj
                    .call_method0("items")
                    .and_then(|i| py.get_type::<PyList>().call1((i,)))
                {
                    if let Ok(items) = items.cast::<PyList>() {
                        self.notes.push(format!("{tn} (a Mapping) stored as dict"));
                        let items = items.clone();
                        return self.container(obj, depth, "{...}", |c, _| {
                            c.dict(items.iter().filter_map(|i| i.extract().ok()), depth)
                        });
                    }
                }
                return self.repr(obj, format!("{tn} stored as its repr"));
            }
            Some(AbcKind::Collection) if obj.len().is_ok_and(|n| n <= MAX_VALUES) => {
                if let Ok(items) = py.get_type::<PyList>().call1((obj,)) {
                    self.notes.push(format!("{tn} stored as list"));
                    return self.container(obj, depth, "[...]", |c, _| c.sequence(&items, depth));
                }
                return self.repr(obj, format!("{tn} stored as its repr"));
            }
            _ => {}
        }
        if has(obj, "__index__") {
            if let Ok(i) = obj.call_method0("__index__") {
                if i.is_instance_of::<PyInt>() {
                    self.notes.push(format!("{tn} stored as int"));
                    return self.int(&i);
                }
            }
        }
        if has(obj, "__float__") {
            if let Ok(f) = obj
                .call_method0("__float__")
                .and_then(|f| f.extract::<f64>())
            {
                self.notes.push(format!("{tn} stored as float"));
                self.count(1);
                return Value::Float(f);
            }
        }
        self.repr(obj, format!("{tn} stored as its repr"))
    }

    /// Converts a container with `body`; its repr past `MAX_DEPTH`, `cycle` when it
    /// contains itself.
    fn container(
        &mut self,
        obj: &Bound<'_, PyAny>,
        depth: usize,
        cycle: &str,
        body: impl FnOnce(&mut Self, &Bound<'_, PyAny>) -> Value,
    ) -> Value {
        if depth >= MAX_DEPTH {
            return self.repr(
                obj,
                format!("nesting deeper than {MAX_DEPTH} levels stored as its repr"),
            );
        }
        let ptr = obj.as_ptr();
        if self.path.contains(&ptr) {
            self.notes.push(format!(
                "a {} that contains itself: the cycle stored as {cycle:?}",
                type_name(obj)
            ));
            self.count(cycle.len());
            return Value::Str(cycle.to_owned());
        }
        self.count(1);
        self.path.push(ptr);
        let v = body(self, obj);
        self.path.pop();
        v
    }

    fn sequence(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Value {
        let mut out = Vec::new();
        if let Ok(l) = obj.cast::<PyList>() {
            // By index: a list changed while we read it (by a repr) cannot trip us.
            let mut i = 0;
            while let Ok(x) = l.get_item(i) {
                if self.too_large {
                    break;
                }
                out.push(self.value(&x, depth + 1));
                i += 1;
            }
            return Value::List(out);
        }
        match obj.try_iter() {
            Ok(it) => {
                for x in it {
                    if self.too_large {
                        break;
                    }
                    match x {
                        Ok(x) => out.push(self.value(&x, depth + 1)),
                        Err(e) => {
                            self.notes.push(format!(
                                "iterating a {} failed ({e}); kept the items before",
                                type_name(obj)
                            ));
                            break;
                        }
                    }
                }
                Value::List(out)
            }
            Err(_) => self.repr(
                obj,
                format!("{} (not iterable) stored as its repr", type_name(obj)),
            ),
        }
    }

    fn set(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Value {
        let py = obj.py();
        // sorted() when the items compare; otherwise in the order of their reprs.
        let sorted = py
            .import("builtins")
            .and_then(|b| b.getattr("sorted"))
            .and_then(|f| f.call1((obj,)));
        if let Ok(items) = sorted {
            return self.sequence(&items, depth);
        }
        let mut items: Vec<(String, Bound<'_, PyAny>)> = match obj.try_iter() {
            Ok(it) => it
                .filter_map(Result::ok)
                .map(|x| (repr_of(&x), x))
                .collect(),
            Err(_) => Vec::new(),
        };
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::with_capacity(items.len());
        for (_, x) in items {
            if self.too_large {
                break;
            }
            out.push(self.value(&x, depth + 1));
        }
        Value::List(out)
    }

    fn dict<'py>(
        &mut self,
        items: impl Iterator<Item = (Bound<'py, PyAny>, Bound<'py, PyAny>)>,
        depth: usize,
    ) -> Value {
        let mut pairs: Vec<(String, Value)> = Vec::with_capacity(items.size_hint().0);
        let mut converted_keys = false;
        for (k, v) in items {
            if self.too_large {
                break;
            }
            let key = if let Ok(s) = k.cast_exact::<PyString>() {
                match self.string(s) {
                    Value::Str(s) => s,
                    _ => String::new(),
                }
            } else {
                converted_keys = true;
                let text = k
                    .str()
                    .map_or_else(|_| repr_of(&k), |s| s.to_string_lossy().into_owned());
                self.notes.push(format!(
                    "a dict key of type {} stored as its str",
                    type_name(&k)
                ));
                self.count(text.len());
                text
            };
            pairs.push((key, self.value(&v, depth + 1)));
        }
        if converted_keys {
            // Two keys with one str (1 and "1"): keep the last, as a dict would.
            let mut seen = std::collections::HashSet::new();
            let before = pairs.len();
            let mut kept: Vec<(String, Value)> = pairs
                .into_iter()
                .rev()
                .filter(|(k, _)| seen.insert(k.clone()))
                .collect();
            kept.reverse();
            if kept.len() < before {
                self.notes
                    .push("dict keys with the same str: the last one kept".to_owned());
            }
            pairs = kept;
        }
        Value::Dict(pairs)
    }
}

pub(crate) fn has(obj: &Bound<'_, PyAny>, attr: &str) -> bool {
    obj.hasattr(attr).unwrap_or(false)
}

pub(crate) enum AbcKind {
    Mapping,
    /// A `collections.abc.Set` or `Sequence` (str and bytes were taken care of before).
    Collection,
}

pub(crate) fn abc_kind(obj: &Bound<'_, PyAny>) -> Option<AbcKind> {
    static ABCS: PyOnceLock<(Py<PyAny>, Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();
    let py = obj.py();
    let (mapping, set, sequence) = ABCS
        .get_or_try_init(py, || -> PyResult<_> {
            let abc = py.import("collections.abc")?;
            Ok((
                abc.getattr("Mapping")?.unbind(),
                abc.getattr("Set")?.unbind(),
                abc.getattr("Sequence")?.unbind(),
            ))
        })
        .ok()?;
    if obj.is_instance(mapping.bind(py)).unwrap_or(false) {
        Some(AbcKind::Mapping)
    } else if obj.is_instance(set.bind(py)).unwrap_or(false)
        || obj.is_instance(sequence.bind(py)).unwrap_or(false)
    {
        Some(AbcKind::Collection)
    } else {
        None
    }
}

/// Converts `obj` (noting into `notes`); a value that cannot fit one record is refused.
/// `what` names the value in messages; it is only called when there is one to write.
pub(crate) fn to_value(
    py: Python<'_>,
    what: &dyn Fn() -> String,
    obj: &Bound<'_, PyAny>,
    notes: &mut Notes,
) -> PyResult<Value> {
    let mut c = Converter::new(notes, None);
    let v = c.value(obj, 0);
    if c.too_large {
        return Err(too_large(py, &what()));
    }
    Ok(v)
}

/// Converts, emitting one warning when anything was not a plain value.
pub(crate) fn convert(
    py: Python<'_>,
    what: &str,
    obj: &Bound<'_, PyAny>,
    warn: bool,
) -> PyResult<Value> {
    let mut notes = Notes::default();
    let v = to_value(py, &|| what.to_owned(), obj, &mut notes)?;
    if warn {
        warn_notes(py, what, &notes, 2)?;
    }
    Ok(v)
}
