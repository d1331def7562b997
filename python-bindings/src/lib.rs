//! `pytest_blackbox._native`: the Python face of blackbox-core. Conversion and error mapping
//! only; the logic lives in the core crate. Docs live in `_native.pyi`.

mod api;
mod convert;
mod crash;
mod encode;
mod errors;
mod history;
mod hooks;
mod reader;
mod recorder;
mod store;
mod view;

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("FORMAT_VERSION", blackbox_core::FORMAT_VERSION)?;
    m.add_class::<recorder::PyRecorder>()?;
    m.add_class::<reader::PyRunReader>()?;
    m.add_class::<view::PyRunView>()?;
    m.add_class::<hooks::PyFixtureTimer>()?;
    m.add_class::<hooks::PyTestHooks>()?;
    m.add_function(wrap_pyfunction!(api::to_plain, m)?)?;
    m.add_function(wrap_pyfunction!(api::property_bytes, m)?)?;
    api::add_fastcall(m, c"record", api::RECORD_DOC, api::package_record)?;
    api::add_fastcall(m, c"append", api::APPEND_DOC, api::package_append)?;
    m.add_function(wrap_pyfunction!(reader::read_records, m)?)?;
    m.add_function(wrap_pyfunction!(store::new_run, m)?)?;
    m.add_function(wrap_pyfunction!(store::list_runs, m)?)?;
    m.add_function(wrap_pyfunction!(store::logical_view, m)?)?;
    m.add_function(wrap_pyfunction!(store::run_path, m)?)?;
    m.add_function(wrap_pyfunction!(store::find_store, m)?)?;
    m.add_function(wrap_pyfunction!(store::resolve_run, m)?)?;
    m.add_function(wrap_pyfunction!(store::prune_runs, m)?)?;
    m.add_function(wrap_pyfunction!(store::create_private_file, m)?)?;
    m.add_function(wrap_pyfunction!(store::remove_empty_attachments, m)?)?;
    m.add_function(wrap_pyfunction!(errors::register_errors, m)?)?;
    m.add_function(wrap_pyfunction!(api::register_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(errors::register_store_error_handler, m)?)?;
    history::register(m)?;
    m.add_function(wrap_pyfunction!(store::cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(crash::install_crash_handler, m)?)?;
    m.add_function(wrap_pyfunction!(crash::mark_crash, m)?)?;
    m.add_function(wrap_pyfunction!(crash::set_crash_echo, m)?)?;
    m.add_function(wrap_pyfunction!(crash::signal_name, m)?)?;
    m.add_function(wrap_pyfunction!(crash::watchdog_dump_signal, m)?)?;
    m.add_function(wrap_pyfunction!(crash::watchdog_before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(crash::watchdog_after_fork_in_parent, m)?)?;
    Ok(())
}
