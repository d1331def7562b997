//! `pytest_blackbox._native`: the Python face of blackbox-core. Conversion and error mapping
//! only; the logic lives in the core crate. Docs live in `_native.pyi`.

mod encode;
mod history;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use blackbox_core::record::{Phase, Record, Role, Value};
use blackbox_core::{now_mono_ns, now_wall_ns, Aggregate, Durability, Follower, Recorder, Store};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyMemoryView, PySet,
    PyString, PyTuple,
};

/// Deeper nesting than this is stored as `repr`.
const MAX_DEPTH: usize = 32;

// ---------------------------------------------------------------------------------------
// Errors: the exception classes live in pytest_blackbox.errors (one tree under
// BlackboxError); this maps core errors onto them.
// ---------------------------------------------------------------------------------------

fn error_class(e: &blackbox_core::Error) -> &'static str {
    use blackbox_core::Error as E;
    match e {
        E::StoreFull { .. } | E::SegmentFull { .. } => "StoreFullError",
        E::RecordTooLarge { .. } => "RecordTooLargeError",
        E::Damaged(_) | E::UnsupportedVersion { .. } => "DamagedStoreError",
        E::NoStore { .. } | E::NoRuns { .. } | E::NoStoreFound { .. } => "NoStoreError",
        E::NoSuchRun { .. } | E::AmbiguousRun { .. } => "NoSuchRunError",
        E::Refused { .. } => "StoreRefusedError",
        E::TransactionOpen => "TransactionError",
        _ => "BlackboxError",
    }
}

fn raise(py: Python<'_>, class: &str, msg: String) -> PyErr {
    match py
        .import("pytest_blackbox.errors")
        .and_then(|m| m.getattr(class))
    {
        Ok(cls) => match cls.call1((msg.clone(),)) {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        },
        Err(_) => PyValueError::new_err(msg),
    }
}

fn map_err(py: Python<'_>, e: &blackbox_core::Error) -> PyErr {
    raise(py, error_class(e), e.to_string())
}

trait OrRaise<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrRaise<T> for blackbox_core::Result<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| map_err(py, &e))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------
// Values: Python -> Value (plain types as they are; others the nearest plain type or their
// repr, each kind noted once, and the notes become one warning per call) and back.
// ---------------------------------------------------------------------------------------

/// The most values (scalars, list items, dict entries) one record may hold. It bounds the
/// work of a value that shares a sub-list many times over (`a = [a, a]` forty times is
/// 2**40 values once expanded); a larger value is refused as too large.
const MAX_VALUES: usize = 1 << 20;

/// Characters of a key or repr quoted in a warning or an error message.
const QUOTE_CHARS: usize = 60;

/// A phase report too large for one record keeps this many bytes of each long string.
const REPORT_STR_LIMIT: usize = 64 * 1024;

/// Distinct notes kept for one warning; the rest are only counted.
const MAX_NOTES: usize = 16;

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "object".to_owned(), |n| n.to_string())
}

fn repr_of(obj: &Bound<'_, PyAny>) -> String {
    obj.repr().map_or_else(
        |_| format!("<unrepresentable {}>", type_name(obj)),
        |r| r.to_string(),
    )
}

/// `s` cut to `QUOTE_CHARS` characters, for messages.
fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

/// The UTF-8 of a str, borrowed; `None` (error cleared) for lone surrogates.
fn utf8_of<'a>(s: &'a Bound<'_, PyString>) -> Option<&'a str> {
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
fn nodeid_of(s: &Bound<'_, PyString>) -> String {
    utf8_of(s).map_or_else(|| s.to_string_lossy().into_owned(), str::to_owned)
}

/// The text of a str argument (a nodeid, a phase) as given, borrowed when it is valid
/// UTF-8 (lone surrogates, which no pytest nodeid has, replaced).
fn text_of<'a>(s: &'a Bound<'_, PyString>) -> Cow<'a, str> {
    utf8_of(s).map_or_else(|| s.to_string_lossy(), Cow::Borrowed)
}

/// The text of `s`; lone surrogates (not UTF-8) become `\udXXX` escapes, noted.
fn str_noted(s: &Bound<'_, PyString>, notes: &mut Notes) -> String {
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
struct Notes {
    kept: Vec<String>,
    seen: std::collections::HashSet<String>,
    more: usize,
    /// Something plain changed shape (a tuple became a list): not noted, but the stored
    /// value is not the caller's object.
    reshaped: bool,
}

impl Notes {
    fn push(&mut self, note: String) {
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

    fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    fn message(&self, what: &str) -> String {
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
struct Converter<'n> {
    notes: &'n mut Notes,
    /// Values and string bytes so far: a lower bound of the encoded size.
    values: usize,
    bytes: usize,
    /// Set once the value cannot fit one record; conversion then stops early.
    too_large: bool,
    /// The containers being converted, outermost first: one seen again is a cycle.
    path: Vec<*mut pyo3::ffi::PyObject>,
    /// Strings and bytes longer than this are cut (phase reports only).
    max_str: Option<usize>,
}

impl<'n> Converter<'n> {
    fn new(notes: &'n mut Notes, max_str: Option<usize>) -> Self {
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
        if self.values > MAX_VALUES || self.bytes > blackbox_core::segment::MAX_RECORD {
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
    fn value(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Value {
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

fn has(obj: &Bound<'_, PyAny>, attr: &str) -> bool {
    obj.hasattr(attr).unwrap_or(false)
}

enum AbcKind {
    Mapping,
    /// A `collections.abc.Set` or `Sequence` (str and bytes were taken care of before).
    Collection,
}

fn abc_kind(obj: &Bound<'_, PyAny>) -> Option<AbcKind> {
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

fn warning_class(py: Python<'_>) -> Option<Bound<'_, PyAny>> {
    static CLS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CLS.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py
            .import("pytest_blackbox.errors")?
            .getattr("BlackboxWarning")?
            .unbind())
    })
    .ok()
    .map(|c| c.bind(py).clone())
}

/// Emits the one warning of a call, if anything was noted, for the frame `stacklevel` up.
fn warn_notes(py: Python<'_>, what: &str, notes: &Notes, stacklevel: i32) -> PyResult<()> {
    if notes.is_empty() {
        return Ok(());
    }
    if let Some(cls) = warning_class(py) {
        let msg =
            std::ffi::CString::new(notes.message(what).replace('\0', "\\0")).unwrap_or_default();
        PyErr::warn(py, &cls, &msg, stacklevel)?;
    }
    Ok(())
}

fn too_large(py: Python<'_>, what: &str) -> PyErr {
    raise(
        py,
        "RecordTooLargeError",
        format!(
            "{what} is too large for one record (more than {MAX_VALUES} values or {} MiB, counting a shared \
             sub-list once per place it appears); store large data in a file and record its path",
            blackbox_core::segment::MAX_RECORD >> 20
        ),
    )
}

/// Converts `obj` (noting into `notes`); a value that cannot fit one record is refused.
/// `what` names the value in messages; it is only called when there is one to write.
fn to_value(
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
fn convert(py: Python<'_>, what: &str, obj: &Bound<'_, PyAny>, warn: bool) -> PyResult<Value> {
    let mut notes = Notes::default();
    let v = to_value(py, &|| what.to_owned(), obj, &mut notes)?;
    if warn {
        warn_notes(py, what, &notes, 2)?;
    }
    Ok(v)
}

fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::None => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        // Past this interpreter's int-to-str digit limit it stays a str.
        Value::BigInt(s) => py
            .get_type::<PyInt>()
            .call1((s.as_str(),))
            .unwrap_or_else(|_| PyString::new(py, s).into_any()),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::List(items) => {
            let l = PyList::empty(py);
            for x in items {
                l.append(value_to_py(py, x)?)?;
            }
            l.into_any()
        }
        Value::Dict(pairs) => {
            let d = PyDict::new(py);
            for (k, x) in pairs {
                d.set_item(k, value_to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => py.None().into_bound(py),
        J::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        J::String(s) => PyString::new(py, s).into_any(),
        J::Array(items) => {
            let l = PyList::empty(py);
            for x in items {
                l.append(json_to_py(py, x)?)?;
            }
            l.into_any()
        }
        J::Object(map) => {
            let d = PyDict::new(py);
            for (k, x) in map {
                d.set_item(k, json_to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

fn parse_role(role: &str) -> PyResult<Role> {
    Role::parse(role).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown role {role:?}: use main, controller, worker, forked or other"
        ))
    })
}

fn parse_durability(d: &str) -> PyResult<Durability> {
    Durability::parse(d).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown durability {d:?}: use \"process\" or \"system\""
        ))
    })
}

fn parse_phase(p: &str) -> PyResult<Phase> {
    Phase::parse(p).ok_or_else(|| {
        PyValueError::new_err(format!("unknown phase {p:?}: use setup, call or teardown"))
    })
}

// ---------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------

/// Times one fixture, for the plugin's `pytest_fixture_setup` hook wrapper: its setup from
/// the timer's creation ([`PyTestHooks::fixture_starts`]) until [`setup_done`]; its
/// teardown through two calls as a finalizer of the fixture (`FixtureDef.addfinalizer`):
/// the first, added after the setup, runs before the fixture's own teardown; the second,
/// added before it, runs after. Each record names the test this process runs at that
/// moment. A store error becomes a warning: a finalizer that raised would fail the
/// test's teardown.
///
/// [`setup_done`]: PyFixtureTimer::setup_done
#[pyclass(module = "pytest_blackbox._native", name = "FixtureTimer", frozen)]
struct PyFixtureTimer {
    recorder: Py<PyRecorder>,
    name: String,
    scope: String,
    /// When the setup or the teardown being timed started, and how often the timer was
    /// called as a finalizer.
    state: Mutex<(Option<std::time::Instant>, u8)>,
}

impl PyFixtureTimer {
    fn finish(&self, py: Python<'_>, setup: bool) {
        let Some(t0) = lock(&self.state).0.take() else {
            return;
        };
        let duration_s = t0.elapsed().as_secs_f64();
        let done = {
            let mut r = lock(&self.recorder.get().inner);
            let test = r.current_test().map(str::to_owned);
            r.record(&Record::Fixture {
                name: self.name.clone(),
                scope: self.scope.clone(),
                setup,
                test,
                duration_s,
                mono_ns: now_mono_ns(),
            })
        };
        if let Err(e) = done {
            store_warning(py, &e);
        }
    }
}

#[pymethods]
impl PyFixtureTimer {
    /// The fixture's setup is over (it raised or not): records it and adds the timer as
    /// the finalizer that starts the teardown.
    fn setup_done(slf: &Bound<'_, Self>, fixturedef: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        slf.get().finish(py, true);
        fixturedef.call_method1(intern!(py, "addfinalizer"), (slf,))?;
        Ok(())
    }

    /// As a finalizer: the first call starts the teardown, the second records it.
    fn __call__(&self, py: Python<'_>) {
        let calls = {
            let mut state = lock(&self.state);
            state.1 = state.1.saturating_add(1);
            if state.1 == 1 {
                state.0 = Some(std::time::Instant::now());
            }
            state.1
        };
        if calls == 2 {
            self.finish(py, false);
        }
    }
}

/// What one pytest session records of the tests this process runs: their start and their
/// phase reports, into `recorder`, with the running test kept in `session`
/// (`current_item`, `current_nodeid`, for `record()`); and its fixtures' times. The
/// plugin's hooks call it (`pytest_runtest_setup`, a `pytest_runtest_makereport` and a
/// `pytest_fixture_setup` wrapper), one native call each.
#[pyclass(module = "pytest_blackbox._native", name = "TestHooks", frozen)]
struct PyTestHooks {
    recorder: Py<PyRecorder>,
    session: Py<PyAny>,
    config: Py<PyAny>,
    /// Called (no arguments) on the first test in a process other than the last one
    /// seen (a forked child).
    on_new_process: Py<PyAny>,
    /// The process that made the session: a phase report from another one (a forked
    /// child) is stored whole, for its parent.
    session_pid: u32,
    seen_pid: std::sync::atomic::AtomicU32,
    /// `skip(func)`: whether not to time the fixture function `func` (asked once per
    /// fixture definition).
    skip: Py<PyAny>,
    /// Each fixture definition's scope name (`FixtureDef.scope` is a Python property), or
    /// `None` for one not timed.
    scopes: Py<PyDict>,
}

impl PyTestHooks {
    fn set_current(
        &self,
        py: Python<'_>,
        item: &Bound<'_, PyAny>,
        nodeid: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let session = self.session.bind(py);
        session.setattr(intern!(py, "current_item"), item)?;
        session.setattr(intern!(py, "current_nodeid"), nodeid)
    }

    /// The scope to record `fixturedef` under, or `None` when it is not timed.
    fn fixture_scope<'py>(
        &self,
        py: Python<'py>,
        fixturedef: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let scopes = self.scopes.bind(py);
        if let Some(scope) = scopes.get_item(fixturedef)? {
            return Ok((!scope.is_none()).then_some(scope));
        }
        let func = fixturedef.getattr(intern!(py, "func"))?;
        let skipped = self.skip.bind(py).call1((&func,))?.is_truthy()?;
        let scope = if skipped {
            py.None().into_bound(py)
        } else {
            fixturedef.getattr(intern!(py, "scope"))?
        };
        scopes.set_item(fixturedef, &scope)?;
        Ok((!scope.is_none()).then_some(scope))
    }
}

#[pymethods]
impl PyTestHooks {
    #[new]
    fn new(
        py: Python<'_>,
        recorder: Py<PyRecorder>,
        session: Py<PyAny>,
        config: Py<PyAny>,
        on_new_process: Py<PyAny>,
        session_pid: u32,
        skip: Py<PyAny>,
    ) -> Self {
        PyTestHooks {
            recorder,
            session,
            config,
            on_new_process,
            session_pid,
            seen_pid: std::sync::atomic::AtomicU32::new(std::process::id()),
            skip,
            scopes: PyDict::new(py).unbind(),
        }
    }

    /// `item` starts (before its setup).
    fn start(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let pid = blackbox_core::process_id();
        if self.seen_pid.swap(pid, Relaxed) != pid {
            self.on_new_process.bind(py).call0()?;
        }
        let nodeid = item.getattr(intern!(py, "nodeid"))?;
        self.set_current(py, item, &nodeid)?;
        let done =
            lock(&self.recorder.get().inner).start_test(&text_of(nodeid.cast::<PyString>()?));
        if let Err(e) = done {
            store_warning(py, &e);
        }
        Ok(())
    }

    /// Records `report`, the phase report pytest just made for `item`, when `item` is the
    /// running test; its teardown ends the test.
    fn record_phase(
        &self,
        py: Python<'_>,
        item: &Bound<'_, PyAny>,
        report: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let session = self.session.bind(py);
        if !session.getattr(intern!(py, "current_item"))?.is(item) {
            return Ok(());
        }
        // The nodeid kept at the test's start (`report.nodeid` is a Python property on
        // pytest 9.2).
        let nodeid = session.getattr(intern!(py, "current_nodeid"))?;
        let when = report.getattr(intern!(py, "when"))?;
        let phase = match when.cast::<PyString>().ok().and_then(utf8_of) {
            Some("setup") => Phase::Setup,
            Some("call") => Phase::Call,
            Some("teardown") => Phase::Teardown,
            _ => return Ok(()),
        };
        let outcome = report.getattr(intern!(py, "outcome"))?;
        let outcome = outcome.cast::<PyString>()?;
        let duration_s: f64 = report.getattr(intern!(py, "duration"))?.extract()?;
        // A forked child's parent rebuilds its reports from the store (a forked child is
        // the only writer whose pid is not its session's); elsewhere only failures are
        // worth the serialization (the xdist controller recovers a dead worker's), and
        // skips (their reason, for `blackbox junit` of a run whose pytest died).
        let data = if matches!(utf8_of(outcome), Some("failed" | "skipped"))
            || blackbox_core::process_id() != self.session_pid
        {
            let config = self.config.bind(py);
            let kwargs = PyDict::new(py);
            kwargs.set_item(intern!(py, "config"), config)?;
            kwargs.set_item(intern!(py, "report"), report)?;
            let hook = config.getattr(intern!(py, "hook"))?;
            let to_data = hook.getattr(intern!(py, "pytest_report_to_serializable"))?;
            Some(to_data.call((), Some(&kwargs))?)
        } else {
            None
        };
        let nodeid = nodeid.cast::<PyString>()?;
        let recorder = self.recorder.get();
        let rec = phase_record(nodeid, phase, outcome, duration_s, data.as_ref());
        let done = {
            let mut r = lock(&recorder.inner);
            r.record(&rec).and_then(|()| {
                r.phase_done(phase);
                if phase == Phase::Teardown {
                    r.end_test(&text_of(nodeid))
                } else {
                    Ok(())
                }
            })
        };
        if let Err(e) = done {
            store_warning(py, &e);
        }
        if phase == Phase::Teardown {
            let none = py.None().into_bound(py);
            self.set_current(py, &none, &none)?;
        }
        Ok(())
    }

    /// A fixture's setup starts: its timer, added as the finalizer that ends its teardown
    /// (the plugin hands it back through `FixtureTimer.setup_done`); `None` for what is
    /// not timed.
    fn fixture_starts<'py>(
        &self,
        py: Python<'py>,
        fixturedef: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyFixtureTimer>>> {
        let Some(scope) = self.fixture_scope(py, fixturedef)? else {
            return Ok(None);
        };
        let name = fixturedef.getattr(intern!(py, "argname"))?;
        let timer = Bound::new(
            py,
            PyFixtureTimer {
                recorder: self.recorder.clone_ref(py),
                name: nodeid_of(name.cast::<PyString>()?),
                scope: nodeid_of(scope.cast::<PyString>()?),
                state: Mutex::new((Some(std::time::Instant::now()), 0)),
            },
        )?;
        fixturedef.call_method1(intern!(py, "addfinalizer"), (&timer,))?;
        Ok(Some(timer))
    }
}

/// A phase report record. `report` is the serialized pytest report (a dict), a copy for
/// the parent: when it cannot fit one record (a test's huge properties, each already in a
/// record of its own), its long strings are cut, and if that is not enough it is left out;
/// the phase itself is always recorded.
fn phase_record(
    nodeid: &Bound<'_, PyString>,
    phase: Phase,
    outcome: &Bound<'_, PyString>,
    duration_s: f64,
    report: Option<&Bound<'_, PyAny>>,
) -> Record {
    let mut rec = Record::TestPhase {
        nodeid: nodeid_of(nodeid),
        phase,
        outcome: nodeid_of(outcome),
        duration_s,
        mono_ns: now_mono_ns(),
        report: None,
    };
    if let Some(r) = report {
        for max_str in [None, Some(REPORT_STR_LIMIT)] {
            let mut notes = Notes::default();
            let mut c = Converter::new(&mut notes, max_str);
            let v = c.value(r, 0);
            if c.too_large {
                continue;
            }
            if let Record::TestPhase { report, .. } = &mut rec {
                *report = Some(v);
            }
            if rec.encoded_len() <= blackbox_core::segment::MAX_RECORD {
                break;
            }
            if let Record::TestPhase { report, .. } = &mut rec {
                *report = None;
            }
        }
    }
    rec
}

/// The error classes this process has warned about (see `store_warning`).
static STORE_WARNED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Whether this is the first store error of class `class` in this process: a full disk
/// fails every later write too, and the user needs to hear it once.
fn first_of_class(class: &str) -> bool {
    let mut warned = lock(&STORE_WARNED);
    if warned.iter().any(|c| c == class) {
        return false;
    }
    warned.push(class.to_owned());
    true
}

/// `first_of_class` for the plugin's own warnings of store errors (the class name of the
/// exception), so that the native and the Python side say it once between them.
#[pyfunction]
fn first_store_error(kind: &str) -> bool {
    first_of_class(kind)
}

/// A store error where raising would break the run: one `BlackboxWarning` per class of
/// error and process, or, where warnings are errors, one line on stderr.
fn store_warning(py: Python<'_>, e: &blackbox_core::Error) {
    if !first_of_class(error_class(e)) {
        return;
    }
    let msg = format!("blackbox: {e}");
    if let Some(cls) = warning_class(py) {
        let text = std::ffi::CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
        if PyErr::warn(py, &cls, &text, 1).is_ok() {
            return;
        }
    }
    eprintln!("{msg}");
}

#[pyclass(module = "pytest_blackbox._native", name = "Recorder", frozen)]
struct PyRecorder {
    /// Shared with the watchdog thread, which records a timeout into it.
    inner: Arc<Mutex<Recorder>>,
    durability: Durability,
}

impl PyRecorder {
    fn put(&self, py: Python<'_>, rec: &Record) -> PyResult<()> {
        // The error becomes a Python exception after the lock is released.
        let done = lock(&self.inner).record(rec);
        done.or_raise(py)
    }
}

#[pymethods]
impl PyRecorder {
    #[new]
    #[pyo3(signature = (run_dir, role = "other", worker = None, durability = "process"))]
    fn new(
        run_dir: PathBuf,
        role: &str,
        worker: Option<String>,
        durability: &str,
    ) -> PyResult<Self> {
        let durability = parse_durability(durability)?;
        Ok(PyRecorder {
            inner: Recorder::new(run_dir, parse_role(role)?, worker, durability).into_shared(),
            durability,
        })
    }

    /// Sets `key` of `test` (the last write wins); returns the stored plain value.
    #[pyo3(signature = (key, value, test = None, warn = true, key_as_str = false))]
    fn record<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        test: Option<&Bound<'py, PyString>>,
        warn: bool,
        key_as_str: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let test = test.map(text_of);
        let how = How {
            warn_at: warn.then_some(2),
            key_as_str,
        };
        self.property(py, Verb::Set, key, value, test.as_deref(), how)
    }

    /// Appends `value` to the list under `key` of `test`; returns the stored plain value.
    #[pyo3(signature = (key, value, test = None, warn = true, key_as_str = false))]
    fn append<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        test: Option<&Bound<'py, PyString>>,
        warn: bool,
        key_as_str: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let test = test.map(text_of);
        let how = How {
            warn_at: warn.then_some(2),
            key_as_str,
        };
        self.property(py, Verb::Append, key, value, test.as_deref(), how)
    }

    // The per-test and per-fixture methods below take their str arguments as `PyString`
    // and read its cached UTF-8 (`utf8_of`), borrowed: no `String` per argument.

    fn start_test(&self, py: Python<'_>, nodeid: &Bound<'_, PyString>) -> PyResult<()> {
        let nodeid = text_of(nodeid);
        let done = lock(&self.inner).start_test(&nodeid);
        done.or_raise(py)
    }

    /// The time limit of every test this recorder starts (`None`: none), and of single
    /// tests by nodeid (0: none for that test): the watchdog ends a test that runs past it.
    fn set_timeouts(
        &self,
        default_s: Option<f64>,
        per_test: std::collections::HashMap<String, f64>,
    ) {
        lock(&self.inner).set_timeouts(default_s, per_test);
    }

    /// pytest-timeout armed (`limit_s`) or cancelled (`None`) its timer for `nodeid`.
    #[pyo3(signature = (nodeid, limit_s))]
    fn external_timer(&self, nodeid: &str, limit_s: Option<f64>) {
        lock(&self.inner).external_timer(nodeid, limit_s);
    }

    fn end_test(&self, py: Python<'_>, nodeid: &Bound<'_, PyString>) -> PyResult<()> {
        let nodeid = text_of(nodeid);
        let done = lock(&self.inner).end_test(&nodeid);
        done.or_raise(py)
    }

    /// Records one phase report. `report` is the serialized pytest report (a dict).
    #[pyo3(signature = (nodeid, phase, outcome, duration_s, report = None))]
    fn phase(
        &self,
        py: Python<'_>,
        nodeid: &Bound<'_, PyString>,
        phase: &Bound<'_, PyString>,
        outcome: &Bound<'_, PyString>,
        duration_s: f64,
        report: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let rec = phase_record(
            nodeid,
            parse_phase(&text_of(phase))?,
            outcome,
            duration_s,
            report,
        );
        self.put(py, &rec)
    }

    #[pyo3(signature = (name, scope, setup, test, duration_s))]
    fn fixture(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyString>,
        scope: &Bound<'_, PyString>,
        setup: bool,
        test: Option<&Bound<'_, PyString>>,
        duration_s: f64,
    ) -> PyResult<()> {
        self.put(
            py,
            &Record::Fixture {
                name: nodeid_of(name),
                scope: nodeid_of(scope),
                setup,
                test: test.map(nodeid_of),
                duration_s,
                mono_ns: now_mono_ns(),
            },
        )
    }

    #[pyo3(signature = (name, test, duration_s))]
    fn timed(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyString>,
        test: Option<&Bound<'_, PyString>>,
        duration_s: f64,
    ) -> PyResult<()> {
        self.put(
            py,
            &Record::Timed {
                name: nodeid_of(name),
                test: test.map(nodeid_of),
                duration_s,
                mono_ns: now_mono_ns(),
            },
        )
    }

    #[pyo3(signature = (test, pid, worker, signal, exit_code, phase, detail))]
    #[allow(clippy::too_many_arguments)]
    fn crash(
        &self,
        py: Python<'_>,
        test: Option<String>,
        pid: u32,
        worker: Option<String>,
        signal: i32,
        exit_code: Option<i32>,
        phase: Option<String>,
        detail: String,
    ) -> PyResult<()> {
        self.put(
            py,
            &Record::Crash {
                test,
                pid,
                worker,
                signal,
                exit_code,
                phase,
                detail,
                wall_ns: now_wall_ns(),
            },
        )
    }

    /// Records how this process ends itself with status `code` (`os._exit`):
    /// `after_report` when a reporting hook ends it after the running test's last report
    /// was made (not a crash); see `Recorder::exit` in core.
    #[pyo3(signature = (code, after_report))]
    fn exit(&self, py: Python<'_>, code: i32, after_report: bool) -> PyResult<()> {
        let done = lock(&self.inner).exit(code, after_report);
        done.or_raise(py)
    }

    #[pyo3(signature = (test, kind, path))]
    fn attachment(
        &self,
        py: Python<'_>,
        test: Option<String>,
        kind: String,
        path: String,
    ) -> PyResult<()> {
        self.put(py, &Record::Attachment { test, kind, path })
    }

    fn run_start(
        &self,
        py: Python<'_>,
        argv: Vec<String>,
        rootdir: String,
        host: String,
    ) -> PyResult<()> {
        self.put(
            py,
            &Record::RunStart {
                argv,
                rootdir,
                host,
                pid: std::process::id(),
                wall_ns: now_wall_ns(),
            },
        )
    }

    /// The session's collection (`Record::Collected`), once per run.
    #[allow(clippy::needless_pass_by_value)] // PyO3 extracts the list into a Vec
    fn collected(&self, py: Python<'_>, nodeids: Vec<PyBackedStr>) -> PyResult<()> {
        let done = lock(&self.inner).collected(&nodeids);
        done.or_raise(py)
    }

    /// This session resumes run `run` as attempt `attempt` (`Record::Resume`).
    fn resume(&self, py: Python<'_>, run: String, attempt: u32, retry: bool) -> PyResult<()> {
        self.put(
            py,
            &Record::Resume {
                run,
                attempt,
                retry,
            },
        )
    }

    fn run_end(&self, py: Python<'_>, exit_status: i32) -> PyResult<()> {
        self.put(
            py,
            &Record::RunEnd {
                exit_status,
                wall_ns: now_wall_ns(),
            },
        )
    }

    fn begin(&self, py: Python<'_>) -> PyResult<()> {
        let done = lock(&self.inner).begin();
        done.or_raise(py)
    }

    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        let done = lock(&self.inner).commit();
        done.or_raise(py)
    }

    fn rollback(&self) {
        lock(&self.inner).rollback();
    }

    /// Marks the segment closed cleanly and releases it: its lock goes with it, so readers
    /// see a finished writer now, not when this object is collected. A later write opens a
    /// new segment.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut r = lock(&self.inner);
        r.close().or_raise(py)?;
        let fresh = Recorder::new(
            r.run_dir().to_owned(),
            r.role(),
            r.worker().map(str::to_owned),
            self.durability,
        );
        *r = fresh;
        Ok(())
    }

    #[getter]
    fn segment_path(&self) -> Option<PathBuf> {
        lock(&self.inner)
            .segment_path()
            .map(std::path::Path::to_owned)
    }

    #[getter]
    fn run_dir(&self) -> PathBuf {
        lock(&self.inner).run_dir().to_owned()
    }

    #[getter]
    fn role(&self) -> &'static str {
        lock(&self.inner).role().as_str()
    }

    #[getter]
    fn worker(&self) -> Option<String> {
        lock(&self.inner).worker().map(str::to_owned)
    }

    #[getter]
    fn current_test(&self) -> Option<String> {
        lock(&self.inner).current_test().map(str::to_owned)
    }

    #[getter]
    fn in_transaction(&self) -> bool {
        lock(&self.inner).in_transaction()
    }
}

#[derive(Clone, Copy)]
enum Verb {
    Set,
    Append,
}

/// How a property record is taken: whether (and for which frame) to warn, and whether a
/// key that is not a str is stored as its str.
#[derive(Clone, Copy)]
struct How {
    /// The `stacklevel` of the warning (1: the caller of the native function); `None`: none.
    warn_at: Option<i32>,
    key_as_str: bool,
}

impl PyRecorder {
    /// One property record of `test`: encoded straight from the caller's objects when they
    /// are plain (see `encode`), through the `Converter` otherwise. Returns the stored plain
    /// value: the caller's own object when it was stored as given.
    fn property<'py>(
        &self,
        py: Python<'py>,
        verb: Verb,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        test: Option<&str>,
        how: How,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(k) = key.cast_exact::<PyString>().ok().and_then(|k| utf8_of(k)) {
            let mut stack = encode::stack();
            let append = matches!(verb, Verb::Append);
            // SAFETY: the GIL is held (`py`) and `value` is alive (a Bound).
            let encoded = unsafe {
                encode::property(&mut stack, append, test, k, value.as_ptr(), now_mono_ns)
            };
            if let Ok(e) = encoded {
                let done = lock(&self.inner).record_encoded(&encode::Bytes(e.out.as_bytes()));
                done.or_raise(py)?;
                if !e.reshaped {
                    return Ok(value.clone());
                }
                // A tuple became a list: hand back what is stored (plain, so no note).
                let v = to_value(py, &String::new, value, &mut Notes::default())?;
                return value_to_py(py, &v);
            }
        }
        let original = value;
        let (key, value, exact) = convert_property(py, key, value, verb, how)?;
        let (test, mono_ns) = (test.map(str::to_owned), now_mono_ns());
        let rec = match verb {
            Verb::Set => Record::PropertySet {
                test,
                key,
                value,
                mono_ns,
            },
            Verb::Append => Record::PropertyAppend {
                test,
                key,
                value,
                mono_ns,
            },
        };
        let done = lock(&self.inner).record(&rec);
        done.or_raise(py)?;
        if exact {
            // Stored as given: hand the caller's own object back, not a rebuilt copy.
            return Ok(original.clone());
        }
        match &rec {
            Record::PropertySet { value, .. } | Record::PropertyAppend { value, .. } => {
                value_to_py(py, value)
            }
            _ => unreachable!(),
        }
    }
}

/// The key and the value of a property record through the `Converter`, with at most one
/// warning for both.
fn convert_property(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    verb: Verb,
    how: How,
) -> PyResult<(String, Value, bool)> {
    let mut notes = Notes::default();
    let key = key_str(py, key, how.key_as_str, &mut notes)?;
    // Formatted only for a warning or an error.
    let what = || match verb {
        Verb::Set => format!("value of {:?}", quote(&key)),
        Verb::Append => format!("value appended to {:?}", quote(&key)),
    };
    let value = to_value(py, &what, value, &mut notes)?;
    if let Some(stacklevel) = how.warn_at {
        warn_notes(py, &what(), &notes, stacklevel)?;
    }
    let exact = notes.is_empty() && !notes.reshaped;
    Ok((key, value, exact))
}

/// A property key: a str as it is; a str subclass as str (noted); anything else is refused
/// with `InvalidKeyError`, or with `key_as_str` (the stock `record_property`, whose name
/// junitxml str()s) stored as its str (noted).
fn key_str(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    key_as_str: bool,
    notes: &mut Notes,
) -> PyResult<String> {
    if let Ok(s) = key.cast_exact::<PyString>() {
        return Ok(str_noted(s, notes));
    }
    let tn = type_name(key);
    if let Ok(s) = key.cast::<PyString>() {
        notes.push(format!("the key ({tn}, a str subclass) stored as str"));
        return Ok(str_noted(s, notes));
    }
    let repr = quote(&repr_of(key));
    if key_as_str {
        let text = key
            .str()
            .map_or_else(|_| repr_of(key), |s| str_noted(&s, notes));
        notes.push(format!(
            "the key {repr} ({tn}, not a str) stored as its str {:?}",
            quote(&text)
        ));
        return Ok(text);
    }
    Err(raise(
        py,
        "InvalidKeyError",
        format!(
            "a property key must be a str, not {tn} ({repr}): pass str(key), or a name, as the key"
        ),
    ))
}

// `pytest_blackbox.record` and `append`: the session lookup of api.py, without a Python
// frame of its own (a fifth of the call's time when it was Python).

/// What the package's `record` and `append` need of `pytest_blackbox._runtime`.
struct Runtime {
    /// The sessions of this process, innermost last (the list object itself, never rebound).
    sessions: Py<PyList>,
    /// Raises `NotRecordingError` when no session is active.
    require: Py<PyAny>,
    set_user_property: Py<PyAny>,
    append_user_property: Py<PyAny>,
}

fn runtime(py: Python<'_>) -> PyResult<&Runtime> {
    static RUNTIME: PyOnceLock<Runtime> = PyOnceLock::new();
    RUNTIME.get_or_try_init(py, || {
        let m = py.import("pytest_blackbox._runtime")?;
        Ok(Runtime {
            sessions: m.getattr("_sessions")?.cast_into::<PyList>()?.unbind(),
            require: m.getattr("require")?.unbind(),
            set_user_property: m.getattr("set_user_property")?.unbind(),
            append_user_property: m.getattr("append_user_property")?.unbind(),
        })
    })
}

/// A property record into the innermost session: of `test` when given, else of the running
/// test (mirrored into its `user_properties`) or the session.
fn session_property(
    py: Python<'_>,
    verb: Verb,
    key: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    test: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let rt = runtime(py)?;
    let sessions = rt.sessions.bind(py);
    let n = sessions.len();
    let session = if n > 0 {
        sessions.get_item(n - 1)?
    } else {
        rt.require.bind(py).call0()?
    };
    let recorder = session.getattr(pyo3::intern!(py, "recorder"))?;
    let recorder = recorder.cast::<PyRecorder>()?.get();
    // The warning points at the caller: no Python frame lies between.
    let how = How {
        warn_at: Some(1),
        key_as_str: false,
    };
    if let Some(test) = test {
        let test = match test.cast_exact::<PyString>() {
            Ok(s) => text_of(s),
            Err(_) => Cow::Owned(nodeid_of(&test.str()?)),
        };
        recorder.property(py, verb, key, value, Some(&test), how)?;
        return Ok(());
    }
    let nodeid = session.getattr(pyo3::intern!(py, "current_nodeid"))?;
    let nodeid = nodeid.cast::<PyString>().ok().map(text_of);
    let plain = recorder.property(py, verb, key, value, nodeid.as_deref(), how)?;
    let item = session.getattr(pyo3::intern!(py, "current_item"))?;
    if !item.is_none() {
        let mirror = match verb {
            Verb::Set => &rt.set_user_property,
            Verb::Append => &rt.append_user_property,
        };
        mirror.bind(py).call1((item, key, plain))?;
    }
    Ok(())
}

// The two are plain C functions with the vectorcall convention (`METH_FASTCALL |
// METH_KEYWORDS`: arguments as a C array, keyword names as a tuple), written by hand when
// the build was abi3-py39, whose pyo3 functions took a tuple and a dict and read each
// keyword's name through a new bytes object (a third of `record(key, value, test=nodeid)`).
// The abi3-py310 build's pyo3 has the convention too; these stay, measured and tested.

const METH_FASTCALL: std::ffi::c_int = 0x0080;

type FastCallWithKeywords = unsafe extern "C" fn(
    *mut pyo3::ffi::PyObject,
    *const *mut pyo3::ffi::PyObject,
    pyo3::ffi::Py_ssize_t,
    *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject;

/// Adds `fun` to `m` as a builtin function named `name`; `doc` starts with the signature
/// (`name(...)\n--\n\n`), from which the interpreter gives it `__text_signature__`.
fn add_fastcall(
    m: &Bound<'_, PyModule>,
    name: &'static std::ffi::CStr,
    doc: &'static std::ffi::CStr,
    fun: FastCallWithKeywords,
) -> PyResult<()> {
    let def = Box::leak(Box::new(pyo3::ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: pyo3::ffi::PyMethodDefPointer {
            // SAFETY: only the flags tell CPython how to call the pointer; both are plain
            // function pointers of one size.
            PyCFunctionWithKeywords: unsafe {
                std::mem::transmute::<FastCallWithKeywords, pyo3::ffi::PyCFunctionWithKeywords>(fun)
            },
        },
        ml_flags: METH_FASTCALL | pyo3::ffi::METH_KEYWORDS,
        ml_doc: doc.as_ptr(),
    }));
    let py = m.py();
    let module_name = m.name()?;
    // SAFETY: `def` lives for ever (leaked, once per import); the module name is a str.
    let f = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyCFunction_NewEx(def, std::ptr::null_mut(), module_name.as_ptr()),
        )?
    };
    m.add(name.to_str().unwrap_or("?"), f)
}

/// The arguments `(key, value, *, test=None)` of a vectorcall, as the interpreter hands them over.
///
/// # Safety
/// `args` holds `nargs` positional arguments and then one per name in `kwnames` (a tuple
/// of str, or null), all alive for `'py`.
unsafe fn property_args<'py>(
    py: Python<'py>,
    fname: &str,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> PyResult<[Option<Bound<'py, PyAny>>; 3]> {
    use pyo3::exceptions::PyTypeError;
    const NAMES: [&str; 3] = ["key", "value", "test"];
    let mut slots: [Option<Bound<'py, PyAny>>; 3] = [None, None, None];
    if !(0..=2).contains(&nargs) {
        return Err(PyTypeError::new_err(format!(
            "{fname}() takes 2 positional arguments but {nargs} were given"
        )));
    }
    for (i, slot) in slots.iter_mut().enumerate().take(nargs as usize) {
        // SAFETY: i < nargs (the caller's promise).
        *slot = Some(unsafe { Bound::from_borrowed_ptr(py, *args.add(i)) });
    }
    if !kwnames.is_null() {
        // SAFETY: a tuple of str (the caller's promise).
        let names =
            unsafe { Bound::from_borrowed_ptr(py, kwnames).cast_into_unchecked::<PyTuple>() };
        let interned = [
            pyo3::intern!(py, "key"),
            pyo3::intern!(py, "value"),
            pyo3::intern!(py, "test"),
        ];
        for (j, kw) in names.iter().enumerate() {
            // Keyword names in code are interned: a pointer comparison finds them.
            let at = interned
                .iter()
                .position(|n| n.is(&kw))
                .or_else(|| {
                    let kw = kw.cast::<PyString>().ok()?;
                    NAMES.iter().position(|n| utf8_of(kw) == Some(*n))
                })
                .ok_or_else(|| {
                    PyTypeError::new_err(format!(
                        "{fname}() got an unexpected keyword argument {}",
                        repr_of(&kw)
                    ))
                })?;
            if slots[at].is_some() {
                return Err(PyTypeError::new_err(format!(
                    "{fname}() got multiple values for argument '{}'",
                    NAMES[at]
                )));
            }
            // SAFETY: the keyword arguments follow the positional ones (the caller's promise).
            slots[at] =
                Some(unsafe { Bound::from_borrowed_ptr(py, *args.add(nargs as usize + j)) });
        }
    }
    for (at, name) in NAMES.iter().enumerate().take(2) {
        if slots[at].is_none() {
            return Err(PyTypeError::new_err(format!(
                "{fname}() missing required argument '{name}' (pos {})",
                at + 1
            )));
        }
    }
    Ok(slots)
}

/// The body of `record` and `append`: a Python result, the exception set on error.
///
/// # Safety
/// Called by the interpreter as a vectorcall function (see [`property_args`]), with the GIL held.
unsafe fn package_property(
    verb: Verb,
    fname: &str,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject {
    // SAFETY: CPython calls with the GIL held.
    let py = unsafe { Python::assume_attached() };
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: as this function's.
        let [key, value, test] = unsafe { property_args(py, fname, args, nargs, kwnames)? };
        let (Some(key), Some(value)) = (key, value) else {
            unreachable!("property_args checks both")
        };
        let test = test.filter(|t| !t.is_none());
        session_property(py, verb, &key, &value, test.as_ref())
    }));
    let err = match done {
        Ok(Ok(())) => return py.None().into_ptr(),
        Ok(Err(e)) => e,
        Err(_) => pyo3::panic::PanicException::new_err(format!("{fname}() panicked")),
    };
    err.restore(py);
    std::ptr::null_mut()
}

unsafe extern "C" fn package_record(
    _module: *mut pyo3::ffi::PyObject,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject {
    // SAFETY: CPython calls it as a vectorcall function.
    unsafe { package_property(Verb::Set, "record", args, nargs, kwnames) }
}

unsafe extern "C" fn package_append(
    _module: *mut pyo3::ffi::PyObject,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject {
    // SAFETY: CPython calls it as a vectorcall function.
    unsafe { package_property(Verb::Append, "append", args, nargs, kwnames) }
}

/// The doc of `_native.record` (the package's `record`), after its signature.
const RECORD_DOC: &std::ffi::CStr = c"record(key, value, *, test=None)
--

Set ``key`` to ``value`` on the running test of this process (or on ``test``, a nodeid;
or on the session when no test runs). Committed, and so crash-safe, on return.

Values that are not plain (None, bool, int, float, str, bytes, list, dict) are stored as
the nearest plain type or their repr, with one :class:`BlackboxWarning`.";

const APPEND_DOC: &std::ffi::CStr = c"append(key, value, *, test=None)
--

Append ``value`` to the list under ``key`` (e.g. one comparison result per call), on the
running test of this process (or on ``test``; or on the session when no test runs).";

/// For tests: the bytes of a property record encoded by the fast path (`None` when it
/// declines the value) and through the `Converter` (the reference), without a warning.
#[pyfunction(name = "_property_bytes")]
#[pyo3(signature = (key, value, test = None, mono_ns = 0, append = false))]
fn property_bytes<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
    value: &Bound<'py, PyAny>,
    test: Option<&Bound<'py, PyString>>,
    mono_ns: u64,
    append: bool,
) -> PyResult<(Option<Bound<'py, PyBytes>>, Bound<'py, PyBytes>)> {
    let test = test.map(nodeid_of);
    let fast = key
        .cast_exact::<PyString>()
        .ok()
        .and_then(|k| utf8_of(k))
        .and_then(|k| {
            let mut stack = encode::stack();
            // SAFETY: the GIL is held (`py`) and `value` is alive (a Bound).
            let e = unsafe {
                encode::property(
                    &mut stack,
                    append,
                    test.as_deref(),
                    k,
                    value.as_ptr(),
                    || mono_ns,
                )
            };
            e.ok().map(|e| PyBytes::new(py, e.out.as_bytes()))
        });
    let how = How {
        warn_at: None,
        key_as_str: false,
    };
    let verb = if append { Verb::Append } else { Verb::Set };
    let (key, value, _) = convert_property(py, key, value, verb, how)?;
    let rec = if append {
        Record::PropertyAppend {
            test,
            key,
            value,
            mono_ns,
        }
    } else {
        Record::PropertySet {
            test,
            key,
            value,
            mono_ns,
        }
    };
    let mut buf = vec![0; rec.encoded_len()];
    let n = rec.encode_into(&mut buf).unwrap_or(0);
    Ok((fast, PyBytes::new(py, &buf[..n])))
}

/// Converts `value` the way `record` stores it, warning once if it was not plain.
#[pyfunction]
#[pyo3(signature = (value, what = "value", warn = true))]
fn to_plain<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
    what: &str,
    warn: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let v = convert(py, what, value, warn)?;
    value_to_py(py, &v)
}

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

/// Runs `f` with the cyclic GC paused. A view builds hundreds of thousands of dicts and
/// lists, none of which can be part of a cycle; each would bump the GC's counters and set
/// off full collections over everything built so far.
fn gc_paused<T>(py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    let gc = py.import("gc")?;
    let was_on = gc.call_method0("isenabled")?.is_truthy()?;
    if was_on {
        gc.call_method0("disable")?;
    }
    let out = f();
    if was_on {
        gc.call_method0("enable")?;
    }
    out
}

// The view straight into Python objects, in the schema, key order and values of
// `RunView::to_json` + `json_to_py`: no serde_json tree in between, which cost as much as
// the view itself and doubled its peak memory. Keys go in sorted, as serde_json's map
// has them; key strings are interned.

/// A float as `to_json` gives it: non-finite is null.
fn json_f64(py: Python<'_>, f: f64) -> Bound<'_, PyAny> {
    if f.is_finite() {
        PyFloat::new(py, f).into_any()
    } else {
        py.None().into_bound(py)
    }
}

/// `Value::to_json` as Python: bytes as a list of ints, a non-finite float or a big int as
/// its one-key object (`{"$float": "nan"}`, `{"$int": "<digits>"}`), dict keys sorted (of
/// two equal keys the later wins).
fn value_json_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    if let Some((tag, text)) = v.json_tagged() {
        let d = PyDict::new(py);
        d.set_item(tag, text.as_ref())?;
        return Ok(d.into_any());
    }
    Ok(match v {
        Value::Bytes(b) => PyList::new(py, b.iter().copied())?.into_any(),
        Value::List(items) => {
            let l = PyList::empty(py);
            for x in items {
                l.append(value_json_py(py, x)?)?;
            }
            l.into_any()
        }
        Value::Dict(pairs) => props_json_py(py, pairs)?.into_any(),
        other => value_to_py(py, other)?,
    })
}

fn props_json_py<'py>(py: Python<'py>, pairs: &[(String, Value)]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    if let [(k, x)] = pairs {
        // Most tests record one key or none: no sort needed.
        d.set_item(k, value_json_py(py, x)?)?;
        return Ok(d);
    }
    let mut sorted: Vec<&(String, Value)> = pairs.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0)); // stable: the later of two equal keys is set last
    for (k, x) in sorted {
        d.set_item(k, value_json_py(py, x)?)?;
    }
    Ok(d)
}

fn fixtures_py<'py>(
    py: Python<'py>,
    list: &[blackbox_core::FixtureStats],
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for f in list {
        let d = PyDict::new(py);
        d.set_item(intern!(py, "max_s"), json_f64(py, f.max_s))?;
        d.set_item(intern!(py, "mean_s"), json_f64(py, f.mean_s))?;
        d.set_item(intern!(py, "name"), &f.name)?;
        d.set_item(intern!(py, "scope"), &f.scope)?;
        d.set_item(intern!(py, "setups"), f.setups)?;
        d.set_item(
            intern!(py, "teardown_total_s"),
            json_f64(py, f.teardown_total_s),
        )?;
        d.set_item(intern!(py, "teardowns"), f.teardowns)?;
        d.set_item(intern!(py, "total_s"), json_f64(py, f.total_s))?;
        out.append(d)?;
    }
    Ok(out)
}

fn test_py<'py>(py: Python<'py>, t: &blackbox_core::TestView) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "attempt"), t.attempt)?;
    d.set_item(intern!(py, "crashed"), t.crashed)?;
    d.set_item(intern!(py, "duration_s"), json_f64(py, t.duration_s))?;
    d.set_item(intern!(py, "nodeid"), &t.nodeid)?;
    d.set_item(intern!(py, "outcome"), outcome_str(py, &t.outcome))?;
    let phases = PyList::empty(py);
    for p in &t.phases {
        let pd = PyDict::new(py);
        pd.set_item(intern!(py, "duration_s"), json_f64(py, p.duration_s))?;
        pd.set_item(intern!(py, "outcome"), outcome_str(py, &p.outcome))?;
        pd.set_item(intern!(py, "phase"), phase_str(py, p.phase))?;
        phases.append(pd)?;
    }
    d.set_item(intern!(py, "phases"), phases)?;
    d.set_item(intern!(py, "pid"), t.pid)?;
    d.set_item(intern!(py, "properties"), props_json_py(py, &t.properties)?)?;
    d.set_item(intern!(py, "signal"), t.signal)?;
    d.set_item(
        intern!(py, "signal_name"),
        t.signal.map(blackbox_core::signal_name),
    )?;
    d.set_item(intern!(py, "timeout"), timeout_py(py, t.timeout.as_ref())?)?;
    d.set_item(intern!(py, "worker"), &t.worker)?;
    Ok(d)
}

/// A test's or a crash's `timeout`, as its JSON (docs/cli.md), or None.
fn timeout_py<'py>(
    py: Python<'py>,
    t: Option<&blackbox_core::aggregate::TimeoutView>,
) -> PyResult<Bound<'py, PyAny>> {
    t.map_or_else(
        || Ok(py.None().into_bound(py)),
        |t| json_to_py(py, &t.to_json()),
    )
}

/// An outcome as a Python str: the common ones interned (one object for 20,000 tests).
fn outcome_str<'py>(py: Python<'py>, o: &str) -> Bound<'py, PyString> {
    match o {
        "passed" => intern!(py, "passed").clone(),
        "failed" => intern!(py, "failed").clone(),
        "skipped" => intern!(py, "skipped").clone(),
        "error" => intern!(py, "error").clone(),
        "crashed" => intern!(py, "crashed").clone(),
        "not-run" => intern!(py, "not-run").clone(),
        "unknown" => intern!(py, "unknown").clone(),
        other => PyString::new(py, other),
    }
}

fn phase_str(py: Python<'_>, p: Phase) -> &Bound<'_, PyString> {
    match p {
        Phase::Setup => pyo3::intern!(py, "setup"),
        Phase::Call => pyo3::intern!(py, "call"),
        Phase::Teardown => pyo3::intern!(py, "teardown"),
    }
}

/// `v.to_json()` as Python; with `brief = Some(n)`, `brief()`'s form instead: no `tests`
/// but `test_count` and `outcomes` (tests by outcome), at most `n` fixtures and timed names.
fn view_to_py<'py>(
    py: Python<'py>,
    v: &blackbox_core::RunView,
    brief: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    let crashes = PyList::empty(py);
    for c in &v.crashes {
        let d = PyDict::new(py);
        d.set_item(intern!(py, "attachments"), &c.attachments)?;
        d.set_item(intern!(py, "detail"), &c.detail)?;
        d.set_item(intern!(py, "exit_code"), c.exit_code)?;
        d.set_item(intern!(py, "nodeid"), &c.nodeid)?;
        d.set_item(intern!(py, "phase"), &c.phase)?;
        d.set_item(intern!(py, "pid"), c.pid)?;
        d.set_item(intern!(py, "signal"), c.signal)?;
        d.set_item(
            intern!(py, "signal_name"),
            c.signal.map(blackbox_core::signal_name),
        )?;
        d.set_item(intern!(py, "worker"), &c.worker)?;
        d.set_item(intern!(py, "timeout"), timeout_py(py, c.timeout.as_ref())?)?;
        d.set_item(intern!(py, "kind"), &c.kind)?;
        d.set_item(intern!(py, "devices"), pairs_dict(py, &c.devices)?)?;
        crashes.append(d)?;
    }
    out.set_item(intern!(py, "crashes"), crashes)?;
    let exits = PyList::empty(py);
    for e in &v.exits {
        let d = PyDict::new(py);
        d.set_item(intern!(py, "nodeid"), &e.nodeid)?;
        d.set_item(intern!(py, "phase"), e.phase.map(Phase::as_str))?;
        d.set_item(intern!(py, "code"), e.code)?;
        d.set_item(intern!(py, "worker"), &e.worker)?;
        d.set_item(intern!(py, "pid"), e.pid)?;
        exits.append(d)?;
    }
    out.set_item(intern!(py, "exits"), exits)?;
    let cut = |n: usize| brief.map_or(n, |b| b.min(n));
    if let Some(n) = brief {
        // The summary's "slowest fixtures": pytest's own left out (blackbox_core::stock).
        let test_time = blackbox_core::stock::test_time(v);
        let shown: Vec<blackbox_core::FixtureStats> = v
            .fixtures
            .iter()
            .filter(|f| blackbox_core::stock::is_shown(f, test_time, false))
            .take(n)
            .cloned()
            .collect();
        out.set_item(intern!(py, "fixtures"), fixtures_py(py, &shown)?)?;
    } else {
        out.set_item(intern!(py, "fixtures"), fixtures_py(py, &v.fixtures)?)?;
    }
    if brief.is_some() {
        let mut outcomes: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for t in &v.tests {
            *outcomes.entry(t.outcome.as_str()).or_default() += 1;
        }
        out.set_item(intern!(py, "outcomes"), outcomes)?;
    }
    out.set_item(intern!(py, "problems"), &v.problems)?;
    let run = PyDict::new(py);
    let r = &v.run;
    run.set_item(intern!(py, "argv"), &r.argv)?;
    run.set_item(intern!(py, "attempt"), r.attempt)?;
    run.set_item(intern!(py, "collected"), v.collected)?;
    run.set_item(intern!(py, "resumes"), &r.resumes)?;
    run.set_item(intern!(py, "retry"), r.retry)?;
    #[allow(clippy::cast_precision_loss)] // as to_json: wall clock ns to s
    let secs = |ns: Option<u64>| ns.map(|n| n as f64 / 1e9);
    run.set_item(intern!(py, "ended"), secs(r.ended_wall_ns))?;
    run.set_item(intern!(py, "exit_status"), r.exit_status)?;
    run.set_item(intern!(py, "host"), &r.host)?;
    run.set_item(intern!(py, "id"), &r.id)?;
    run.set_item(intern!(py, "live"), r.live)?;
    run.set_item(intern!(py, "pid"), r.pid)?;
    run.set_item(intern!(py, "records"), v.records)?;
    run.set_item(intern!(py, "rootdir"), &r.rootdir)?;
    run.set_item(intern!(py, "segments"), v.segments)?;
    run.set_item(intern!(py, "started"), secs(r.started_wall_ns))?;
    out.set_item(intern!(py, "run"), run)?;
    if brief.is_some() {
        out.set_item(intern!(py, "test_count"), v.tests.len())?;
    } else {
        let tests = PyList::empty(py);
        for t in &v.tests {
            tests.append(test_py(py, t)?)?;
        }
        out.set_item(intern!(py, "tests"), tests)?;
    }
    out.set_item(
        intern!(py, "timed"),
        fixtures_py(py, &v.timed[..cut(v.timed.len())])?,
    )?;
    let workers = PyList::empty(py);
    for w in &v.workers {
        let d = PyDict::new(py);
        d.set_item(intern!(py, "alive"), w.alive)?;
        d.set_item(intern!(py, "crashes"), w.crashes)?;
        d.set_item(intern!(py, "forked"), w.forked)?;
        d.set_item(intern!(py, "id"), &w.id)?;
        d.set_item(intern!(py, "pids"), &w.pids)?;
        d.set_item(intern!(py, "tests"), w.tests)?;
        d.set_item(intern!(py, "devices"), pairs_dict(py, &w.devices)?)?;
        workers.append(d)?;
    }
    out.set_item(intern!(py, "workers"), workers)?;
    Ok(out)
}

fn pairs_dict<'py>(py: Python<'py>, pairs: &[(String, String)]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in pairs {
        d.set_item(k, v)?;
    }
    Ok(d)
}

struct ReaderState {
    follower: Follower,
    agg: Aggregate,
}

impl ReaderState {
    /// Reads what was committed since the last poll into the aggregate.
    fn poll(&mut self) {
        self.follower.poll_into(&mut self.agg);
    }

    /// Polls, then the aggregate view of the run as it stands.
    fn view(&mut self) -> blackbox_core::RunView {
        self.follower.view(&mut self.agg)
    }
}

/// A thread that polls a `RunReader` while the run goes on (`RunReader.follow`), so that
/// what the reader is asked for at the run's end has mostly been read already, on a core
/// the tests do not use.
struct Background {
    /// Set (and the condvar notified) to stop the thread.
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: std::thread::JoinHandle<()>,
    /// The process that started the thread: a forked child has the handle but not the thread.
    pid: u32,
}

impl Background {
    fn start(state: Arc<Mutex<ReaderState>>, every: Duration) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("blackbox-follow".into())
            .spawn(move || {
                let (stopped, wake) = &*flag;
                loop {
                    let guard = wake
                        .wait_timeout_while(lock(stopped), every, |s| !*s)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    if *guard {
                        return;
                    }
                    drop(guard);
                    lock(&state).poll();
                }
            })?;
        Ok(Background {
            stop,
            thread,
            pid: blackbox_core::process_id(),
        })
    }

    /// Whether the thread runs in this process (not in a forked child, which has only the
    /// handle).
    fn is_ours(&self) -> bool {
        self.pid == blackbox_core::process_id()
    }

    /// Stops the thread and waits for it (at most one poll). In a forked child the thread
    /// does not exist: the handle is let go without a join.
    fn finish(self) {
        if !self.is_ours() {
            std::mem::forget(self.thread);
            return;
        }
        let (stopped, wake) = &*self.stop;
        *lock(stopped) = true;
        wake.notify_all();
        // A panic in the thread (none is known) ends only the thread; `lock` ignores the
        // poisoning it leaves.
        let _ = self.thread.join();
    }
}

#[pyclass(module = "pytest_blackbox._native", name = "RunReader", frozen)]
struct PyRunReader {
    inner: Arc<Mutex<ReaderState>>,
    id: String,
    dir: PathBuf,
    background: Mutex<Option<Background>>,
}

/// The shortest `RunReader.follow` interval: shorter would keep the reader's lock taken.
const MIN_FOLLOW_INTERVAL: Duration = Duration::from_millis(1);

impl PyRunReader {
    /// An error where this process inherited the reader through `fork()` while its follow
    /// thread ran: that thread may have held the reader's lock at the fork, and nothing in
    /// this process would ever release it.
    fn usable(&self, py: Python<'_>) -> PyResult<()> {
        let inherited = lock(&self.background)
            .as_ref()
            .is_some_and(|b| !b.is_ours());
        if inherited {
            return Err(raise(
                py,
                "BlackboxError",
                format!(
                    "this RunReader of run {} was inherited through fork() while it followed \
                     the run (RunReader.follow): make a new RunReader in this process",
                    self.id
                ),
            ));
        }
        Ok(())
    }

    /// The reader's state, after `usable`.
    fn state(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, ReaderState>> {
        self.usable(py)?;
        Ok(lock(&self.inner))
    }
}

impl Drop for PyRunReader {
    fn drop(&mut self) {
        let background = self
            .background
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(b) = background {
            b.finish();
        }
    }
}

#[pymethods]
impl PyRunReader {
    #[new]
    fn new(run_dir: PathBuf) -> Self {
        let id = run_dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        PyRunReader {
            inner: Arc::new(Mutex::new(ReaderState {
                follower: Follower::new(&id, &run_dir),
                agg: Aggregate::default(),
            })),
            id,
            dir: run_dir,
            background: Mutex::new(None),
        }
    }

    /// Polls every `interval_s` seconds on a thread of its own until `stop_following()`
    /// (or the reader is dropped). A second call while it follows changes nothing.
    fn follow(&self, py: Python<'_>, interval_s: f64) -> PyResult<()> {
        let every = match Duration::try_from_secs_f64(interval_s) {
            Ok(d) if d >= MIN_FOLLOW_INTERVAL => d,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "interval_s = {interval_s}: give a number of seconds >= 0.001"
                )))
            }
        };
        self.usable(py)?;
        let mut background = lock(&self.background);
        if background.is_some() {
            return Ok(());
        }
        *background = Some(
            Background::start(Arc::clone(&self.inner), every).map_err(|e| {
                pyo3::exceptions::PyOSError::new_err(format!("cannot start the follow thread: {e}"))
            })?,
        );
        Ok(())
    }

    /// Stops what `follow()` started and waits for its thread (at most one poll). In a
    /// process that inherited the reader through `fork()` there is no thread to stop, and the
    /// reader stays unusable there (see `usable`).
    fn stop_following(&self, py: Python<'_>) {
        let mut background = lock(&self.background);
        if background.as_ref().is_some_and(Background::is_ours) {
            let b = background.take();
            drop(background);
            if let Some(b) = b {
                py.detach(|| b.finish());
            }
        }
    }

    /// Whether a `follow()` thread of this process runs.
    #[getter]
    fn following(&self) -> bool {
        lock(&self.background)
            .as_ref()
            .is_some_and(Background::is_ours)
    }

    #[getter]
    fn id(&self) -> String {
        self.id.clone()
    }

    #[getter]
    fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Reads what was committed since the last poll; returns the number of new records.
    fn poll(&self, py: Python<'_>) -> PyResult<u64> {
        self.usable(py)?;
        Ok(py.detach(|| {
            let mut s = lock(&self.inner);
            let before = s.agg.records();
            s.poll();
            s.agg.records() - before
        }))
    }

    /// The run as a dict (the `blackbox stats --json` schema), after a poll.
    fn view<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.usable(py)?;
        let view = py.detach(|| lock(&self.inner).view());
        gc_paused(py, || view_to_py(py, &view, None))
    }

    /// The run in brief, after a poll: what `view()` gives, less the list of tests (their
    /// number by outcome instead) and with at most `fixtures` fixtures. For summaries in
    /// long runs, where `view()` would build a dict per test.
    #[pyo3(signature = (fixtures = 10))]
    fn brief<'py>(&self, py: Python<'py>, fixtures: usize) -> PyResult<Bound<'py, PyDict>> {
        self.usable(py)?;
        let view = py.detach(|| lock(&self.inner).view());
        view_to_py(py, &view, Some(fixtures))
    }

    /// The merged properties of `nodeid` as (key, value) pairs (no poll).
    fn properties<'py>(
        &self,
        py: Python<'py>,
        nodeid: &str,
    ) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
        let props = self.state(py)?.agg.properties(nodeid);
        props
            .iter()
            .map(|(k, v)| Ok((k.clone(), value_to_py(py, v)?)))
            .collect()
    }

    /// The merged properties of `nodeid` as a dict (no poll): `properties` without the
    /// list of pairs in between, for `Run.properties`.
    fn properties_dict<'py>(&self, py: Python<'py>, nodeid: &str) -> PyResult<Bound<'py, PyDict>> {
        let props = self.state(py)?.agg.properties(nodeid);
        let d = PyDict::new(py);
        for (k, v) in &props {
            d.set_item(k, value_to_py(py, v)?)?;
        }
        Ok(d)
    }

    /// The recorded phase reports of `nodeid`: (phase, serialized report or None) (no poll).
    fn phase_reports<'py>(
        &self,
        py: Python<'py>,
        nodeid: &str,
    ) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
        let s = self.state(py)?;
        let mut out = Vec::new();
        for (phase, seg, offset) in s.agg.phase_locations(nodeid) {
            let report = match s.follower.read_at(seg, offset) {
                Some(Record::TestPhase {
                    report: Some(r), ..
                }) => value_to_py(py, &r)?,
                _ => py.None().into_bound(py),
            };
            out.push((phase.as_str().to_owned(), report));
        }
        Ok(out)
    }

    /// Total fixture setups seen so far (no poll).
    fn fixture_setups(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.state(py)?.agg.fixture_setups())
    }

    /// Folds this run, as read so far plus a poll, into `<store>/history.redb`: what
    /// `fold_history` does, from this reader's aggregate instead of a second full read.
    #[pyo3(signature = (store_dir, keep = 200, wait_s = 60.0, max_mb = 256.0))]
    #[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
    fn fold_history<'py>(
        &self,
        py: Python<'py>,
        store_dir: PathBuf,
        keep: usize,
        wait_s: f64,
        max_mb: f64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let opts = fold_options(keep, wait_s, max_mb);
        self.usable(py)?;
        let stats = py
            .detach(|| {
                let started = std::time::Instant::now();
                let store = Store::open(&store_dir)?;
                let view = lock(&self.inner).view();
                let mut stats =
                    blackbox_core::history::fold_view(&store.history_path(), &view, &opts)?;
                stats.elapsed = started.elapsed();
                Ok(stats)
            })
            .or_raise(py)?;
        fold_stats_py(py, stats)
    }

    /// The terminal summary's line about this run's flaky tests over the newest `last`
    /// runs (this one not yet folded), from this reader's aggregate after a poll; `None`
    /// when none is flaky or the store has no history.
    #[pyo3(signature = (store_dir, last = 20))]
    #[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
    fn flaky_note(
        &self,
        py: Python<'_>,
        store_dir: PathBuf,
        last: usize,
    ) -> PyResult<Option<String>> {
        self.usable(py)?;
        py.detach(|| {
            let store = Store::open(&store_dir)?;
            let view = lock(&self.inner).view();
            blackbox_core::history::flaky_note(&store, &view, last)
        })
        .or_raise(py)
    }

    /// Every segment's state now: path, pid, role, worker, alive, crash signal, running test.
    fn segments<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let statuses = self.state(py)?.follower.statuses();
        statuses
            .iter()
            .map(|s| {
                let d = PyDict::new(py);
                d.set_item("path", s.path.clone())?;
                d.set_item("pid", s.pid)?;
                d.set_item("ppid", s.ppid)?;
                d.set_item("role", s.role.map(Role::as_str))?;
                d.set_item("worker", s.worker.clone())?;
                d.set_item("alive", s.alive)?;
                d.set_item("closed_cleanly", s.closed_cleanly)?;
                d.set_item("crash_signal", s.crash.as_ref().map(|c| c.signal))?;
                d.set_item("crash_test", s.crash.as_ref().and_then(|c| c.test.clone()))?;
                d.set_item("current_test", s.current_test.clone())?;
                d.set_item("damage", s.damage.as_ref().map(ToString::to_string))?;
                Ok(d)
            })
            .collect()
    }
}

/// Every record of a run, segment by segment, as dicts (`{"kind": ..., fields}`).
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
fn read_records(py: Python<'_>, run_dir: PathBuf) -> PyResult<Vec<Bound<'_, PyAny>>> {
    let id = run_dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let snap = py
        .detach(|| blackbox_core::Snapshot::read(&id, &run_dir))
        .or_raise(py)?;
    let mut out = Vec::with_capacity(snap.record_count());
    for (seg, rec) in snap.iter() {
        let mut j = rec.to_json();
        if let serde_json::Value::Object(m) = &mut j {
            m.insert("pid".into(), snap.segments[seg].pid.into());
        }
        out.push(json_to_py(py, &j)?);
    }
    Ok(out)
}

/// Creates the store directory if needed and starts a run in it; returns (id, folder).
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
fn new_run(py: Python<'_>, store_dir: PathBuf) -> PyResult<(String, PathBuf)> {
    let store = Store::create(&store_dir).or_raise(py)?;
    let id = store.new_run().or_raise(py)?;
    let path = store.run_path(&id).or_raise(py)?;
    Ok((id, path))
}

/// The run ids of a store, oldest first.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
fn list_runs(py: Python<'_>, store_dir: PathBuf) -> PyResult<Vec<String>> {
    Store::open(&store_dir).and_then(|s| s.runs()).or_raise(py)
}

/// Run `run_id` as one logical run with the attempts it resumes (`--blackbox-resume`):
/// `Store::with_earlier_attempts` in core, as `RunReader.view()` gives a view.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
fn logical_view(py: Python<'_>, store_dir: PathBuf, run_id: String) -> PyResult<Bound<'_, PyDict>> {
    let view = py
        .detach(|| {
            let store = Store::open(&store_dir)?;
            let v = store.view(&run_id)?;
            Ok(store.with_earlier_attempts(v))
        })
        .or_raise(py)?;
    view_to_py(py, &view, None)
}

/// The store a reader uses: `given`, else `$BLACKBOX_DIR`, else the nearest `.blackbox`
/// upward from `cwd` (or the `blackbox_dir` ini of a pytest config there): the CLI's rule.
#[pyfunction]
#[pyo3(signature = (given = None, cwd = None))]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
fn find_store(py: Python<'_>, given: Option<PathBuf>, cwd: Option<PathBuf>) -> PyResult<PathBuf> {
    let cwd = match cwd {
        Some(c) => c,
        None => std::env::current_dir().map_err(|e| {
            pyo3::exceptions::PyOSError::new_err(format!("no current directory: {e}"))
        })?,
    };
    let env = std::env::var_os("BLACKBOX_DIR").map(PathBuf::from);
    blackbox_core::find_store(given.as_deref(), env.as_deref(), &cwd)
        .map(|(p, _)| p)
        .or_raise(py)
}

/// The run `wanted` names in a store: its id or a unique start of it (`--run`'s rule).
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
fn resolve_run(py: Python<'_>, store_dir: PathBuf, wanted: &str) -> PyResult<String> {
    Store::open(&store_dir)
        .and_then(|s| s.resolve_run(Some(wanted)))
        .or_raise(py)
}

/// The folder of run `id` of a store.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
fn run_path(py: Python<'_>, store_dir: PathBuf, id: &str) -> PyResult<PathBuf> {
    Store::open(&store_dir)
        .and_then(|s| s.run_path(id))
        .or_raise(py)
}

/// Folds run `run_id` into `<store>/history.redb` (keeping the newest `keep` runs there),
/// waiting up to `wait_s` seconds for another process to close it. Returns what it did.
#[pyfunction]
#[pyo3(signature = (store_dir, run_id, keep = 200, wait_s = 60.0, max_mb = 256.0))]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
fn fold_history<'py>(
    py: Python<'py>,
    store_dir: PathBuf,
    run_id: &str,
    keep: usize,
    wait_s: f64,
    max_mb: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = fold_options(keep, wait_s, max_mb);
    let stats = py
        .detach(|| {
            Store::open(&store_dir)
                .and_then(|s| blackbox_core::history::fold_run(&s, run_id, &opts))
        })
        .or_raise(py)?;
    fold_stats_py(py, stats)
}

/// What `RunReader.brief()` says of run `run_id` that matters at the next session's start
/// (`run`: id, `exit_status`, `live`; `test_count`; `crashes`), read from the store's
/// history, where each finished run is folded; `None` when the history does not hold it
/// (its pytest died before folding it, or folding is off).
#[pyfunction]
#[pyo3(signature = (store_dir, run_id, wait_s = 2.0))]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
fn history_brief<'py>(
    py: Python<'py>,
    store_dir: PathBuf,
    run_id: &str,
    wait_s: f64,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let found = py
        .detach(|| -> blackbox_core::Result<_> {
            let path = Store::open(&store_dir)?.history_path();
            if !path.is_file() {
                return Ok(None);
            }
            let history = blackbox_core::History::open(&path)?
                .with_wait(std::time::Duration::from_secs_f64(wait_s.max(0.0)));
            let Some(run) = history.run(run_id)? else {
                return Ok(None);
            };
            let crashes = if run.crashes > 0 {
                history.crashes(run_id)?
            } else {
                Vec::new()
            };
            Ok(Some((run, crashes)))
        })
        .or_raise(py)?;
    let Some((run, crashes)) = found else {
        return Ok(None);
    };
    let view = blackbox_core::RunView {
        run: blackbox_core::RunMeta {
            id: run.id,
            started_wall_ns: run.started_wall_ns,
            ended_wall_ns: run.ended_wall_ns,
            exit_status: run.exit_status,
            host: run.host,
            pid: run.pid,
            argv: run.argv,
            rootdir: run.rootdir,
            live: false,
            ..blackbox_core::RunMeta::default()
        },
        crashes,
        problems: run.problems,
        segments: usize::try_from(run.segments).unwrap_or(usize::MAX),
        records: run.records,
        ..blackbox_core::RunView::default()
    };
    let d = view_to_py(py, &view, Some(0))?;
    d.set_item("test_count", run.counts.tests)?;
    d.del_item("outcomes")?;
    Ok(Some(d))
}

fn fold_options(keep: usize, wait_s: f64, max_mb: f64) -> blackbox_core::history::FoldOptions {
    blackbox_core::history::FoldOptions {
        keep: keep.max(1),
        max_bytes: (max_mb.max(0.0) * 1_048_576.0) as u64,
        wait: std::time::Duration::from_secs_f64(wait_s.max(0.0)),
        ..blackbox_core::history::FoldOptions::default()
    }
}

#[allow(clippy::needless_pass_by_value)] // consumed: its strings move into the dict
fn fold_stats_py(
    py: Python<'_>,
    stats: blackbox_core::history::FoldStats,
) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("run_id", stats.run_id)?;
    d.set_item("tests", stats.tests)?;
    d.set_item("fixtures", stats.fixtures)?;
    d.set_item("crashes", stats.crashes)?;
    d.set_item("replaced", stats.replaced)?;
    d.set_item("pruned", stats.pruned)?;
    d.set_item("commits", stats.commits)?;
    d.set_item("elapsed_s", stats.elapsed.as_secs_f64())?;
    Ok(d)
}

/// The `blackbox` command line (the Rust CLI of blackbox-core), writing to this process's
/// stdout and stderr; returns the exit status.
#[pyfunction]
#[pyo3(signature = (argv, is_tty = None))]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
fn cli_main(py: Python<'_>, argv: Vec<String>, is_tty: Option<bool>) -> i32 {
    py.detach(|| {
        let mut env = blackbox_core::cli::Env::from_process();
        if let Some(tty) = is_tty {
            env.stdout_is_tty = tty;
        }
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(64 << 10, stdout.lock());
        let stderr = std::io::stderr();
        let mut err = stderr.lock();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            blackbox_core::cli::run(&argv, &env, &mut out, &mut err)
        }))
        .unwrap_or(1)
    })
}

/// Creates the attachment file `path` (a run folder's `faulthandler-<pid>.txt`) for
/// writing: mode 0600, never through a symlink, refusing a FIFO or another user's file
/// there. Returns its descriptor, which the caller owns.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
fn create_private_file(py: Python<'_>, path: PathBuf) -> PyResult<i32> {
    use std::os::fd::IntoRawFd;
    let file = blackbox_core::private::create_file(&path).or_raise(py)?;
    Ok(file.into_raw_fd())
}

/// Removes the empty attachment files of a run folder; returns the paths removed.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
fn remove_empty_attachments(py: Python<'_>, run_dir: PathBuf) -> PyResult<Vec<PathBuf>> {
    blackbox_core::remove_empty_attachments(&run_dir).or_raise(py)
}

/// Removes all but the newest `keep` run folders (never one with a live writer).
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
fn prune_runs(py: Python<'_>, store_dir: PathBuf, keep: usize) -> PyResult<Vec<String>> {
    Store::open(&store_dir)
        .and_then(|s| s.prune_runs(keep))
        .or_raise(py)
}

/// Installs the fatal-signal handler that marks this process's segment as crashed.
#[pyfunction]
fn install_crash_handler() -> PyResult<()> {
    blackbox_core::install_crash_handler()
        .map_err(|e| PyValueError::new_err(format!("cannot install the crash handler: {e}")))
}

/// When a fatal signal kills this process, the crash handler copies the file open as
/// `source` (faulthandler's) to `target` (the user's stderr) and writes one line ending
/// in `note`, if given (`blackbox_core::set_crash_echo`). -1 turns it off.
#[pyfunction]
#[pyo3(signature = (source, target, note = None))]
fn set_crash_echo(source: i32, target: i32, note: Option<&str>) {
    blackbox_core::set_crash_echo(source, target, note);
}

/// Marks this process's newest segment as crashed by `signal` (what the handler does).
#[pyfunction]
fn mark_crash(signal: i32) -> bool {
    blackbox_core::mark_crash(signal)
}

/// The signal the watchdog raises on its own thread to have faulthandler write every
/// Python thread's traceback (0: none).
#[pyfunction]
fn watchdog_dump_signal(signal: i32) {
    blackbox_core::watchdog::set_dump_signal(signal);
}

/// Before a fork: the watchdog thread ends (the next armed test starts it again).
#[pyfunction]
fn watchdog_before_fork(py: Python<'_>) {
    py.detach(blackbox_core::watchdog::before_fork);
}

/// After a fork, in the parent: an armed test gets its watchdog thread back.
#[pyfunction]
fn watchdog_after_fork_in_parent() -> PyResult<()> {
    blackbox_core::watchdog::after_fork_in_parent().map_err(|e| {
        pyo3::exceptions::PyOSError::new_err(format!("cannot start the watchdog thread: {e}"))
    })
}

/// `SIGSEGV` for 11 and so on.
#[pyfunction]
fn signal_name(signal: i32) -> String {
    blackbox_core::signal_name(signal)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("FORMAT_VERSION", blackbox_core::segment::FORMAT_VERSION)?;
    m.add_class::<PyRecorder>()?;
    m.add_class::<PyRunReader>()?;
    m.add_class::<PyFixtureTimer>()?;
    m.add_class::<PyTestHooks>()?;
    m.add_function(wrap_pyfunction!(to_plain, m)?)?;
    m.add_function(wrap_pyfunction!(property_bytes, m)?)?;
    add_fastcall(m, c"record", RECORD_DOC, package_record)?;
    add_fastcall(m, c"append", APPEND_DOC, package_append)?;
    m.add_function(wrap_pyfunction!(read_records, m)?)?;
    m.add_function(wrap_pyfunction!(new_run, m)?)?;
    m.add_function(wrap_pyfunction!(list_runs, m)?)?;
    m.add_function(wrap_pyfunction!(logical_view, m)?)?;
    m.add_function(wrap_pyfunction!(run_path, m)?)?;
    m.add_function(wrap_pyfunction!(find_store, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_run, m)?)?;
    m.add_function(wrap_pyfunction!(prune_runs, m)?)?;
    m.add_function(wrap_pyfunction!(create_private_file, m)?)?;
    m.add_function(wrap_pyfunction!(remove_empty_attachments, m)?)?;
    m.add_function(wrap_pyfunction!(first_store_error, m)?)?;
    m.add_function(wrap_pyfunction!(fold_history, m)?)?;
    m.add_function(wrap_pyfunction!(history_brief, m)?)?;
    history::register(m)?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(install_crash_handler, m)?)?;
    m.add_function(wrap_pyfunction!(mark_crash, m)?)?;
    m.add_function(wrap_pyfunction!(set_crash_echo, m)?)?;
    m.add_function(wrap_pyfunction!(signal_name, m)?)?;
    m.add_function(wrap_pyfunction!(watchdog_dump_signal, m)?)?;
    m.add_function(wrap_pyfunction!(watchdog_before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(watchdog_after_fork_in_parent, m)?)?;
    Ok(())
}
