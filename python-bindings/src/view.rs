//! Core values and views -> Python objects (the reading side's conversion).

use blackbox_core::{Phase, Value};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use std::sync::{Arc, Mutex};

pub(crate) fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    value_keyed(py, v, &mut None)
}

/// Dict keys as Python strs, each made once for a view: a run's tests record the same few
/// keys, which would otherwise be new strs each time (60,000 for 20,000 tests of one
/// `{"value", "ok"}` property). Up to [`Keys::MAX`] keys, found by a scan.
#[derive(Default)]
pub(crate) struct Keys(Vec<(Box<str>, Py<PyString>)>);

impl Keys {
    const MAX: usize = 16;

    fn get<'py>(keys: &mut Option<&mut Keys>, py: Python<'py>, k: &str) -> Bound<'py, PyString> {
        let Some(keys) = keys else {
            return PyString::new(py, k);
        };
        if let Some((_, s)) = keys.0.iter().find(|(x, _)| **x == *k) {
            return s.bind(py).clone();
        }
        let s = PyString::new(py, k);
        if keys.0.len() < Self::MAX {
            keys.0.push((k.into(), s.clone().unbind()));
        }
        s
    }
}

/// `value_to_py`, dict keys from `keys` when given.
fn value_keyed<'py>(
    py: Python<'py>,
    v: &Value,
    keys: &mut Option<&mut Keys>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::None => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        // Past this interpreter's int-to-str digit limit it stays a str.
        Value::BigInt(s) => py
            .get_type::<PyInt>()
            .call1((s.as_str(),))
            .unwrap_or_else(|_| PyString::new(py, s).into_any()),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::List(items) => {
            let l = PyList::empty(py);
            for x in items {
                l.append(value_keyed(py, x, keys)?)?;
            }
            l.into_any()
        }
        Value::Dict(pairs) => {
            let d = PyDict::new(py);
            for (k, x) in pairs {
                d.set_item(Keys::get(keys, py, k), value_keyed(py, x, keys)?)?;
            }
            d.into_any()
        }
    })
}

pub(crate) fn json_to_py<'py>(
    py: Python<'py>,
    v: &serde_json::Value,
) -> PyResult<Bound<'py, PyAny>> {
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

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

/// Runs `f` with the cyclic GC paused. A view builds hundreds of thousands of dicts and
/// lists, none of which can be part of a cycle; each would bump the GC's counters and set
/// off full collections over everything built so far.
pub(crate) fn gc_paused<T>(py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    let gc = py.import("gc")?;
    let was_on = gc.call_method0("isenabled")?.is_truthy()?;
    if was_on {
        gc.call_method0("disable")?;
    }
    let out = f();
    if was_on {
        gc.call_method0("enable")?;
    }
    out
}

// The view straight into Python objects, in the schema, key order and values of
// `RunView::to_json` + `json_to_py`: no serde_json tree in between, which cost as much as
// the view itself and doubled its peak memory. Keys go in sorted, as serde_json's map
// has them; key strings are interned.

/// A float as `to_json` gives it: non-finite is null.
pub(crate) fn json_f64(py: Python<'_>, f: f64) -> Bound<'_, PyAny> {
    if f.is_finite() {
        PyFloat::new(py, f).into_any()
    } else {
        py.None().into_bound(py)
    }
}

/// `Value::to_json` as Python: bytes as a list of ints, a non-finite float or a big int as
/// its one-key object (`{"$float": "nan"}`, `{"$int": "<digits>"}`), dict keys sorted (of
/// two equal keys the later wins).
fn value_json_keyed<'py>(
    py: Python<'py>,
    v: &Value,
    keys: &mut Option<&mut Keys>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some((tag, text)) = v.json_tagged() {
        let d = PyDict::new(py);
        d.set_item(tag, text.as_ref())?;
        return Ok(d.into_any());
    }
    Ok(match v {
        Value::Bytes(b) => PyList::new(py, b.iter().copied())?.into_any(),
        Value::List(items) => {
            let l = PyList::empty(py);
            for x in items {
                l.append(value_json_keyed(py, x, keys)?)?;
            }
            l.into_any()
        }
        Value::Dict(pairs) => props_json_keyed(py, pairs, keys)?.into_any(),
        other => value_keyed(py, other, keys)?,
    })
}

pub(crate) fn props_json_py<'py>(
    py: Python<'py>,
    pairs: &[(String, Value)],
) -> PyResult<Bound<'py, PyDict>> {
    props_json_keyed(py, pairs, &mut None)
}

fn props_json_keyed<'py>(
    py: Python<'py>,
    pairs: &[(String, Value)],
    keys: &mut Option<&mut Keys>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    if let [(k, x)] = pairs {
        // Most tests record one key or none: no sort needed.
        d.set_item(Keys::get(keys, py, k), value_json_keyed(py, x, keys)?)?;
        return Ok(d);
    }
    let mut sorted: Vec<&(String, Value)> = pairs.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0)); // stable: the later of two equal keys is set last
    for (k, x) in sorted {
        d.set_item(Keys::get(keys, py, k), value_json_keyed(py, x, keys)?)?;
    }
    Ok(d)
}

pub(crate) fn fixtures_py<'py>(
    py: Python<'py>,
    list: &[blackbox_core::FixtureStats],
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for f in list {
        let d = PyDict::new(py);
        d.set_item(intern!(py, "max_s"), json_f64(py, f.max_s))?;
        d.set_item(intern!(py, "mean_s"), json_f64(py, f.mean_s))?;
        d.set_item(intern!(py, "name"), &f.name)?;
        d.set_item(intern!(py, "scope"), &f.scope)?;
        d.set_item(intern!(py, "setups"), f.setups)?;
        d.set_item(
            intern!(py, "teardown_total_s"),
            json_f64(py, f.teardown_total_s),
        )?;
        d.set_item(intern!(py, "teardowns"), f.teardowns)?;
        d.set_item(intern!(py, "total_s"), json_f64(py, f.total_s))?;
        out.append(d)?;
    }
    Ok(out)
}

pub(crate) fn test_py<'py>(
    py: Python<'py>,
    t: &blackbox_core::TestView,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "attempt"), t.attempt)?;
    d.set_item(intern!(py, "crashed"), t.crashed)?;
    d.set_item(intern!(py, "duration_s"), json_f64(py, t.duration_s))?;
    d.set_item(intern!(py, "nodeid"), &t.nodeid)?;
    d.set_item(intern!(py, "outcome"), outcome_str(py, &t.outcome))?;
    d.set_item(intern!(py, "phases"), phases_py(py, t)?)?;
    d.set_item(intern!(py, "pid"), t.pid)?;
    d.set_item(intern!(py, "properties"), props_json_py(py, &t.properties)?)?;
    d.set_item(intern!(py, "signal"), t.signal)?;
    d.set_item(
        intern!(py, "signal_name"),
        t.signal.map(blackbox_core::signal_name),
    )?;
    d.set_item(intern!(py, "timeout"), timeout_py(py, t.timeout.as_ref())?)?;
    d.set_item(intern!(py, "worker"), &t.worker)?;
    Ok(d)
}

/// A test's `phases`, as in its JSON.
fn phases_py<'py>(py: Python<'py>, t: &blackbox_core::TestView) -> PyResult<Bound<'py, PyList>> {
    let phases = PyList::empty(py);
    for p in &t.phases {
        let pd = PyDict::new(py);
        pd.set_item(intern!(py, "duration_s"), json_f64(py, p.duration_s))?;
        pd.set_item(intern!(py, "outcome"), outcome_str(py, &p.outcome))?;
        pd.set_item(intern!(py, "phase"), phase_str(py, p.phase))?;
        phases.append(pd)?;
    }
    Ok(phases)
}

/// A run's view as read (`RunReader.read()`), kept native: Python asks for its parts.
#[pyclass(module = "pytest_blackbox._native", name = "RunView", frozen)]
pub(crate) struct PyRunView {
    data: Arc<ViewData>,
}

/// What a `RunView` and each of its tests share.
struct ViewData {
    view: blackbox_core::RunView,
    index: blackbox_core::TestsByNodeid,
    /// Strs, which refer to nothing: a test still cannot be part of a cycle.
    keys: Mutex<Keys>,
}

impl ViewData {
    /// `f` with this view's keys (none if another thread holds them: a new str each).
    fn with_keys<T>(&self, f: impl FnOnce(&mut Option<&mut Keys>) -> T) -> T {
        match self.keys.try_lock() {
            Ok(mut keys) => f(&mut Some(&mut keys)),
            Err(_) => f(&mut None),
        }
    }
}

impl ViewData {
    fn test(&self, nodeid: &str) -> Option<&blackbox_core::TestView> {
        self.index
            .get(&self.view.tests, nodeid)
            .map(|i| &self.view.tests[i])
    }
}

impl PyRunView {
    /// Builds the index too: call it without the GIL.
    pub(crate) fn new(view: blackbox_core::RunView) -> Self {
        PyRunView {
            data: Arc::new(ViewData {
                index: view.tests_by_nodeid(),
                view,
                keys: Mutex::default(),
            }),
        }
    }
}

#[pymethods]
impl PyRunView {
    /// How many tests.
    #[getter]
    fn test_count(&self) -> usize {
        self.data.view.tests.len()
    }

    /// `RunReader.view()` without `tests`.
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        view_dict(py, &self.data.view, None, false)
    }

    /// Each test as a `_native.TestInfo` (`PyTest`), in the view's order; `cls` is the
    /// dataclass they stand for (`store.TestInfo`).
    fn tests<'py>(&self, py: Python<'py>, cls: Bound<'py, PyType>) -> PyResult<Bound<'py, PyList>> {
        TEST_INFO_CLASS.get_or_init(py, || cls.unbind());
        PyTest::dataclass_fields(py)?;
        let out = PyList::empty(py);
        for i in 0..self.data.view.tests.len() {
            out.append(PyTest::new(py, &self.data, i)?)?;
        }
        Ok(out)
    }

    /// Each test's whole dict, as `RunReader.view()["tests"]` has it (the GC paused).
    fn test_dicts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        gc_paused(py, || {
            let out = PyList::empty(py);
            for t in &self.data.view.tests {
                out.append(test_py(py, t)?)?;
            }
            Ok(out)
        })
    }

    /// The exact properties of test `nodeid` as a dict (`RunReader.properties_dict`, as of
    /// this view); `None` when the view has no test `nodeid`.
    fn properties<'py>(
        &self,
        py: Python<'py>,
        nodeid: &str,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(t) = self.data.test(nodeid) else {
            return Ok(None);
        };
        self.data.with_keys(|keys| {
            let d = PyDict::new(py);
            for (k, v) in &t.properties {
                d.set_item(Keys::get(keys, py, k), value_keyed(py, v, keys)?)?;
            }
            Ok(Some(d))
        })
    }
}

/// One test of a `RunView`: a `store.TestInfo` to its readers (its `__class__`, so
/// `isinstance`, `dataclasses.asdict`/`replace`, `==`, `repr`, copy and pickle answer as
/// for the dataclass), its fields converted from the view on each use.
///
/// It holds no Python object but strs (which refer to nothing), only the view (Rust) and
/// its index in it, and it is frozen with no `__dict__`: no reference cycle can pass
/// through it, so it is left out of the cyclic GC, as `CPython` leaves out a tuple of
/// ints. `PyO3` gives every pyclass `Py_TPFLAGS_HAVE_GC`; tracked, the 20,000 tests of a
/// run set off collections over all of them (`benches/python/read_path.py`, 2b).
#[pyclass(module = "pytest_blackbox._native", name = "TestInfo", frozen)]
pub(crate) struct PyTest {
    data: Arc<ViewData>,
    i: usize,
    /// Made on first use (a str: it refers to nothing).
    nodeid: PyOnceLock<Py<PyString>>,
}

/// `pytest_blackbox.store.TestInfo`, the dataclass a `PyTest` stands for: handed over by
/// the first `RunView.tests(cls)` (Rust imports nothing of the package).
static TEST_INFO_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn test_info_class(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    TEST_INFO_CLASS.get(py).map(|c| c.bind(py)).ok_or_else(|| {
        crate::errors::raise(
            py,
            crate::errors::Class::Base,
            "RunView.tests(cls) was never given the TestInfo class (a bug)".to_string(),
        )
    })
}

impl PyTest {
    fn new<'py>(py: Python<'py>, data: &Arc<ViewData>, i: usize) -> PyResult<Bound<'py, PyTest>> {
        let obj = Bound::new(
            py,
            PyTest {
                data: Arc::clone(data),
                i,
                nodeid: PyOnceLock::new(),
            },
        )?;
        // SAFETY: the GIL is held and `obj` is a new object no one else has seen; it
        // refers to no Python object (see `PyTest`), so no cycle can go through it.
        unsafe { pyo3::ffi::PyObject_GC_UnTrack(obj.as_ptr().cast()) };
        Ok(obj)
    }

    /// Gives the type the dataclass's `__dataclass_fields__` (and `__dataclass_params__`,
    /// `__match_args__`) once: what `dataclasses.fields`, `asdict` and `replace` read.
    fn dataclass_fields(py: Python<'_>) -> PyResult<()> {
        static DONE: PyOnceLock<()> = PyOnceLock::new();
        DONE.get_or_try_init(py, || {
            let ty = py.get_type::<PyTest>();
            let cls = test_info_class(py)?;
            for name in [
                intern!(py, "__dataclass_fields__"),
                intern!(py, "__dataclass_params__"),
                intern!(py, "__match_args__"),
            ] {
                ty.setattr(name, cls.getattr(name)?)?;
            }
            Ok::<_, PyErr>(())
        })?;
        Ok(())
    }

    fn t(&self) -> &blackbox_core::TestView {
        &self.data.view.tests[self.i]
    }
}

/// `dataclasses.FrozenInstanceError(msg)`.
fn frozen_error(py: Python<'_>, msg: String) -> PyErr {
    match py
        .import(intern!(py, "dataclasses"))
        .and_then(|m| m.getattr(intern!(py, "FrozenInstanceError")))
        .and_then(|cls| cls.call1((msg,)))
    {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

#[pymethods]
impl PyTest {
    #[getter]
    fn nodeid<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        self.nodeid
            .get_or_init(py, || PyString::new(py, &self.t().nodeid).unbind())
            .bind(py)
            .clone()
    }

    #[getter]
    fn outcome<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        outcome_str(py, &self.t().outcome)
    }

    #[getter]
    fn duration_s<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        json_f64(py, self.t().duration_s)
    }

    #[getter]
    fn worker(&self) -> Option<&str> {
        self.t().worker.as_deref()
    }

    #[getter]
    fn pid(&self) -> Option<u32> {
        self.t().pid
    }

    #[getter]
    fn crashed(&self) -> bool {
        self.t().crashed
    }

    #[getter]
    fn signal(&self) -> Option<i32> {
        self.t().signal
    }

    #[getter]
    fn signal_name(&self) -> Option<String> {
        self.t().signal.map(blackbox_core::signal_name)
    }

    /// A new list each time (the test refers to no Python container).
    #[getter]
    fn phases<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        phases_py(py, self.t())
    }

    /// A new dict each time, as in the JSON view.
    #[getter]
    fn properties<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.data
            .with_keys(|keys| props_json_keyed(py, &self.t().properties, keys))
    }

    #[getter]
    fn timeout<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        timeout_py(py, self.t().timeout.as_ref())
    }

    #[getter]
    fn attempt(&self) -> u32 {
        self.t().attempt
    }

    /// `TestInfo.not_finished`.
    #[getter]
    fn not_finished(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let prop = test_info_class(py)?.getattr(intern!(py, "not_finished"))?;
        prop.getattr(intern!(py, "fget"))?
            .call1((slf,))?
            .is_truthy()
    }

    /// `store.TestInfo`: what it stands for.
    #[getter(__class__)]
    fn class<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyType>> {
        test_info_class(slf.py()).cloned()
    }

    /// Its fields as a new dict, as `vars()` of the dataclass gives them.
    #[getter(__dict__)]
    fn fields_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        let d = PyDict::new(py);
        for name in test_info_class(py)?
            .getattr(intern!(py, "__dataclass_fields__"))?
            .try_iter()?
        {
            let name = name?;
            d.set_item(&name, slf.getattr(name.cast::<PyString>()?)?)?;
        }
        Ok(d)
    }

    fn __repr__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        test_info_class(slf.py())?
            .getattr(intern!(slf.py(), "__repr__"))?
            .call1((slf,))
    }

    fn __richcmp__<'py>(
        slf: &Bound<'py, Self>,
        other: &Bound<'py, PyAny>,
        op: pyo3::basic::CompareOp,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let name = match op {
            pyo3::basic::CompareOp::Eq => intern!(py, "__eq__"),
            pyo3::basic::CompareOp::Ne => intern!(py, "__ne__"),
            _ => return Ok(py.NotImplemented().into_bound(py)),
        };
        test_info_class(py)?.getattr(name)?.call1((slf, other))
    }

    fn __hash__(slf: &Bound<'_, Self>) -> PyResult<isize> {
        let py = slf.py();
        test_info_class(py)?
            .getattr(intern!(py, "__hash__"))?
            .call1((slf,))?
            .extract()
    }

    /// Pickled and copied as the dataclass: `TestInfo(*fields)`.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let cls = test_info_class(py)?;
        let dict = Self::fields_dict(slf)?;
        let args = PyTuple::new(py, dict.values())?;
        PyTuple::new(py, [cls.clone().into_any(), args.into_any()])
    }

    fn __setattr__(slf: &Bound<'_, Self>, name: &str, _value: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(frozen_error(
            slf.py(),
            format!("cannot assign to field '{name}'"),
        ))
    }

    fn __delattr__(slf: &Bound<'_, Self>, name: &str) -> PyResult<()> {
        Err(frozen_error(
            slf.py(),
            format!("cannot delete field '{name}'"),
        ))
    }
}

/// A test's or a crash's `timeout`, as its JSON (docs/cli.md), or None.
pub(crate) fn timeout_py<'py>(
    py: Python<'py>,
    t: Option<&blackbox_core::TimeoutView>,
) -> PyResult<Bound<'py, PyAny>> {
    t.map_or_else(
        || Ok(py.None().into_bound(py)),
        |t| json_to_py(py, &t.to_json()),
    )
}

/// An outcome as a Python str: the common ones interned (one object for 20,000 tests).
pub(crate) fn outcome_str<'py>(py: Python<'py>, o: &str) -> Bound<'py, PyString> {
    match o {
        "passed" => intern!(py, "passed").clone(),
        "failed" => intern!(py, "failed").clone(),
        "skipped" => intern!(py, "skipped").clone(),
        "error" => intern!(py, "error").clone(),
        "crashed" => intern!(py, "crashed").clone(),
        "not-run" => intern!(py, "not-run").clone(),
        "unknown" => intern!(py, "unknown").clone(),
        other => PyString::new(py, other),
    }
}

pub(crate) fn phase_str(py: Python<'_>, p: Phase) -> &Bound<'_, PyString> {
    match p {
        Phase::Setup => pyo3::intern!(py, "setup"),
        Phase::Call => pyo3::intern!(py, "call"),
        Phase::Teardown => pyo3::intern!(py, "teardown"),
    }
}

/// `v.to_json()` as Python; with `brief = Some(n)`, `brief()`'s form instead: no `tests`
/// but `test_count` and `outcomes` (tests by outcome), at most `n` fixtures and timed names.
pub(crate) fn view_to_py<'py>(
    py: Python<'py>,
    v: &blackbox_core::RunView,
    brief: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    view_dict(py, v, brief, brief.is_none())
}

/// `view_to_py`; with `tests` false, without `tests` (`RunView.summary`).
fn view_dict<'py>(
    py: Python<'py>,
    v: &blackbox_core::RunView,
    brief: Option<usize>,
    tests: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    let crashes = PyList::empty(py);
    for c in &v.crashes {
        let d = PyDict::new(py);
        d.set_item(intern!(py, "attachments"), &c.attachments)?;
        d.set_item(intern!(py, "detail"), &c.detail)?;
        d.set_item(intern!(py, "exit_code"), c.exit_code)?;
        d.set_item(intern!(py, "nodeid"), &c.nodeid)?;
        d.set_item(intern!(py, "phase"), &c.phase)?;
        d.set_item(intern!(py, "pid"), c.pid)?;
        d.set_item(intern!(py, "signal"), c.signal)?;
        d.set_item(
            intern!(py, "signal_name"),
            c.signal.map(blackbox_core::signal_name),
        )?;
        d.set_item(intern!(py, "worker"), &c.worker)?;
        d.set_item(intern!(py, "timeout"), timeout_py(py, c.timeout.as_ref())?)?;
        d.set_item(intern!(py, "kind"), &c.kind)?;
        d.set_item(intern!(py, "devices"), pairs_dict(py, &c.devices)?)?;
        crashes.append(d)?;
    }
    out.set_item(intern!(py, "crashes"), crashes)?;
    let exits = PyList::empty(py);
    for e in &v.exits {
        let d = PyDict::new(py);
        d.set_item(intern!(py, "nodeid"), &e.nodeid)?;
        d.set_item(intern!(py, "phase"), e.phase.map(Phase::as_str))?;
        d.set_item(intern!(py, "code"), e.code)?;
        d.set_item(intern!(py, "worker"), &e.worker)?;
        d.set_item(intern!(py, "pid"), e.pid)?;
        exits.append(d)?;
    }
    out.set_item(intern!(py, "exits"), exits)?;
    let cut = |n: usize| brief.map_or(n, |b| b.min(n));
    if let Some(n) = brief {
        // The summary's "slowest fixtures": pytest's own left out (blackbox_core::stock).
        let test_time = blackbox_core::test_time(v);
        let shown: Vec<blackbox_core::FixtureStats> = v
            .fixtures
            .iter()
            .filter(|f| blackbox_core::is_shown(f, test_time, false))
            .take(n)
            .cloned()
            .collect();
        out.set_item(intern!(py, "fixtures"), fixtures_py(py, &shown)?)?;
    } else {
        out.set_item(intern!(py, "fixtures"), fixtures_py(py, &v.fixtures)?)?;
    }
    if brief.is_some() {
        let mut outcomes: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for t in &v.tests {
            *outcomes.entry(t.outcome.as_str()).or_default() += 1;
        }
        out.set_item(intern!(py, "outcomes"), outcomes)?;
    }
    out.set_item(intern!(py, "problems"), &v.problems)?;
    let run = PyDict::new(py);
    let r = &v.run;
    run.set_item(intern!(py, "argv"), &r.argv)?;
    run.set_item(intern!(py, "attempt"), r.attempt)?;
    run.set_item(intern!(py, "collected"), v.collected)?;
    run.set_item(intern!(py, "resumes"), &r.resumes)?;
    run.set_item(intern!(py, "retry"), r.retry)?;
    #[allow(clippy::cast_precision_loss)] // as to_json: wall clock ns to s
    let secs = |ns: Option<u64>| ns.map(|n| n as f64 / 1e9);
    run.set_item(intern!(py, "ended"), secs(r.ended_wall_ns))?;
    run.set_item(intern!(py, "exit_status"), r.exit_status)?;
    run.set_item(intern!(py, "host"), &r.host)?;
    run.set_item(intern!(py, "id"), &r.id)?;
    run.set_item(intern!(py, "live"), r.live)?;
    run.set_item(intern!(py, "pid"), r.pid)?;
    run.set_item(intern!(py, "records"), v.records)?;
    run.set_item(intern!(py, "rootdir"), &r.rootdir)?;
    run.set_item(intern!(py, "segments"), v.segments)?;
    run.set_item(intern!(py, "started"), secs(r.started_wall_ns))?;
    out.set_item(intern!(py, "run"), run)?;
    if brief.is_some() {
        out.set_item(intern!(py, "test_count"), v.tests.len())?;
    } else if tests {
        let tests = PyList::empty(py);
        for t in &v.tests {
            tests.append(test_py(py, t)?)?;
        }
        out.set_item(intern!(py, "tests"), tests)?;
    }
    out.set_item(
        intern!(py, "timed"),
        fixtures_py(py, &v.timed[..cut(v.timed.len())])?,
    )?;
    let workers = PyList::empty(py);
    for w in &v.workers {
        let d = PyDict::new(py);
        d.set_item(intern!(py, "alive"), w.alive)?;
        d.set_item(intern!(py, "crashes"), w.crashes)?;
        d.set_item(intern!(py, "forked"), w.forked)?;
        d.set_item(intern!(py, "id"), &w.id)?;
        d.set_item(intern!(py, "pids"), &w.pids)?;
        d.set_item(intern!(py, "tests"), w.tests)?;
        d.set_item(intern!(py, "devices"), pairs_dict(py, &w.devices)?)?;
        workers.append(d)?;
    }
    out.set_item(intern!(py, "workers"), workers)?;
    Ok(out)
}

pub(crate) fn pairs_dict<'py>(
    py: Python<'py>,
    pairs: &[(String, String)],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in pairs {
        d.set_item(k, v)?;
    }
    Ok(d)
}
