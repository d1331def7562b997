//! Error mapping: core errors onto the exception tree of `pytest_blackbox.errors`, and
//! the warnings of values that were not plain and of store errors where raising would break
//! the run.

use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::convert::{Notes, MAX_VALUES};
use crate::lock;

// ---------------------------------------------------------------------------------------
// Errors: the exception classes live in pytest_blackbox.errors (one tree under
// BlackboxError); this maps core errors onto them.
// ---------------------------------------------------------------------------------------

pub(crate) fn error_class(e: &blackbox_core::Error) -> &'static str {
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

pub(crate) fn raise(py: Python<'_>, class: &str, msg: String) -> PyErr {
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
        "RecordTooLargeError",
        format!(
            "{what} is too large for one record (more than {MAX_VALUES} values or {} MiB, counting a shared \
             sub-list once per place it appears); store large data in a file and record its path",
            blackbox_core::segment::MAX_RECORD >> 20
        ),
    )
}

/// The error classes this process has warned about (see `store_warning`).
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

/// `first_of_class` for the plugin's own warnings of store errors (the class name of the
/// exception), so that the native and the Python side say it once between them.
#[pyfunction]
pub(crate) fn first_store_error(kind: &str) -> bool {
    first_of_class(kind)
}

/// A store error where raising would break the run: one `BlackboxWarning` per class of
/// error and process, or, where warnings are errors, one line on stderr.
pub(crate) fn store_warning(py: Python<'_>, e: &blackbox_core::Error) {
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
