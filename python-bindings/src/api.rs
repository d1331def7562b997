//! The package's `record` and `append` (vectorcall functions), and `to_plain`.

use std::borrow::Cow;

use blackbox_core::Record;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::convert::{convert, nodeid_of, repr_of, text_of, utf8_of};
use crate::encode;
use crate::errors::record_error;
use crate::hooks::PyTestHooks;
use crate::recorder::{convert_property, How, PyRecorder, Verb};
use crate::view::value_to_py;

// `pytest_blackbox.record` and `append`: the session lookup of api.py, without a Python
// frame of its own (a fifth of the call's time when it was Python).

/// What the package's `record` and `append` need of `pytest_blackbox._runtime`, which hands
/// it over once at its import (`register_runtime`): Rust never imports the package.
pub(crate) struct Runtime {
    /// The sessions of this process, innermost last (the list object itself, never rebound).
    sessions: Py<PyList>,
    /// Raises `NotRecordingError` when no session is active.
    require: Py<PyAny>,
    set_user_property: Py<PyAny>,
    append_user_property: Py<PyAny>,
}

static RUNTIME: PyOnceLock<Runtime> = PyOnceLock::new();

/// Hands Rust the session list and the helpers of `_runtime` (it does, once, at its
/// import). A later call (a reload) keeps the first.
#[pyfunction]
#[pyo3(signature = (*, sessions, require, set_user_property, append_user_property))]
pub(crate) fn register_runtime(
    py: Python<'_>,
    sessions: Py<PyList>,
    require: Py<PyAny>,
    set_user_property: Py<PyAny>,
    append_user_property: Py<PyAny>,
) {
    let _ = RUNTIME.set(
        py,
        Runtime {
            sessions,
            require,
            set_user_property,
            append_user_property,
        },
    );
}

pub(crate) fn runtime(py: Python<'_>) -> PyResult<&Runtime> {
    RUNTIME.get(py).ok_or_else(|| {
        PyRuntimeError::new_err(
            "pytest_blackbox._runtime did not register (import pytest_blackbox)",
        )
    })
}

/// A property record into the innermost session: of `test` when given, else of the running
/// test (mirrored into its `user_properties`) or the session.
pub(crate) fn session_property(
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
        if let Err(e) = recorder.property(py, verb, key, value, Some(&test), how) {
            record_error(py, e)?;
        }
        return Ok(());
    }
    // The running test: kept by the pytest session's hooks (no attribute of the session
    // is set per test), or by a `start_run()` session's own attributes.
    let hooks = session.getattr(pyo3::intern!(py, "hooks"))?;
    let (item, nodeid) = match hooks.cast::<PyTestHooks>() {
        Ok(h) => match h.get().current(py) {
            Some((item, nodeid)) => (item.into_bound(py), nodeid.into_bound(py)),
            None => (py.None().into_bound(py), py.None().into_bound(py)),
        },
        Err(_) => (
            session.getattr(pyo3::intern!(py, "current_item"))?,
            session.getattr(pyo3::intern!(py, "current_nodeid"))?,
        ),
    };
    let nodeid = nodeid.cast::<PyString>().ok().map(text_of);
    let plain = match recorder.property(py, verb, key, value, nodeid.as_deref(), how) {
        Ok(plain) => plain,
        // Not stored (a full disk, warned of): the test's report still gets it.
        Err(e) => record_error(py, e).map(|()| value.clone())?,
    };
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

pub(crate) const METH_FASTCALL: std::ffi::c_int = 0x0080;

pub(crate) type FastCallWithKeywords = unsafe extern "C" fn(
    *mut pyo3::ffi::PyObject,
    *const *mut pyo3::ffi::PyObject,
    pyo3::ffi::Py_ssize_t,
    *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject;

/// Adds `fun` to `m` as a builtin function named `name`; `doc` starts with the signature
/// (`name(...)\n--\n\n`), from which the interpreter gives it `__text_signature__`.
pub(crate) fn add_fastcall(
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
pub(crate) unsafe fn property_args<'py>(
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
pub(crate) unsafe fn package_property(
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

pub(crate) unsafe extern "C" fn package_record(
    _module: *mut pyo3::ffi::PyObject,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject {
    // SAFETY: CPython calls it as a vectorcall function.
    unsafe { package_property(Verb::Set, "record", args, nargs, kwnames) }
}

pub(crate) unsafe extern "C" fn package_append(
    _module: *mut pyo3::ffi::PyObject,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject {
    // SAFETY: CPython calls it as a vectorcall function.
    unsafe { package_property(Verb::Append, "append", args, nargs, kwnames) }
}

/// The doc of `_native.record` (the package's `record`), after its signature.
pub(crate) const RECORD_DOC: &std::ffi::CStr = c"record(key, value, *, test=None)
--

Set ``key`` to ``value`` on the running test of this process (or on ``test``, a nodeid;
or on the session when no test runs). Committed, and so crash-safe, on return.

Values that are not plain (None, bool, int, float, str, bytes, list, dict) are stored as
the nearest plain type or their repr, with one :class:`BlackboxWarning`. A store with no
room (a full disk) drops the value with one warning for the run, and the test goes on
(its report still carries it); under ``--blackbox=require`` it raises
:class:`StoreFullError`.";

pub(crate) const APPEND_DOC: &std::ffi::CStr = c"append(key, value, *, test=None)
--

Append ``value`` to the list under ``key`` (e.g. one comparison result per call), on the
running test of this process (or on ``test``; or on the session when no test runs). A full
store: as ``record``.";

/// For tests: the bytes of a property record encoded by the fast path (`None` when it
/// declines the value) and through the `Converter` (the reference), without a warning.
#[pyfunction(name = "_property_bytes")]
#[pyo3(signature = (key, value, test = None, mono_ns = 0, append = false))]
pub(crate) fn property_bytes<'py>(
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
pub(crate) fn to_plain<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
    what: &str,
    warn: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let v = convert(py, what, value, warn)?;
    value_to_py(py, &v)
}
