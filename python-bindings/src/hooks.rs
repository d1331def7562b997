//! The per-test hooks of the plugin: a test's start and phase reports, fixture timers.

use std::sync::Mutex;

use blackbox_core::now_mono_ns;
use blackbox_core::{Phase, Record};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::convert::{nodeid_of, text_of, utf8_of, Converter, Notes, REPORT_STR_LIMIT};
use crate::errors::store_warning;
use crate::lock;
use crate::recorder::PyRecorder;

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
pub(crate) struct PyFixtureTimer {
    recorder: Py<PyRecorder>,
    name: Py<FixtureName>,
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
        let name = self.name.get();
        let done = {
            let mut r = lock(&self.recorder.get().inner);
            let test = r.current_test().map(str::to_owned);
            r.record(&Record::Fixture {
                name: name.name.clone(),
                scope: name.scope.clone(),
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

/// A fixture definition's name and scope as its records name it, read once per
/// definition (`FixtureDef.scope` is a Python property).
#[pyclass(module = "pytest_blackbox._native", name = "FixtureName", frozen)]
pub(crate) struct FixtureName {
    name: String,
    scope: String,
}

/// What one pytest session records of the tests this process runs: their start and their
/// phase reports, into `recorder`, with the running test kept here (`current_item`,
/// `current_nodeid`, which `record()` reads); and its fixtures' times. The
/// plugin's hooks call it (`pytest_runtest_setup`, a `pytest_runtest_makereport` and a
/// `pytest_fixture_setup` wrapper), one native call each.
#[pyclass(module = "pytest_blackbox._native", name = "TestHooks", frozen)]
pub(crate) struct PyTestHooks {
    recorder: Py<PyRecorder>,
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
    /// Each fixture definition's [`FixtureName`], or `None` for one not timed.
    names: Py<PyDict>,
    /// The running test and its nodeid: read here by each phase report and by `record()`
    /// (the session's `current_item` and `current_nodeid` are properties that read them).
    current: Mutex<Option<(Py<PyAny>, Py<PyAny>)>>,
}

impl PyTestHooks {
    /// The running test and its nodeid (`record()` reads them here).
    pub(crate) fn current(&self, py: Python<'_>) -> Option<(Py<PyAny>, Py<PyAny>)> {
        lock(&self.current)
            .as_ref()
            .map(|(item, nodeid)| (item.clone_ref(py), nodeid.clone_ref(py)))
    }

    /// The name and scope to record `fixturedef` under, or `None` when it is not timed.
    fn fixture_name<'py>(
        &self,
        py: Python<'py>,
        fixturedef: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, FixtureName>>> {
        let names = self.names.bind(py);
        if let Some(name) = names.get_item(fixturedef)? {
            return Ok(name.cast_into::<FixtureName>().ok());
        }
        let func = fixturedef.getattr(intern!(py, "func"))?;
        let name = if self.skip.bind(py).call1((&func,))?.is_truthy()? {
            None
        } else {
            let argname = fixturedef.getattr(intern!(py, "argname"))?;
            let scope = fixturedef.getattr(intern!(py, "scope"))?;
            Some(Bound::new(
                py,
                FixtureName {
                    name: nodeid_of(argname.cast::<PyString>()?),
                    scope: nodeid_of(scope.cast::<PyString>()?),
                },
            )?)
        };
        match &name {
            Some(n) => names.set_item(fixturedef, n)?,
            None => names.set_item(fixturedef, py.None())?,
        }
        Ok(name)
    }
}

#[pymethods]
impl PyTestHooks {
    #[new]
    fn new(
        py: Python<'_>,
        recorder: Py<PyRecorder>,
        config: Py<PyAny>,
        on_new_process: Py<PyAny>,
        session_pid: u32,
        skip: Py<PyAny>,
    ) -> Self {
        PyTestHooks {
            recorder,
            config,
            on_new_process,
            session_pid,
            seen_pid: std::sync::atomic::AtomicU32::new(std::process::id()),
            skip,
            names: PyDict::new(py).unbind(),
            current: Mutex::new(None),
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
        *lock(&self.current) = Some((item.clone().unbind(), nodeid.clone().unbind()));
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
        // The nodeid kept at the test's start (`report.nodeid` is a Python property on
        // pytest 9.2).
        let nodeid = match &*lock(&self.current) {
            Some((running, nodeid)) if running.bind(py).is(item) => nodeid.clone_ref(py),
            _ => return Ok(()),
        };
        let nodeid = nodeid.into_bound(py);
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
        let mut rec = phase_record(nodeid, phase, outcome, duration_s, data.as_ref());
        let done = {
            let mut r = lock(&recorder.inner);
            let mut done = r.record(&rec);
            if let (Err(blackbox_core::Error::StoreFull { .. }), Record::TestPhase { report, .. }) =
                (&done, &mut rec)
            {
                // No room for the report (a forked child's holds the test's properties):
                // the phase without it may still fit, and its test then ends as it did.
                if report.take().is_some() && r.record(&rec).is_ok() {
                    r.phase_done(phase);
                }
            } else if done.is_ok() {
                r.phase_done(phase);
            }
            if phase == Phase::Teardown {
                let ended = r.end_test(&text_of(nodeid));
                done = done.and(ended);
            }
            done
        };
        if let Err(e) = done {
            store_warning(py, &e);
        }
        if phase == Phase::Teardown {
            *lock(&self.current) = None;
        }
        Ok(())
    }

    /// The running test (`None` between tests).
    #[getter]
    fn current_item(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.current(py).map(|(item, _)| item)
    }

    /// The running test's nodeid (`None` between tests).
    #[getter]
    fn current_nodeid(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.current(py).map(|(_, nodeid)| nodeid)
    }

    /// A fixture's setup starts: its timer, added as the finalizer that ends its teardown
    /// (the plugin hands it back through `FixtureTimer.setup_done`); `None` for what is
    /// not timed.
    fn fixture_starts<'py>(
        &self,
        py: Python<'py>,
        fixturedef: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyFixtureTimer>>> {
        let Some(name) = self.fixture_name(py, fixturedef)? else {
            return Ok(None);
        };
        let timer = Bound::new(
            py,
            PyFixtureTimer {
                recorder: self.recorder.clone_ref(py),
                name: name.unbind(),
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
pub(crate) fn phase_record(
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
            if rec.encoded_len() <= blackbox_core::MAX_RECORD {
                break;
            }
            if let Record::TestPhase { report, .. } = &mut rec {
                *report = None;
            }
        }
    }
    rec
}
