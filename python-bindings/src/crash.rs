//! The fatal-signal handler and the watchdog.

use pyo3::prelude::*;

use crate::errors::{raise, Class};

/// Installs the fatal-signal handler that marks this process's segment as crashed.
#[pyfunction]
pub(crate) fn install_crash_handler(py: Python<'_>) -> PyResult<()> {
    blackbox_core::install_crash_handler().map_err(|e| {
        raise(
            py,
            Class::System,
            format!("cannot install the crash handler: {e}"),
        )
    })
}

/// When a fatal signal kills this process, the crash handler copies the file open as
/// `source` (faulthandler's) to `target` (the user's stderr) and writes one line ending
/// in `note`, if given (`blackbox_core::set_crash_echo`). -1 turns it off.
#[pyfunction]
#[pyo3(signature = (source, target, note = None))]
pub(crate) fn set_crash_echo(source: i32, target: i32, note: Option<&str>) {
    blackbox_core::set_crash_echo(source, target, note);
}

/// Marks this process's newest segment as crashed by `signal` (what the handler does).
#[pyfunction]
pub(crate) fn mark_crash(signal: i32) -> bool {
    blackbox_core::mark_crash(signal)
}

/// The signal the watchdog raises on its own thread to have faulthandler write every
/// Python thread's traceback into the file open as `fd` (0: none).
#[pyfunction]
#[pyo3(signature = (signal, fd = -1))]
pub(crate) fn watchdog_dump_signal(signal: i32, fd: i32) {
    blackbox_core::set_dump_signal(signal, fd);
}

/// Before a fork: the watchdog thread ends (the next armed test starts it again).
#[pyfunction]
pub(crate) fn watchdog_before_fork(py: Python<'_>) {
    py.detach(blackbox_core::before_fork);
}

/// After a fork, in the parent: an armed test gets its watchdog thread back.
#[pyfunction]
pub(crate) fn watchdog_after_fork_in_parent(py: Python<'_>) -> PyResult<()> {
    blackbox_core::after_fork_in_parent().map_err(|e| {
        raise(
            py,
            Class::System,
            format!("cannot start the watchdog thread: {e}"),
        )
    })
}

/// `SIGSEGV` for 11 and so on.
#[pyfunction]
pub(crate) fn signal_name(signal: i32) -> String {
    blackbox_core::signal_name(signal)
}
