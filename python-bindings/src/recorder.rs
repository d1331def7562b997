//! `Recorder`: one process's writer of a run, and its property records.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use blackbox_core::{now_mono_ns, now_wall_ns, Durability, Recorder};
use blackbox_core::{Phase, Record, Role, Value};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyString;

use crate::convert::{
    nodeid_of, quote, repr_of, str_noted, text_of, to_value, type_name, utf8_of, Notes,
};
use crate::errors::{raise, warn_notes, Class, OrRaise};
use crate::hooks::phase_record;
use crate::view::value_to_py;
use crate::{encode, lock};

pub(crate) fn parse_role(role: &str) -> PyResult<Role> {
    Role::parse(role).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown role {role:?}: use main, controller, worker, forked or other"
        ))
    })
}

pub(crate) fn parse_durability(d: &str) -> PyResult<Durability> {
    Durability::parse(d).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown durability {d:?}: use \"process\" or \"system\""
        ))
    })
}

pub(crate) fn parse_phase(p: &str) -> PyResult<Phase> {
    Phase::parse(p).ok_or_else(|| {
        PyValueError::new_err(format!("unknown phase {p:?}: use setup, call or teardown"))
    })
}

#[pyclass(module = "pytest_blackbox._native", name = "Recorder", frozen)]
pub(crate) struct PyRecorder {
    /// Shared with the watchdog thread, which records a timeout into it.
    pub(crate) inner: Arc<Mutex<Recorder>>,
    durability: Durability,
}

impl PyRecorder {
    fn put(&self, py: Python<'_>, rec: &Record) -> PyResult<()> {
        // The error becomes a Python exception after the lock is released.
        let done = lock(&self.inner).record(rec);
        done.or_raise(py)
    }
}

#[pymethods]
impl PyRecorder {
    #[new]
    #[pyo3(signature = (run_dir, role = "other", worker = None, durability = "process"))]
    fn new(
        run_dir: PathBuf,
        role: &str,
        worker: Option<String>,
        durability: &str,
    ) -> PyResult<Self> {
        let durability = parse_durability(durability)?;
        Ok(PyRecorder {
            inner: Recorder::new(run_dir, parse_role(role)?, worker, durability).into_shared(),
            durability,
        })
    }

    /// Sets `key` of `test` (the last write wins); returns the stored plain value.
    #[pyo3(signature = (key, value, test = None, warn = true, key_as_str = false))]
    fn record<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        test: Option<&Bound<'py, PyString>>,
        warn: bool,
        key_as_str: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let test = test.map(text_of);
        let how = How {
            warn_at: warn.then_some(2),
            key_as_str,
        };
        self.property(py, Verb::Set, key, value, test.as_deref(), how)
    }

    /// Appends `value` to the list under `key` of `test`; returns the stored plain value.
    #[pyo3(signature = (key, value, test = None, warn = true, key_as_str = false))]
    fn append<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        test: Option<&Bound<'py, PyString>>,
        warn: bool,
        key_as_str: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let test = test.map(text_of);
        let how = How {
            warn_at: warn.then_some(2),
            key_as_str,
        };
        self.property(py, Verb::Append, key, value, test.as_deref(), how)
    }

    /// Writes one record of any kind: `kind` its name (`RecordKind::name`), `fields` its
    /// fields by name, built through core's serde (`Record::from_fields`). The way a rare
    /// kind is written without a method of its own; the per-test kinds keep theirs below.
    fn write(
        &self,
        py: Python<'_>,
        kind: &str,
        fields: &Bound<'_, pyo3::types::PyDict>,
    ) -> PyResult<()> {
        let what = || format!("the fields of a {kind:?} record");
        let mut notes = Notes::default();
        let Value::Dict(fields) = to_value(py, &what, fields.as_any(), &mut notes)? else {
            unreachable!("a dict converts to a dict")
        };
        warn_notes(py, &what(), &notes, 2)?;
        let rec = Record::from_fields(kind, fields)
            .map_err(|e| raise(py, Class::InvalidRecord, e.to_string()))?;
        self.put(py, &rec)
    }

    // The per-test and per-fixture methods below take their str arguments as `PyString`
    // and read its cached UTF-8 (`utf8_of`), borrowed: no `String` per argument.

    fn start_test(&self, py: Python<'_>, nodeid: &Bound<'_, PyString>) -> PyResult<()> {
        let nodeid = text_of(nodeid);
        let done = lock(&self.inner).start_test(&nodeid);
        done.or_raise(py)
    }

    /// The time limit of every test this recorder starts (`None`: none), and of single
    /// tests by nodeid (0: none for that test): the watchdog ends a test that runs past it.
    fn set_timeouts(
        &self,
        default_s: Option<f64>,
        per_test: std::collections::HashMap<String, f64>,
    ) {
        lock(&self.inner).set_timeouts(default_s, per_test);
    }

    /// pytest-timeout armed (`limit_s`) or cancelled (`None`) its timer for `nodeid`.
    #[pyo3(signature = (nodeid, limit_s))]
    fn external_timer(&self, nodeid: &str, limit_s: Option<f64>) {
        lock(&self.inner).external_timer(nodeid, limit_s);
    }

    fn end_test(&self, py: Python<'_>, nodeid: &Bound<'_, PyString>) -> PyResult<()> {
        let nodeid = text_of(nodeid);
        let done = lock(&self.inner).end_test(&nodeid);
        done.or_raise(py)
    }

    /// Records one phase report. `report` is the serialized pytest report (a dict).
    #[pyo3(signature = (nodeid, phase, outcome, duration_s, report = None))]
    fn phase(
        &self,
        py: Python<'_>,
        nodeid: &Bound<'_, PyString>,
        phase: &Bound<'_, PyString>,
        outcome: &Bound<'_, PyString>,
        duration_s: f64,
        report: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let rec = phase_record(
            nodeid,
            parse_phase(&text_of(phase))?,
            outcome,
            duration_s,
            report,
        );
        self.put(py, &rec)
    }

    #[pyo3(signature = (name, scope, setup, test, duration_s))]
    fn fixture(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyString>,
        scope: &Bound<'_, PyString>,
        setup: bool,
        test: Option<&Bound<'_, PyString>>,
        duration_s: f64,
    ) -> PyResult<()> {
        self.put(
            py,
            &Record::Fixture {
                name: nodeid_of(name),
                scope: nodeid_of(scope),
                setup,
                test: test.map(nodeid_of),
                duration_s,
                mono_ns: now_mono_ns(),
            },
        )
    }

    #[pyo3(signature = (name, test, duration_s))]
    fn timed(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyString>,
        test: Option<&Bound<'_, PyString>>,
        duration_s: f64,
    ) -> PyResult<()> {
        self.put(
            py,
            &Record::Timed {
                name: nodeid_of(name),
                test: test.map(nodeid_of),
                duration_s,
                mono_ns: now_mono_ns(),
            },
        )
    }

    #[pyo3(signature = (test, pid, worker, signal, exit_code, phase, detail))]
    #[allow(clippy::too_many_arguments)]
    fn crash(
        &self,
        py: Python<'_>,
        test: Option<String>,
        pid: u32,
        worker: Option<String>,
        signal: i32,
        exit_code: Option<i32>,
        phase: Option<String>,
        detail: String,
    ) -> PyResult<()> {
        self.put(
            py,
            &Record::Crash {
                test,
                pid,
                worker,
                signal,
                exit_code,
                phase,
                detail,
                wall_ns: now_wall_ns(),
            },
        )
    }

    /// Records how this process ends itself with status `code` (`os._exit`):
    /// `after_report` when a reporting hook ends it after the running test's last report
    /// was made (not a crash); see `Recorder::exit` in core.
    #[pyo3(signature = (code, after_report))]
    fn exit(&self, py: Python<'_>, code: i32, after_report: bool) -> PyResult<()> {
        let done = lock(&self.inner).exit(code, after_report);
        done.or_raise(py)
    }

    #[pyo3(signature = (test, kind, path))]
    fn attachment(
        &self,
        py: Python<'_>,
        test: Option<String>,
        kind: String,
        path: String,
    ) -> PyResult<()> {
        self.put(py, &Record::Attachment { test, kind, path })
    }

    fn run_start(
        &self,
        py: Python<'_>,
        argv: Vec<String>,
        rootdir: String,
        host: String,
    ) -> PyResult<()> {
        self.put(
            py,
            &Record::RunStart {
                argv,
                rootdir,
                host,
                pid: std::process::id(),
                wall_ns: now_wall_ns(),
            },
        )
    }

    /// The session's collection (`Record::Collected`), once per run.
    #[allow(clippy::needless_pass_by_value)] // PyO3 extracts the list into a Vec
    fn collected(&self, py: Python<'_>, nodeids: Vec<PyBackedStr>) -> PyResult<()> {
        let done = lock(&self.inner).collected(&nodeids);
        done.or_raise(py)
    }

    /// This session resumes run `run` as attempt `attempt` (`Record::Resume`).
    fn resume(&self, py: Python<'_>, run: String, attempt: u32, retry: bool) -> PyResult<()> {
        self.put(
            py,
            &Record::Resume {
                run,
                attempt,
                retry,
            },
        )
    }

    fn run_end(&self, py: Python<'_>, exit_status: i32) -> PyResult<()> {
        self.put(
            py,
            &Record::RunEnd {
                exit_status,
                wall_ns: now_wall_ns(),
            },
        )
    }

    fn begin(&self, py: Python<'_>) -> PyResult<()> {
        let done = lock(&self.inner).begin();
        done.or_raise(py)
    }

    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        let done = lock(&self.inner).commit();
        done.or_raise(py)
    }

    fn rollback(&self) {
        lock(&self.inner).rollback();
    }

    /// Marks the segment closed cleanly and releases it: its lock goes with it, so readers
    /// see a finished writer now, not when this object is collected. A later write opens a
    /// new segment.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut r = lock(&self.inner);
        r.close().or_raise(py)?;
        let fresh = Recorder::new(
            r.run_dir().to_owned(),
            r.role(),
            r.worker().map(str::to_owned),
            self.durability,
        );
        *r = fresh;
        Ok(())
    }

    #[getter]
    fn segment_path(&self) -> Option<PathBuf> {
        lock(&self.inner)
            .segment_path()
            .map(std::path::Path::to_owned)
    }

    #[getter]
    fn run_dir(&self) -> PathBuf {
        lock(&self.inner).run_dir().to_owned()
    }

    #[getter]
    fn role(&self) -> &'static str {
        lock(&self.inner).role().as_str()
    }

    #[getter]
    fn worker(&self) -> Option<String> {
        lock(&self.inner).worker().map(str::to_owned)
    }

    #[getter]
    fn current_test(&self) -> Option<String> {
        lock(&self.inner).current_test().map(str::to_owned)
    }

    #[getter]
    fn in_transaction(&self) -> bool {
        lock(&self.inner).in_transaction()
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Verb {
    Set,
    Append,
}

/// How a property record is taken: whether (and for which frame) to warn, and whether a
/// key that is not a str is stored as its str.
#[derive(Clone, Copy)]
pub(crate) struct How {
    /// The `stacklevel` of the warning (1: the caller of the native function); `None`: none.
    pub(crate) warn_at: Option<i32>,
    pub(crate) key_as_str: bool,
}

impl PyRecorder {
    /// One property record of `test`: encoded straight from the caller's objects when they
    /// are plain (see `encode`), through the `Converter` otherwise. Returns the stored plain
    /// value: the caller's own object when it was stored as given.
    pub(crate) fn property<'py>(
        &self,
        py: Python<'py>,
        verb: Verb,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        test: Option<&str>,
        how: How,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(k) = key.cast_exact::<PyString>().ok().and_then(|k| utf8_of(k)) {
            let mut stack = encode::stack();
            let append = matches!(verb, Verb::Append);
            // SAFETY: the GIL is held (`py`) and `value` is alive (a Bound).
            let encoded = unsafe {
                encode::property(&mut stack, append, test, k, value.as_ptr(), now_mono_ns)
            };
            if let Ok(e) = encoded {
                let done = lock(&self.inner).record_encoded(&encode::Bytes(e.out.as_bytes()));
                done.or_raise(py)?;
                if !e.reshaped {
                    return Ok(value.clone());
                }
                // A tuple became a list: hand back what is stored (plain, so no note).
                let v = to_value(py, &String::new, value, &mut Notes::default())?;
                return value_to_py(py, &v);
            }
        }
        let original = value;
        let (key, value, exact) = convert_property(py, key, value, verb, how)?;
        let (test, mono_ns) = (test.map(str::to_owned), now_mono_ns());
        let rec = match verb {
            Verb::Set => Record::PropertySet {
                test,
                key,
                value,
                mono_ns,
            },
            Verb::Append => Record::PropertyAppend {
                test,
                key,
                value,
                mono_ns,
            },
        };
        let done = lock(&self.inner).record(&rec);
        done.or_raise(py)?;
        if exact {
            // Stored as given: hand the caller's own object back, not a rebuilt copy.
            return Ok(original.clone());
        }
        match &rec {
            Record::PropertySet { value, .. } | Record::PropertyAppend { value, .. } => {
                value_to_py(py, value)
            }
            _ => unreachable!(),
        }
    }
}

/// The key and the value of a property record through the `Converter`, with at most one
/// warning for both.
pub(crate) fn convert_property(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    verb: Verb,
    how: How,
) -> PyResult<(String, Value, bool)> {
    let mut notes = Notes::default();
    let key = key_str(py, key, how.key_as_str, &mut notes)?;
    // Formatted only for a warning or an error.
    let what = || match verb {
        Verb::Set => format!("value of {:?}", quote(&key)),
        Verb::Append => format!("value appended to {:?}", quote(&key)),
    };
    let value = to_value(py, &what, value, &mut notes)?;
    if let Some(stacklevel) = how.warn_at {
        warn_notes(py, &what(), &notes, stacklevel)?;
    }
    let exact = notes.is_empty() && !notes.reshaped;
    Ok((key, value, exact))
}

/// A property key: a str as it is; a str subclass as str (noted); anything else is refused
/// with `InvalidKeyError`, or with `key_as_str` (the stock `record_property`, whose name
/// junitxml str()s) stored as its str (noted).
pub(crate) fn key_str(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    key_as_str: bool,
    notes: &mut Notes,
) -> PyResult<String> {
    if let Ok(s) = key.cast_exact::<PyString>() {
        return Ok(str_noted(s, notes));
    }
    let tn = type_name(key);
    if let Ok(s) = key.cast::<PyString>() {
        notes.push(format!("the key ({tn}, a str subclass) stored as str"));
        return Ok(str_noted(s, notes));
    }
    let repr = quote(&repr_of(key));
    if key_as_str {
        let text = key
            .str()
            .map_or_else(|_| repr_of(key), |s| str_noted(&s, notes));
        notes.push(format!(
            "the key {repr} ({tn}, not a str) stored as its str {:?}",
            quote(&text)
        ));
        return Ok(text);
    }
    Err(raise(
        py,
        Class::InvalidKey,
        format!(
            "a property key must be a str, not {tn} ({repr}): pass str(key), or a name, as the key"
        ),
    ))
}
