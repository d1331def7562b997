//! `pytest_blackbox._native`: the Python face of blackbox-core. Conversion and error mapping
//! only; the logic lives in the core crate. Docs live in `_native.pyi`.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use blackbox_core::record::{Phase, Record, Role, Value};
use blackbox_core::{now_mono_ns, now_wall_ns, Aggregate, Durability, Follower, Recorder, Store};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString,
    PyTuple,
};

/// Deeper nesting than this is stored as `repr`.
const MAX_DEPTH: usize = 32;

// ---------------------------------------------------------------------------------------
// Errors: the exception classes live in pytest_blackbox.errors (one tree under
// BlackboxError); this maps core errors onto them.
// ---------------------------------------------------------------------------------------

fn error_class(e: &blackbox_core::Error) -> &'static str {
    use blackbox_core::Error as E;
    match e {
        E::StoreFull { .. } | E::SegmentFull { .. } => "StoreFullError",
        E::RecordTooLarge { .. } => "RecordTooLargeError",
        E::Damaged(_) | E::UnsupportedVersion { .. } => "DamagedStoreError",
        E::NoStore { .. } | E::NoRuns { .. } => "NoStoreError",
        E::NoSuchRun { .. } => "NoSuchRunError",
        E::TransactionOpen => "TransactionError",
        _ => "BlackboxError",
    }
}

fn raise(py: Python<'_>, class: &str, msg: String) -> PyErr {
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

fn map_err(py: Python<'_>, e: &blackbox_core::Error) -> PyErr {
    raise(py, error_class(e), e.to_string())
}

trait OrRaise<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrRaise<T> for blackbox_core::Result<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| map_err(py, &e))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------
// Values: Python -> Value (plain types as they are; others nearest plain type or repr,
// with a note that becomes one warning) and back.
// ---------------------------------------------------------------------------------------

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "object".to_owned(), |n| n.to_string())
}

fn repr_of(obj: &Bound<'_, PyAny>) -> String {
    obj.repr().map_or_else(
        |_| format!("<unrepresentable {}>", type_name(obj)),
        |r| r.to_string(),
    )
}

fn py_str(s: &Bound<'_, PyString>) -> String {
    s.to_cow().map_or_else(
        |_| s.to_string_lossy().into_owned(),
        std::borrow::Cow::into_owned,
    )
}

fn int_value(obj: &Bound<'_, PyAny>) -> Value {
    match obj.extract::<i64>() {
        Ok(i) => Value::Int(i),
        Err(_) => Value::BigInt(obj.str().map_or_else(|_| repr_of(obj), |s| s.to_string())),
    }
}

fn to_value(obj: &Bound<'_, PyAny>, depth: usize, notes: &mut Vec<String>) -> Value {
    // Exact plain types first: the common case, no note.
    if obj.is_none() {
        return Value::None;
    }
    if obj.is_exact_instance_of::<PyBool>() {
        return Value::Bool(obj.is_truthy().unwrap_or(false));
    }
    if obj.is_exact_instance_of::<PyInt>() {
        return int_value(obj);
    }
    if obj.is_exact_instance_of::<PyFloat>() {
        return Value::Float(obj.extract::<f64>().unwrap_or(f64::NAN));
    }
    if let Ok(s) = obj.cast_exact::<PyString>() {
        return Value::Str(py_str(s));
    }
    if let Ok(b) = obj.cast_exact::<PyBytes>() {
        return Value::Bytes(b.as_bytes().to_vec());
    }
    if depth >= MAX_DEPTH {
        notes.push(format!(
            "nesting deeper than {MAX_DEPTH} levels stored as repr"
        ));
        return Value::Str(repr_of(obj));
    }
    if obj.is_exact_instance_of::<PyList>() || obj.is_exact_instance_of::<PyTuple>() {
        return Value::List(seq_values(obj, depth, notes));
    }
    if let Ok(d) = obj.cast_exact::<PyDict>() {
        return dict_value(d, depth, notes);
    }
    // Subclasses and look-alikes: the nearest plain type, noted.
    let tn = type_name(obj);
    let v = if obj.is_instance_of::<PyBool>() {
        Value::Bool(obj.is_truthy().unwrap_or(false))
    } else if obj.is_instance_of::<PyInt>() {
        notes.push(format!("{tn} (an int subclass) stored as int"));
        int_value(obj)
    } else if obj.is_instance_of::<PyFloat>() {
        notes.push(format!("{tn} (a float subclass) stored as float"));
        Value::Float(obj.extract::<f64>().unwrap_or(f64::NAN))
    } else if let Ok(s) = obj.cast::<PyString>() {
        notes.push(format!("{tn} (a str subclass) stored as str"));
        Value::Str(py_str(s))
    } else if let Ok(b) = obj.cast::<PyBytes>() {
        Value::Bytes(b.as_bytes().to_vec())
    } else if let Ok(b) = obj.cast::<PyByteArray>() {
        Value::Bytes(b.to_vec())
    } else if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        notes.push(format!("{tn} stored as list"));
        Value::List(seq_values(obj, depth, notes))
    } else if let Ok(d) = obj.cast::<PyDict>() {
        notes.push(format!("{tn} stored as dict"));
        dict_value(d, depth, notes)
    } else if obj.is_instance_of::<PySet>() || obj.is_instance_of::<PyFrozenSet>() {
        notes.push(format!("{tn} stored as a list sorted by repr"));
        let mut items: Vec<(String, Value)> = obj
            .try_iter()
            .map(|it| {
                it.filter_map(Result::ok)
                    .map(|x| (repr_of(&x), to_value(&x, depth + 1, notes)))
                    .collect()
            })
            .unwrap_or_default();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Value::List(items.into_iter().map(|(_, v)| v).collect())
    } else if obj.hasattr("__index__").unwrap_or(false) {
        match obj.call_method0("__index__") {
            Ok(i) => {
                notes.push(format!("{tn} stored as int"));
                int_value(&i)
            }
            Err(_) => repr_value(obj, &tn, notes),
        }
    } else if obj.hasattr("__float__").unwrap_or(false) {
        match obj
            .call_method0("__float__")
            .and_then(|f| f.extract::<f64>())
        {
            Ok(f) => {
                notes.push(format!("{tn} stored as float"));
                Value::Float(f)
            }
            Err(_) => repr_value(obj, &tn, notes),
        }
    } else {
        repr_value(obj, &tn, notes)
    };
    v
}

fn repr_value(obj: &Bound<'_, PyAny>, tn: &str, notes: &mut Vec<String>) -> Value {
    notes.push(format!("{tn} stored as its repr"));
    Value::Str(repr_of(obj))
}

fn seq_values(obj: &Bound<'_, PyAny>, depth: usize, notes: &mut Vec<String>) -> Vec<Value> {
    obj.try_iter()
        .map(|it| {
            it.filter_map(Result::ok)
                .map(|x| to_value(&x, depth + 1, notes))
                .collect()
        })
        .unwrap_or_default()
}

fn dict_value(d: &Bound<'_, PyDict>, depth: usize, notes: &mut Vec<String>) -> Value {
    let mut pairs = Vec::with_capacity(d.len());
    for (k, v) in d.iter() {
        let key = if let Ok(s) = k.cast_exact::<PyString>() {
            py_str(s)
        } else {
            notes.push(format!("a {} dict key stored as its str", type_name(&k)));
            k.str().map_or_else(|_| repr_of(&k), |s| s.to_string())
        };
        pairs.push((key, to_value(&v, depth + 1, notes)));
    }
    Value::Dict(pairs)
}

fn warning_class(py: Python<'_>) -> Option<Bound<'_, PyAny>> {
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

/// Converts, emitting one warning when anything was not a plain value.
fn convert(py: Python<'_>, what: &str, obj: &Bound<'_, PyAny>, warn: bool) -> PyResult<Value> {
    let mut notes = Vec::new();
    let v = to_value(obj, 0, &mut notes);
    if warn && !notes.is_empty() {
        notes.dedup();
        let more = if notes.len() > 3 {
            format!(" (and {} more)", notes.len() - 3)
        } else {
            String::new()
        };
        let msg = format!(
            "blackbox: {what}: {}{more}",
            notes[..notes.len().min(3)].join("; ")
        );
        if let Some(cls) = warning_class(py) {
            let msg = std::ffi::CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
            PyErr::warn(py, &cls, &msg, 2)?;
        }
    }
    Ok(v)
}

fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::None => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::BigInt(s) => py.get_type::<PyInt>().call1((s.as_str(),))?,
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::List(items) => {
            let l = PyList::empty(py);
            for x in items {
                l.append(value_to_py(py, x)?)?;
            }
            l.into_any()
        }
        Value::Dict(pairs) => {
            let d = PyDict::new(py);
            for (k, x) in pairs {
                d.set_item(k, value_to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => py.None().into_bound(py),
        J::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        J::String(s) => PyString::new(py, s).into_any(),
        J::Array(items) => {
            let l = PyList::empty(py);
            for x in items {
                l.append(json_to_py(py, x)?)?;
            }
            l.into_any()
        }
        J::Object(map) => {
            let d = PyDict::new(py);
            for (k, x) in map {
                d.set_item(k, json_to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

fn parse_role(role: &str) -> PyResult<Role> {
    Role::parse(role).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown role {role:?}: use main, controller, worker, forked or other"
        ))
    })
}

fn parse_durability(d: &str) -> PyResult<Durability> {
    Durability::parse(d).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown durability {d:?}: use \"process\" or \"system\""
        ))
    })
}

fn parse_phase(p: &str) -> PyResult<Phase> {
    Phase::parse(p).ok_or_else(|| {
        PyValueError::new_err(format!("unknown phase {p:?}: use setup, call or teardown"))
    })
}

// ---------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------

#[pyclass(module = "pytest_blackbox._native", name = "Recorder", frozen)]
struct PyRecorder {
    inner: Mutex<Recorder>,
}

impl PyRecorder {
    fn put(&self, py: Python<'_>, rec: &Record) -> PyResult<()> {
        lock(&self.inner).record(rec).or_raise(py)
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
        Ok(PyRecorder {
            inner: Mutex::new(Recorder::new(
                run_dir,
                parse_role(role)?,
                worker,
                parse_durability(durability)?,
            )),
        })
    }

    /// Sets `key` of `test` (the last write wins); returns the stored plain value.
    #[pyo3(signature = (key, value, test = None, warn = true))]
    fn record<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        test: Option<String>,
        warn: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = key_str(py, key)?;
        let v = convert(py, &format!("value of {key:?}"), value, warn)?;
        let rec = Record::PropertySet {
            test,
            key,
            value: v,
            mono_ns: now_mono_ns(),
        };
        self.put(py, &rec)?;
        let Record::PropertySet { value, .. } = &rec else {
            unreachable!()
        };
        value_to_py(py, value)
    }

    /// Appends `value` to the list under `key` of `test`; returns the stored plain value.
    #[pyo3(signature = (key, value, test = None, warn = true))]
    fn append<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        test: Option<String>,
        warn: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = key_str(py, key)?;
        let v = convert(py, &format!("value appended to {key:?}"), value, warn)?;
        let rec = Record::PropertyAppend {
            test,
            key,
            value: v,
            mono_ns: now_mono_ns(),
        };
        self.put(py, &rec)?;
        let Record::PropertyAppend { value, .. } = &rec else {
            unreachable!()
        };
        value_to_py(py, value)
    }

    fn start_test(&self, py: Python<'_>, nodeid: &str) -> PyResult<()> {
        lock(&self.inner).start_test(nodeid).or_raise(py)
    }

    fn end_test(&self, py: Python<'_>, nodeid: &str) -> PyResult<()> {
        lock(&self.inner).end_test(nodeid).or_raise(py)
    }

    /// Records one phase report. `report` is the serialized pytest report (a dict).
    #[pyo3(signature = (nodeid, phase, outcome, duration_s, report = None))]
    fn phase(
        &self,
        py: Python<'_>,
        nodeid: String,
        phase: &str,
        outcome: String,
        duration_s: f64,
        report: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let report = match report {
            Some(r) => Some(convert(py, "report", r, false)?),
            None => None,
        };
        self.put(
            py,
            &Record::TestPhase {
                nodeid,
                phase: parse_phase(phase)?,
                outcome,
                duration_s,
                mono_ns: now_mono_ns(),
                report,
            },
        )
    }

    #[pyo3(signature = (name, scope, setup, test, duration_s))]
    fn fixture(
        &self,
        py: Python<'_>,
        name: String,
        scope: String,
        setup: bool,
        test: Option<String>,
        duration_s: f64,
    ) -> PyResult<()> {
        self.put(
            py,
            &Record::Fixture {
                name,
                scope,
                setup,
                test,
                duration_s,
                mono_ns: now_mono_ns(),
            },
        )
    }

    #[pyo3(signature = (name, test, duration_s))]
    fn timed(
        &self,
        py: Python<'_>,
        name: String,
        test: Option<String>,
        duration_s: f64,
    ) -> PyResult<()> {
        self.put(
            py,
            &Record::Timed {
                name,
                test,
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

    #[pyo3(signature = (test, code))]
    fn exit(&self, py: Python<'_>, test: Option<String>, code: i32) -> PyResult<()> {
        self.put(
            py,
            &Record::Exit {
                test,
                code,
                wall_ns: now_wall_ns(),
            },
        )
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
        lock(&self.inner).begin().or_raise(py)
    }

    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        lock(&self.inner).commit().or_raise(py)
    }

    fn rollback(&self) {
        lock(&self.inner).rollback();
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        lock(&self.inner).close().or_raise(py)
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

fn key_str(py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<String> {
    match key.cast_exact::<PyString>() {
        Ok(s) => Ok(py_str(s)),
        Err(_) => Err(raise(
            py,
            "InvalidKeyError",
            format!(
                "property keys must be str, not {} ({}); pass str(key)",
                type_name(key),
                repr_of(key)
            ),
        )),
    }
}

/// Converts `value` the way `record` stores it, warning once if it was not plain.
#[pyfunction]
#[pyo3(signature = (value, what = "value", warn = true))]
fn to_plain<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
    what: &str,
    warn: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let v = convert(py, what, value, warn)?;
    value_to_py(py, &v)
}

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

struct ReaderState {
    follower: Follower,
    agg: Aggregate,
}

#[pyclass(module = "pytest_blackbox._native", name = "RunReader", frozen)]
struct PyRunReader {
    inner: Mutex<ReaderState>,
    id: String,
    dir: PathBuf,
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
            inner: Mutex::new(ReaderState {
                follower: Follower::new(&id, &run_dir),
                agg: Aggregate::default(),
            }),
            id,
            dir: run_dir,
        }
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
    fn poll(&self, py: Python<'_>) -> u64 {
        py.detach(|| {
            let mut s = lock(&self.inner);
            let before = s.agg.records();
            let ReaderState { follower, agg } = &mut *s;
            follower.poll_into(agg);
            agg.records() - before
        })
    }

    /// The run as a dict (the `blackbox stats --json` schema), after a poll.
    fn view<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let json = py.detach(|| {
            let mut s = lock(&self.inner);
            let ReaderState { follower, agg } = &mut *s;
            follower.view(agg).to_json()
        });
        json_to_py(py, &json)
    }

    /// The merged properties of `nodeid` as (key, value) pairs (no poll).
    fn properties<'py>(
        &self,
        py: Python<'py>,
        nodeid: &str,
    ) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
        let props = lock(&self.inner).agg.properties(nodeid);
        props
            .iter()
            .map(|(k, v)| Ok((k.clone(), value_to_py(py, v)?)))
            .collect()
    }

    /// The recorded phase reports of `nodeid`: (phase, serialized report or None) (no poll).
    fn phase_reports<'py>(
        &self,
        py: Python<'py>,
        nodeid: &str,
    ) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
        let s = lock(&self.inner);
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
    fn fixture_setups(&self) -> u64 {
        lock(&self.inner).agg.fixture_setups()
    }

    /// Every segment's state now: path, pid, role, worker, alive, crash signal, running test.
    fn segments<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let statuses = lock(&self.inner).follower.statuses();
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
fn read_records<'py>(py: Python<'py>, run_dir: PathBuf) -> PyResult<Vec<Bound<'py, PyAny>>> {
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
        if let serde_json::Value::Object(m) = &mut j {
            m.insert("pid".into(), snap.segments[seg].pid.into());
        }
        out.push(json_to_py(py, &j)?);
    }
    Ok(out)
}

/// Creates the store directory if needed and starts a run in it; returns (id, folder).
#[pyfunction]
fn new_run(py: Python<'_>, store_dir: PathBuf) -> PyResult<(String, PathBuf)> {
    let store = Store::create(&store_dir).or_raise(py)?;
    let id = store.new_run().or_raise(py)?;
    let path = store.run_path(&id).or_raise(py)?;
    Ok((id, path))
}

/// The run ids of a store, oldest first.
#[pyfunction]
fn list_runs(py: Python<'_>, store_dir: PathBuf) -> PyResult<Vec<String>> {
    Store::open(&store_dir).and_then(|s| s.runs()).or_raise(py)
}

/// The folder of run `id` of a store.
#[pyfunction]
fn run_path(py: Python<'_>, store_dir: PathBuf, id: &str) -> PyResult<PathBuf> {
    Store::open(&store_dir)
        .and_then(|s| s.run_path(id))
        .or_raise(py)
}

/// Removes all but the newest `keep` run folders (never one with a live writer).
#[pyfunction]
fn prune_runs(py: Python<'_>, store_dir: PathBuf, keep: usize) -> PyResult<Vec<String>> {
    Store::open(&store_dir)
        .and_then(|s| s.prune_runs(keep))
        .or_raise(py)
}

/// Installs the fatal-signal handler that marks this process's segment as crashed.
#[pyfunction]
fn install_crash_handler() -> PyResult<()> {
    blackbox_core::install_crash_handler()
        .map_err(|e| PyValueError::new_err(format!("cannot install the crash handler: {e}")))
}

/// Marks this process's newest segment as crashed by `signal` (what the handler does).
#[pyfunction]
fn mark_crash(signal: i32) -> bool {
    blackbox_core::mark_crash(signal)
}

/// `SIGSEGV` for 11 and so on.
#[pyfunction]
fn signal_name(signal: i32) -> String {
    blackbox_core::signal_name(signal)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("FORMAT_VERSION", blackbox_core::segment::FORMAT_VERSION)?;
    m.add_class::<PyRecorder>()?;
    m.add_class::<PyRunReader>()?;
    m.add_function(wrap_pyfunction!(to_plain, m)?)?;
    m.add_function(wrap_pyfunction!(read_records, m)?)?;
    m.add_function(wrap_pyfunction!(new_run, m)?)?;
    m.add_function(wrap_pyfunction!(list_runs, m)?)?;
    m.add_function(wrap_pyfunction!(run_path, m)?)?;
    m.add_function(wrap_pyfunction!(prune_runs, m)?)?;
    m.add_function(wrap_pyfunction!(install_crash_handler, m)?)?;
    m.add_function(wrap_pyfunction!(mark_crash, m)?)?;
    m.add_function(wrap_pyfunction!(signal_name, m)?)?;
    Ok(())
}
