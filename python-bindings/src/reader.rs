//! `RunReader`: a run read (and followed) from its segments, and `read_records`.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use blackbox_core::{Aggregate, Follower, RunView, SegmentStatus, Store};
use blackbox_core::{Record, Role};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{raise, Class, OrRaise};
use crate::history::{fold_options, fold_stats_py};
use crate::lock;
use crate::view::{gc_paused, json_to_py, value_to_py, view_to_py, PyRunView};

pub(crate) struct ReaderState {
    follower: Follower,
    agg: Aggregate,
    /// The last view built, with the records read and the segments' state it was built
    /// from: handed out again while neither changed (the end of a session asks for the
    /// run's brief, then for its flaky note, with nothing recorded in between).
    last: Option<(u64, Vec<SegmentStatus>, Arc<RunView>)>,
}

/// Whether two readings of a run's segments are the same state.
fn same_segments(a: &[SegmentStatus], b: &[SegmentStatus]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.path == y.path
                && x.pid == y.pid
                && x.role == y.role
                && x.worker == y.worker
                && x.ppid == y.ppid
                && x.alive == y.alive
                && x.closed_cleanly == y.closed_cleanly
                && x.created_wall_ns == y.created_wall_ns
                && x.crash == y.crash
                && x.current_test == y.current_test
                && x.committed == y.committed
                && x.damage == y.damage
        })
}

impl ReaderState {
    /// Reads what was committed since the last poll into the aggregate.
    fn poll(&mut self) {
        self.follower.poll_into(&mut self.agg);
    }

    /// Polls, then the aggregate view of the run as it stands: the last one built when no
    /// record came and no segment changed since.
    fn view(&mut self) -> Arc<RunView> {
        self.poll();
        let segments = self.follower.statuses();
        let records = self.agg.records();
        if let Some((r, s, view)) = &self.last {
            if *r == records && same_segments(s, &segments) {
                return Arc::clone(view);
            }
        }
        let view = Arc::new(self.agg.view(self.follower.id(), &segments));
        self.last = Some((records, segments, Arc::clone(&view)));
        view
    }

    /// [`view`](Self::view), owned: taken out of the cache (the caller keeps it).
    fn view_owned(&mut self) -> RunView {
        let view = self.view();
        self.last = None;
        Arc::unwrap_or_clone(view)
    }
}

/// A thread that polls a `RunReader` while the run goes on (`RunReader.follow`), so that
/// what the reader is asked for at the run's end has mostly been read already, on a core
/// the tests do not use.
pub(crate) struct Background {
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
pub(crate) struct PyRunReader {
    inner: Arc<Mutex<ReaderState>>,
    id: String,
    dir: PathBuf,
    background: Mutex<Option<Background>>,
}

/// The shortest `RunReader.follow` interval: shorter would keep the reader's lock taken.
pub(crate) const MIN_FOLLOW_INTERVAL: Duration = Duration::from_millis(1);

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
                Class::Base,
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
                last: None,
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
                raise(
                    py,
                    Class::System,
                    format!("cannot start the follow thread: {e}"),
                )
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

    /// The run after a poll, kept native (`RunView`): what `view()` gives, converted part
    /// by part when asked (`Run` reads a store this way).
    fn read(&self, py: Python<'_>) -> PyResult<PyRunView> {
        self.usable(py)?;
        Ok(py.detach(|| PyRunView::new(lock(&self.inner).view_owned())))
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
                let mut stats = blackbox_core::fold_view(&store.history_path(), &view, &opts)?;
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
            blackbox_core::flaky_note(&store, &view, last)
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
pub(crate) fn read_records(py: Python<'_>, run_dir: PathBuf) -> PyResult<Vec<Bound<'_, PyAny>>> {
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
        // A record without a pid of its own gets its writer's; a crash keeps the pid of the
        // process that died (a forked child, an xdist worker), which its writer recorded.
        if let serde_json::Value::Object(m) = &mut j {
            m.entry("pid")
                .or_insert_with(|| snap.segments[seg].pid.into());
        }
        out.push(json_to_py(py, &j)?);
    }
    Ok(out)
}
