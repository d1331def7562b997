//! The store's folders and files, and the `blackbox` command line.

use std::path::PathBuf;

use blackbox_core::Store;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{raise, Class, OrRaise};
use crate::view::view_to_py;

/// Creates the store directory if needed and starts a run in it; returns (id, folder).
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
pub(crate) fn new_run(py: Python<'_>, store_dir: PathBuf) -> PyResult<(String, PathBuf)> {
    let store = Store::create(&store_dir).or_raise(py)?;
    let id = store.new_run().or_raise(py)?;
    let path = store.run_path(&id).or_raise(py)?;
    Ok((id, path))
}

/// The run ids of a store, oldest first.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
pub(crate) fn list_runs(py: Python<'_>, store_dir: PathBuf) -> PyResult<Vec<String>> {
    Store::open(&store_dir).and_then(|s| s.runs()).or_raise(py)
}

/// Run `run_id` as one logical run with the attempts it resumes (`--blackbox-resume`):
/// `Store::with_earlier_attempts` in core, as `RunReader.view()` gives a view.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
pub(crate) fn logical_view(
    py: Python<'_>,
    store_dir: PathBuf,
    run_id: String,
) -> PyResult<Bound<'_, PyDict>> {
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
pub(crate) fn find_store(
    py: Python<'_>,
    given: Option<PathBuf>,
    cwd: Option<PathBuf>,
) -> PyResult<PathBuf> {
    let cwd = match cwd {
        Some(c) => c,
        None => std::env::current_dir()
            .map_err(|e| raise(py, Class::System, format!("no current directory: {e}")))?,
    };
    let env = std::env::var_os("BLACKBOX_DIR").map(PathBuf::from);
    blackbox_core::find_store(given.as_deref(), env.as_deref(), &cwd)
        .map(|(p, _)| p)
        .or_raise(py)
}

/// The run `wanted` names in a store: its id or a unique start of it (`--run`'s rule).
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
pub(crate) fn resolve_run(py: Python<'_>, store_dir: PathBuf, wanted: &str) -> PyResult<String> {
    Store::open(&store_dir)
        .and_then(|s| s.resolve_run(Some(wanted)))
        .or_raise(py)
}

/// The folder of run `id` of a store.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
pub(crate) fn run_path(py: Python<'_>, store_dir: PathBuf, id: &str) -> PyResult<PathBuf> {
    Store::open(&store_dir)
        .and_then(|s| s.run_path(id))
        .or_raise(py)
}

/// The `blackbox` command line (the Rust CLI of blackbox-core), writing to this process's
/// stdout and stderr; returns the exit status.
#[pyfunction]
#[pyo3(signature = (argv, is_tty = None))]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
pub(crate) fn cli_main(py: Python<'_>, argv: Vec<String>, is_tty: Option<bool>) -> i32 {
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
pub(crate) fn create_private_file(py: Python<'_>, path: PathBuf) -> PyResult<i32> {
    use std::os::fd::IntoRawFd;
    let file = blackbox_core::create_file(&path).or_raise(py)?;
    Ok(file.into_raw_fd())
}

/// Removes the empty attachment files of a run folder; returns the paths removed.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
pub(crate) fn remove_empty_attachments(py: Python<'_>, run_dir: PathBuf) -> PyResult<Vec<PathBuf>> {
    blackbox_core::remove_empty_attachments(&run_dir).or_raise(py)
}

/// Removes all but the newest `keep` run folders (never one with a live writer).
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
pub(crate) fn prune_runs(py: Python<'_>, store_dir: PathBuf, keep: usize) -> PyResult<Vec<String>> {
    Store::open(&store_dir)
        .and_then(|s| s.prune_runs(keep))
        .or_raise(py)
}
