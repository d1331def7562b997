//! Reading `history.redb` across runs, folding what it misses, and `combine`: conversion
//! only (the logic is in `blackbox_core::history` and `blackbox_core::combine`).

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use blackbox_core::history::{self, History};
use blackbox_core::Store;

use super::{fold_options, json_to_py, OrRaise};

fn open(store_dir: &PathBuf) -> blackbox_core::Result<History> {
    History::of_store(&Store::open(store_dir)?)
}

/// `blackbox flaky --json` for the newest `last` runs.
#[pyfunction]
#[pyo3(signature = (store_dir, last = 20))]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
pub fn history_flaky(
    py: Python<'_>,
    store_dir: PathBuf,
    last: usize,
) -> PyResult<Bound<'_, PyAny>> {
    let j = py
        .detach(|| open(&store_dir)?.flaky_report(last).map(|r| r.to_json()))
        .or_raise(py)?;
    json_to_py(py, &j)
}

/// `blackbox history NODEID --json` for the newest `last` runs.
#[pyfunction]
#[pyo3(signature = (store_dir, nodeid, last = 20))]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
pub fn history_test<'py>(
    py: Python<'py>,
    store_dir: PathBuf,
    nodeid: &str,
    last: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let j = py
        .detach(|| {
            open(&store_dir)?
                .test_runs(nodeid, last)
                .map(|r| r.to_json())
        })
        .or_raise(py)?;
    json_to_py(py, &j)
}

/// `blackbox slower --json` for the newest `last` runs.
#[pyfunction]
#[pyo3(signature = (store_dir, last = 20, threshold = 1.5))]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
pub fn history_slower(
    py: Python<'_>,
    store_dir: PathBuf,
    last: usize,
    threshold: f64,
) -> PyResult<Bound<'_, PyAny>> {
    let j = py
        .detach(|| {
            open(&store_dir)?
                .slower(last, threshold)
                .map(|r| r.to_json())
        })
        .or_raise(py)?;
    json_to_py(py, &j)
}

/// Folds every run folder the history misses (but `except_run`); returns their ids.
#[pyfunction]
#[pyo3(signature = (store_dir, except_run = None, keep = 200, max_mb = 256.0, wait_s = 60.0))]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
pub fn fold_missing(
    py: Python<'_>,
    store_dir: PathBuf,
    except_run: Option<&str>,
    keep: usize,
    max_mb: f64,
    wait_s: f64,
) -> PyResult<Vec<String>> {
    let opts = fold_options(keep, wait_s, max_mb);
    py.detach(|| {
        let store = Store::open(&store_dir)?;
        let done = history::fold_missing(&store, except_run, &opts)?;
        Ok(done.into_iter().map(|s| s.run_id).collect())
    })
    .or_raise(py)
}

/// `blackbox combine`: merges store `source` into `target`; what it did, as a dict.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
pub fn combine_store(
    py: Python<'_>,
    target: PathBuf,
    source: PathBuf,
) -> PyResult<Bound<'_, PyDict>> {
    let done = py
        .detach(|| {
            let target = Store::create(&target)?;
            blackbox_core::combine::combine(&target, &source, &history::FoldOptions::default())
        })
        .or_raise(py)?;
    let d = PyDict::new(py);
    d.set_item("shard", done.shard)?;
    d.set_item("copied", done.copied)?;
    d.set_item("from_history", done.from_history)?;
    d.set_item("already", done.already)?;
    d.set_item("skipped", done.skipped)?;
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(history_flaky, m)?)?;
    m.add_function(wrap_pyfunction!(history_test, m)?)?;
    m.add_function(wrap_pyfunction!(history_slower, m)?)?;
    m.add_function(wrap_pyfunction!(fold_missing, m)?)?;
    m.add_function(wrap_pyfunction!(combine_store, m)?)?;
    Ok(())
}
