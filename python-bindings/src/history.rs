//! Reading `history.redb` across runs, folding what it misses, and `combine`: conversion
//! only (the logic is in `blackbox_core::history` and `blackbox_core::combine`).

use std::path::PathBuf;

use blackbox_core::History;
use blackbox_core::Store;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::OrRaise;
use crate::view::{json_to_py, view_to_py};

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
        let done = blackbox_core::fold_missing(&store, except_run, &opts)?;
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
            blackbox_core::combine(&target, &source, &blackbox_core::FoldOptions::default())
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
    m.add_function(wrap_pyfunction!(fold_history, m)?)?;
    m.add_function(wrap_pyfunction!(history_brief, m)?)?;
    m.add_function(wrap_pyfunction!(history_flaky, m)?)?;
    m.add_function(wrap_pyfunction!(history_test, m)?)?;
    m.add_function(wrap_pyfunction!(history_slower, m)?)?;
    m.add_function(wrap_pyfunction!(fold_missing, m)?)?;
    m.add_function(wrap_pyfunction!(combine_store, m)?)?;
    Ok(())
}
/// Folds run `run_id` into `<store>/history.redb` (keeping the newest `keep` runs there),
/// waiting up to `wait_s` seconds for another process to close it. Returns what it did.
#[pyfunction]
#[pyo3(signature = (store_dir, run_id, keep = 200, wait_s = 60.0, max_mb = 256.0))]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over owned
pub(crate) fn fold_history<'py>(
    py: Python<'py>,
    store_dir: PathBuf,
    run_id: &str,
    keep: usize,
    wait_s: f64,
    max_mb: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = fold_options(keep, wait_s, max_mb);
    let stats = py
        .detach(|| Store::open(&store_dir).and_then(|s| blackbox_core::fold_run(&s, run_id, &opts)))
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
pub(crate) fn history_brief<'py>(
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
            history.run_summary(run_id)
        })
        .or_raise(py)?;
    let Some((view, test_count)) = found else {
        return Ok(None);
    };
    let d = view_to_py(py, &view, Some(0))?;
    d.set_item("test_count", test_count)?;
    d.del_item("outcomes")?;
    Ok(Some(d))
}

pub(crate) fn fold_options(keep: usize, wait_s: f64, max_mb: f64) -> blackbox_core::FoldOptions {
    blackbox_core::FoldOptions {
        keep: keep.max(1),
        max_bytes: (max_mb.max(0.0) * 1_048_576.0) as u64,
        wait: std::time::Duration::from_secs_f64(wait_s.max(0.0)),
        ..blackbox_core::FoldOptions::default()
    }
}

#[allow(clippy::needless_pass_by_value)] // consumed: its strings move into the dict
pub(crate) fn fold_stats_py(
    py: Python<'_>,
    stats: blackbox_core::FoldStats,
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
