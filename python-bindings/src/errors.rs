//! Error mapping: core errors onto the exception tree of `pytest_blackbox.errors`, and
//! the warnings of values that were not plain and of store errors where raising would break
//! the run.

use std::sync::Mutex;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::convert::{Notes, MAX_VALUES};
use crate::lock;

// ---------------------------------------------------------------------------------------
// Errors: the exception classes are defined once, in pytest_blackbox/errors.py (one tree
// under BlackboxError, some also under an OSError or ValueError a caller may expect), which
// hands them over at its import through `register_errors`. Rust never imports the package.
// ---------------------------------------------------------------------------------------

/// A class of the tree, as Rust raises it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Class {
    Base,
    StoreFull,
    RecordTooLarge,
    Damaged,
    NoStore,
    NoSuchRun,
    Refused,
    Transaction,
    InvalidKey,
    /// `Recorder.write` was given an unknown kind, or fields that kind does not have.
    InvalidRecord,
    /// The system refused what the recorder needs (a signal handler, a thread).
    System,
}

impl Class {
    /// The Python name of the class: also the key of `first_of_class` (as the plugin's
    /// `_settings.first` keys store errors by `type(e).__name__`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Class::Base => "BlackboxError",
            Class::StoreFull => "StoreFullError",
            Class::RecordTooLarge => "RecordTooLargeError",
            Class::Damaged => "DamagedStoreError",
            Class::NoStore => "NoStoreError",
            Class::NoSuchRun => "NoSuchRunError",
            Class::Refused => "StoreRefusedError",
            Class::Transaction => "TransactionError",
            Class::InvalidKey => "InvalidKeyError",
            Class::InvalidRecord => "InvalidRecordError",
            Class::System => "SystemResourceError",
        }
    }
}

/// The classes `register_errors` was given, in `Class` order, and the warning class.
struct Registered {
    classes: [Py<PyAny>; 11],
    warning: Py<PyAny>,
}

static REGISTERED: PyOnceLock<Registered> = PyOnceLock::new();

/// Hands Rust the exception tree and the warning class (`pytest_blackbox.errors` does, once,
/// at its import). A later call (a reload) keeps the first classes.
#[pyfunction]
#[pyo3(signature = (
    *, base, store_full, record_too_large, damaged, no_store, no_such_run, refused,
    transaction, invalid_key, invalid_record, system, warning
))]
#[allow(clippy::too_many_arguments)] // one keyword a class: a missing one fails at import
pub(crate) fn register_errors(
    py: Python<'_>,
    base: Py<PyAny>,
    store_full: Py<PyAny>,
    record_too_large: Py<PyAny>,
    damaged: Py<PyAny>,
    no_store: Py<PyAny>,
    no_such_run: Py<PyAny>,
    refused: Py<PyAny>,
    transaction: Py<PyAny>,
    invalid_key: Py<PyAny>,
    invalid_record: Py<PyAny>,
    system: Py<PyAny>,
    warning: Py<PyAny>,
) {
    let _ = REGISTERED.set(
        py,
        Registered {
            classes: [
                base,
                store_full,
                record_too_large,
                damaged,
                no_store,
                no_such_run,
                refused,
                transaction,
                invalid_key,
                invalid_record,
                system,
            ],
            warning,
        },
    );
}

pub(crate) fn error_class(e: &blackbox_core::Error) -> Class {
    use blackbox_core::Error as E;
    match e {
        E::StoreFull { .. } | E::SegmentFull { .. } => Class::StoreFull,
        E::RecordTooLarge { .. } => Class::RecordTooLarge,
        E::Damaged(_) | E::UnsupportedVersion { .. } => Class::Damaged,
        E::NoStore { .. } | E::NotAStore { .. } | E::NoRuns { .. } | E::NoStoreFound { .. } => {
            Class::NoStore
        }
        E::NoSuchRun { .. } | E::AmbiguousRun { .. } => Class::NoSuchRun,
        E::Refused { .. } => Class::Refused,
        E::TransactionOpen => Class::Transaction,
        _ => Class::Base,
    }
}

/// An exception of `class` with `msg`. The package imports errors.py (which registers the
/// tree) before anything can call into Rust; a bare `_native` without it is a bug, said so.
pub(crate) fn raise(py: Python<'_>, class: Class, msg: String) -> PyErr {
    let Some(reg) = REGISTERED.get(py) else {
        return PyRuntimeError::new_err(format!(
            "pytest_blackbox.errors did not register its classes (import pytest_blackbox): {msg}"
        ));
    };
    match reg.classes[class as usize].bind(py).call1((msg,)) {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

pub(crate) fn map_err(py: Python<'_>, e: &blackbox_core::Error) -> PyErr {
    raise(py, error_class(e), e.to_string())
}

pub(crate) trait OrRaise<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrRaise<T> for blackbox_core::Result<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| map_err(py, &e))
    }
}

pub(crate) fn warning_class(py: Python<'_>) -> Option<Bound<'_, PyAny>> {
    REGISTERED.get(py).map(|r| r.warning.bind(py).clone())
}

/// Emits the one warning of a call, if anything was noted, for the frame `stacklevel` up.
pub(crate) fn warn_notes(
    py: Python<'_>,
    what: &str,
    notes: &Notes,
    stacklevel: i32,
) -> PyResult<()> {
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

pub(crate) fn too_large(py: Python<'_>, what: &str) -> PyErr {
    raise(
        py,
        Class::RecordTooLarge,
        format!(
            "{what} is too large for one record (more than {MAX_VALUES} values or {} MiB, counting a shared \
             sub-list once per place it appears); store large data in a file and record its path",
            blackbox_core::MAX_RECORD >> 20
        ),
    )
}

/// The error classes this process has warned about (see `store_warning`), where the plugin
/// did not register its handler.
pub(crate) static STORE_WARNED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Whether this is the first store error of class `class` in this process: a full disk
/// fails every later write too, and the user needs to hear it once.
pub(crate) fn first_of_class(class: &str) -> bool {
    let mut warned = lock(&STORE_WARNED);
    if warned.iter().any(|c| c == class) {
        return false;
    }
    warned.push(class.to_owned());
    true
}

/// The plugin's policy for store errors (`plugin._store_error`): who says one, and when
/// `record()` raises it instead. Handed over once, at the plugin's import.
static STORE_ERROR_HANDLER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Hands Rust the plugin's handler of store errors. A later call (a reload) keeps the first.
#[pyfunction]
pub(crate) fn register_store_error_handler(py: Python<'_>, handler: Py<PyAny>) {
    let _ = STORE_ERROR_HANDLER.set(py, handler);
}

/// A store error where raising would break the run (a hook's write): handed to the plugin's
/// handler, which says it once for the run; without one (the plugin not imported), one
/// `BlackboxWarning` per class of error and process, or, where warnings are errors, one line
/// on stderr.
pub(crate) fn store_warning(py: Python<'_>, e: &blackbox_core::Error) {
    if let Some(handler) = STORE_ERROR_HANDLER.get(py) {
        if handler
            .bind(py)
            .call1((map_err(py, e).into_value(py),))
            .is_err()
        {
            eprintln!("blackbox: {e}");
        }
        return;
    }
    if !first_of_class(error_class(e).name()) {
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

/// An error of `record()`/`append()`: the handler raises it again unless it is a store
/// failure it only warns of (outside `--blackbox=require`); then `Ok`, the value dropped.
pub(crate) fn record_error(py: Python<'_>, err: PyErr) -> PyResult<()> {
    match STORE_ERROR_HANDLER.get(py) {
        // The warning points at the caller of record(): no Python frame lies between.
        Some(handler) => handler
            .bind(py)
            .call1((err.into_value(py), true, 2))
            .map(drop),
        None => Err(err),
    }
}
