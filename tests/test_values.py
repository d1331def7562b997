"""Values that are not plain, through every way a test records one, in every mode.

Each value goes through ``pytest_blackbox.record``, ``append``, the ``blackbox`` fixture
(``record`` and ``append``) and the stock ``record_property``, in a real pytest session:
plain, ``-n 2`` and ``--forked``. Inside the session each call must give exactly one
``BlackboxWarning`` (none for a plain value) pointing at the caller; outside, the store must
hold the converted value and the JUnit XML (written by the xdist controller under ``-n 2``)
must carry it. No INTERNALERROR, no test reported as crashed that did not crash. Sessions
run with ``-W error``, so a stray warning from the plugin fails them.
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import pytest_blackbox
from pytest_blackbox import _native

#: Shared by the session's test file and these checks: how to make each value, and how many
#: warnings one call with it gives.
CASES_SRC = '''
import math


class FloatSub(float):
    pass


class NumpyLike:
    """A numpy scalar as far as conversion can tell: only __float__."""

    def __float__(self):
        return 1.5

    def __repr__(self):
        return "np.float64(1.5)"


class ArrayLike:
    """A numpy array: __array__ and tolist()."""

    def __array__(self):
        raise AssertionError("not called")

    def tolist(self):
        return [1.0, 2.0]


class Thing:
    def __repr__(self):
        return "<Thing #7>"


class StrSub(str):
    pass


def recursive_list():
    items = [1]
    items.append(items)
    return items


BIG_STR = 10 * 1024 * 1024

MAKERS = {
    "float_subclass": lambda: FloatSub(2.5),
    "numpy_like": NumpyLike,
    "array_like": ArrayLike,
    "set": lambda: {3, 1, 2},
    "object": Thing,
    "big_str": lambda: "x" * BIG_STR,
    "str_subclass": lambda: StrSub("hi"),
    "recursive_list": recursive_list,
    "tuple_keys": lambda: {(1, 2): "a", "b": 2},
    "bool": lambda: True,
    "int": lambda: -7,
    "nan": lambda: math.nan,
    "inf": lambda: -math.inf,
    "bytes": lambda: b"\\x00\\xff",
    "huge_int": lambda: 2**100,
    "tuple": lambda: (1, "a"),
}
PLAIN = {"big_str", "bool", "int", "nan", "inf", "bytes", "huge_int", "tuple"}
WARNINGS = {case: 0 if case in PLAIN else 1 for case in MAKERS}
CASES = list(MAKERS)
'''

#: What the store holds for each case (append: a one-item list of it).
EXPECTED: dict[str, Any] = {
    "float_subclass": 2.5,
    "numpy_like": 1.5,
    "array_like": [1.0, 2.0],
    "set": [1, 2, 3],
    "object": "<Thing #7>",
    "big_str": "x" * (10 * 1024 * 1024),
    "str_subclass": "hi",
    "recursive_list": [1, "[...]"],
    "tuple_keys": {"(1, 2)": "a", "b": 2},
    "bool": True,
    "int": -7,
    "nan": math.nan,
    "inf": -math.inf,
    "bytes": b"\x00\xff",
    "huge_int": 2**100,
    "tuple": [1, "a"],
}

SESSION_TESTS = (
    CASES_SRC
    + '''

import os
import warnings

import pytest

import pytest_blackbox
from pytest_blackbox import BlackboxError, InvalidKeyError, RecordTooLargeError


def one_call(call, key, value, warnings_expected):
    """Call, and check it gave exactly the expected BlackboxWarnings, from this file."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call(key, value)
    got = [(w.category.__name__, os.path.basename(w.filename), str(w.message)) for w in caught]
    assert len(got) == warnings_expected, got
    for category, filename, message in got:
        assert category == "BlackboxWarning", got
        assert filename == os.path.basename(__file__), got
        assert message.startswith("blackbox: "), got


@pytest.mark.parametrize("case", CASES)
def test_record(case):
    one_call(pytest_blackbox.record, case, MAKERS[case](), WARNINGS[case])


@pytest.mark.parametrize("case", CASES)
def test_append(case):
    one_call(pytest_blackbox.append, case, MAKERS[case](), WARNINGS[case])


@pytest.mark.parametrize("case", CASES)
def test_fixture_record(case, blackbox):
    one_call(blackbox.record, case, MAKERS[case](), WARNINGS[case])


@pytest.mark.parametrize("case", CASES)
def test_fixture_append(case, blackbox):
    one_call(blackbox.append, case, MAKERS[case](), WARNINGS[case])


@pytest.mark.parametrize("case", CASES)
def test_record_property(case, record_property):
    one_call(record_property, case, MAKERS[case](), WARNINGS[case])


def test_record_property_non_str_name(record_property):
    one_call(record_property, 7, "plain", 1)


APIS = ["record", "append", "fixture_record", "fixture_append", "record_property"]


def api(name, blackbox, record_property):
    return {
        "record": pytest_blackbox.record,
        "append": pytest_blackbox.append,
        "fixture_record": blackbox.record,
        "fixture_append": blackbox.append,
        "record_property": record_property,
    }[name]


@pytest.mark.parametrize("name", APIS[:4])
def test_non_str_key_is_refused(name, blackbox, record_property):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InvalidKeyError, match=r"must be a str, not tuple .*pass str\\(key\\)"):
            api(name, blackbox, record_property)(("a", 1), "value")
    assert caught == []
    assert issubclass(InvalidKeyError, BlackboxError)


@pytest.mark.parametrize("name", APIS)
def test_too_large_is_refused(name, blackbox, record_property):
    with pytest.raises(RecordTooLargeError, match="store large data in a file"):
        api(name, blackbox, record_property)("too_large", "x" * (65 << 20))
    assert issubclass(RecordTooLargeError, BlackboxError)


def test_crash_after_bad_values(blackbox, record_property):
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        pytest_blackbox.record("crash_set", {3, 1, 2})
        pytest_blackbox.append("crash_float", FloatSub(2.5))
        blackbox.record("crash_object", Thing())
        record_property("crash_numpy", NumpyLike())
    os.abort()
'''
)

CRASH_PROPERTIES = {
    "crash_set": [1, 2, 3],
    "crash_float": [2.5],
    "crash_object": "<Thing #7>",
    "crash_numpy": 1.5,
}

API_KEYS = {
    "test_record": lambda v: v,
    "test_append": lambda v: [v],
    "test_fixture_record": lambda v: v,
    "test_fixture_append": lambda v: [v],
    "test_record_property": lambda v: v,
}

MODES = {
    "plain": [],
    "xdist": ["-n", "2"],
    "forked": ["--forked"],
}


def same(a: Any, b: Any) -> bool:
    """Equal, of the same types all the way down, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def describe(v: Any) -> str:
    s = repr(v)
    return s if len(s) < 80 else f"{s[:60]}... ({len(s)} chars)"


def junit_properties(path: Path) -> dict[str, dict[str, str]]:
    """testcase name -> {property name: value} of a JUnit XML file."""
    out: dict[str, dict[str, str]] = {}
    # One feed: expat re-scans a 10 MB attribute at every 64 KiB chunk of ET.parse.
    for case in ET.fromstring(path.read_bytes()).iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        out[case.get("name", "")] = props
    return out


def run_session(
    pytester: pytest.Pytester, args: list[str], source: str
) -> tuple[pytest.RunResult, Path, Path]:
    pytester.makepyfile(test_session=source)
    store = pytester.path / "store"
    xml = pytester.path / "junit.xml"
    # pytest-forked 1.7.5 leaks its own stdout/stderr files in each child: under -W error
    # every forked test errors on that ResourceWarning, so --forked gets our warnings only.
    errors = "pytest_blackbox.BlackboxWarning" if "--forked" in args else "error"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-W",
        errors if errors == "error" else f"error::{errors}",
        "-o",
        "junit_family=xunit1",
        f"--junit-xml={xml}",
        f"--blackbox-dir={store}",
        *args,
        timeout=300,
    )
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output, output[-4000:]
    return result, store, xml


@pytest.mark.parametrize("mode", list(MODES))
def test_values_are_stored_converted_with_one_warning_per_call(
    pytester: pytest.Pytester, mode: str
) -> None:
    args = MODES[mode]
    if mode == "plain":
        args = [*args, "-k", "not crash"]  # os.abort() would end the whole session
    result, store, xml = run_session(pytester, args, SESSION_TESTS)
    crashes = 0 if mode == "plain" else 1
    n_cases = len(EXPECTED)
    passed = 5 * n_cases + 1 + 4 + 5
    result.assert_outcomes(passed=passed, failed=crashes)
    assert result.ret == (1 if crashes else 0)

    run = pytest_blackbox.Store(store).latest()
    crashed = sorted(t.nodeid for t in run.tests if t.crashed)
    assert crashed == (["test_session.py::test_crash_after_bad_values"] if crashes else [])
    assert len(run.crashes) == crashes
    junit = junit_properties(xml)

    wrong = []
    for func, wrap in API_KEYS.items():
        for case, value in EXPECTED.items():
            nodeid = f"test_session.py::{func}[{case}]"
            want = wrap(value)
            stored = run.properties(nodeid)
            if set(stored) != {case} or not same(stored[case], want):
                wrong.append(f"store {nodeid}: {describe(stored)} != {describe(want)}")
            in_xml = junit[f"{func}[{case}]"]
            if in_xml != {case: str(want)}:
                wrong.append(f"junit {nodeid}: {describe(in_xml)} != {describe(str(want))}")
    assert wrong == []

    # record_property's name that is not a str: stored (and written) as its str.
    assert run.properties("test_session.py::test_record_property_non_str_name") == {"7": "plain"}
    assert junit["test_record_property_non_str_name"] == {"7": "plain"}
    # Refused values left nothing behind.
    for name in ["record", "append", "fixture_record", "fixture_append", "record_property"]:
        assert run.properties(f"test_session.py::test_too_large_is_refused[{name}]") == {}
        assert junit[f"test_too_large_is_refused[{name}]"] == {}

    if crashes:
        # The crash report (built by the pytest-forked parent or the xdist controller from
        # the store) carries the converted values; junitxml writes them.
        nodeid = "test_session.py::test_crash_after_bad_values"
        assert run.properties(nodeid) == CRASH_PROPERTIES
        assert junit["test_crash_after_bad_values"] == {
            k: str(v) for k, v in CRASH_PROPERTIES.items()
        }
        result.stdout.fnmatch_lines(["*CRASHED*test_crash_after_bad_values*SIGABRT*"])


def test_record_property_non_str_name_and_bad_value_warn_once(pytester: pytest.Pytester) -> None:
    source = (
        CASES_SRC
        + """
import warnings


def test_name_and_value(record_property):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record_property(8, Thing())
    assert [w.category.__name__ for w in caught] == ["BlackboxWarning"], caught
    assert "8" in str(caught[0].message) and "Thing" in str(caught[0].message)
"""
    )
    result, store, xml = run_session(pytester, [], source)
    result.assert_outcomes(passed=1)
    nodeid = "test_session.py::test_name_and_value"
    assert pytest_blackbox.Store(store).latest().properties(nodeid) == {"8": "<Thing #7>"}
    assert junit_properties(xml)["test_name_and_value"] == {"8": "<Thing #7>"}


def test_oversized_phase_report_is_cut_not_lost(pytester: pytest.Pytester) -> None:
    """A failing test with more properties than one record holds: under --forked the child
    cannot hand its report back (pytest-forked's marshal), so the parent rebuilds it from the
    store; the report is stored with its long strings cut rather than dropped, and the test
    is reported as failed, not as crashed."""
    source = """
import pytest_blackbox


def test_fails_with_big_properties():
    for i in range(2):
        pytest_blackbox.record(f"k{i}", str(i) * (33 << 20))
    assert 0, "expected failure"
"""
    result, store, _ = run_session(pytester, ["--forked"], source)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: expected failure*"])
    run = pytest_blackbox.Store(store).latest()
    assert run.crashes == []
    [test] = run.tests
    assert (test.outcome, test.crashed) == ("failed", False)
    props = run.properties(test.nodeid)
    assert [len(props[k]) for k in ("k0", "k1")] == [33 << 20, 33 << 20]


# -- the conversion itself, in this process (no session needed) -------------------------


def convert(value: Any) -> tuple[Any, list[str]]:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = _native.to_plain(value)
    assert all(w.category is pytest_blackbox.BlackboxWarning for w in caught)
    return plain, [str(w.message) for w in caught]


def test_a_value_sharing_a_sub_list_exponentially_is_refused_quickly() -> None:
    a: list[Any] = []
    for _ in range(30):
        a = [a, a]  # 2**30 values once expanded
    with pytest.raises(pytest_blackbox.RecordTooLargeError, match="shared"):
        _native.to_plain(a)


def test_many_odd_values_give_one_short_warning() -> None:
    class A:
        pass

    class B(float):
        pass

    plain, messages = convert([A(), B(1.0)] * 1000 + [{1, 2}, b"x", bytearray(b"y")])
    assert len(plain) == 2003 and plain[1] == 1.0 and plain[-3:] == [[1, 2], b"x", b"y"]
    [message] = messages
    assert message.startswith("blackbox: value: A stored as its repr; B (a float subclass)")
    assert message.endswith("; set stored as a sorted list (and 1 more)")  # bytearray
    assert len(message) < 300


CONVERSIONS = {
    "dict": ({"self": None}, {"self": None}, None),
    "colliding_keys": ({1: "a", "1": "b"}, {"1": "b"}, "the last one kept"),
    "surrogates": ("a\ud800b", "a\\ud800b", "lone surrogates"),
    "int_past_str_limit": (10**5000, hex(10**5000), "too long for str()"),
    "frozenset": (frozenset({"b", "a"}), ["a", "b"], "frozenset stored as a sorted list"),
    # Items that do not compare are ordered by their reprs ("'a'" < "1").
    "mixed_set": ({1, "a"}, ["a", 1], "set stored as a sorted list"),
    "memoryview": (memoryview(b"mv"), b"mv", "memoryview stored as bytes"),
    "bytearray": (bytearray(b"ba"), b"ba", "bytearray stored as bytes"),
    "range": (range(3), [0, 1, 2], "range stored as list"),
    "huge_range": (range(10**12), "range(0, 1000000000000)", "range stored as its repr"),
    "complex": (1j, "1j", "complex stored as its repr"),
    "generator": ((i for i in ()), None, "generator stored as its repr"),
}


@pytest.mark.parametrize("case", list(CONVERSIONS))
def test_conversions(case: str) -> None:
    value, plain, note = CONVERSIONS[case]
    got, messages = convert(value)
    if case == "generator":
        assert got.startswith("<generator object")  # not consumed
    else:
        assert same(got, plain), got
    if note is None:
        assert messages == []
    else:
        [message] = messages
        assert note in message


def test_cycles_in_dicts_and_deep_nesting() -> None:
    d: dict[str, Any] = {}
    d["me"] = d
    got, [message] = convert(d)
    assert got == {"me": "{...}"}
    assert "a dict that contains itself" in message
    deep: list[Any] = [1]
    for _ in range(40):
        deep = [deep]
    got, [message] = convert(deep)
    inner = got
    for _ in range(32):
        inner = inner[0]
    assert isinstance(inner, str) and inner.startswith("[[[")
    assert "nesting deeper than 32 levels" in message


def test_forked_child_leaks_no_file_of_ours(pytester: pytest.Pytester) -> None:
    # Only our file's warning is an error here: pytest-forked leaks files of its own.
    ours = "Exception ignored in. <_io.FileIO name='[^']*faulthandler-"
    pytester.makeini(
        "[pytest]\nfilterwarnings =\n    error::ResourceWarning\n"
        f"    error:{ours}:pytest.PytestUnraisableExceptionWarning\n"
    )
    pytester.makepyfile(test_session="def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--forked", f"--blackbox-dir={pytester.path / 'store'}"
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=2)


# -- the fast path: plain values encoded straight from the objects ------------------------
#
# record() and append() encode a value of exact plain types straight into the record, and
# give anything else to the conversion above. _native._property_bytes shows both encodings
# of one record: the fast path's (None when it declines) and the conversion's.


def nested(levels: int) -> list[Any]:
    """A list with ``levels`` lists inside each other inside it."""
    v: list[Any] = [1]
    for _ in range(levels):
        v = [v]
    return v


def cyclic_dict() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["me"] = d
    return d


class FloatSubclass(float):
    pass


class StrSubclass(str):
    pass


class DictSubclass(dict):  # type: ignore[type-arg]
    pass


FAST: dict[str, Any] = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "ints": [1, -1, 63, 64, -64, -65, 127, 128, 300, -300, 2**31, -(2**31), 2**62],
    "i64_max": 2**63 - 1,
    "i64_min": -(2**63),
    "floats": [0.0, -0.0, 0.99, 1e300, -1e-300, math.inf, -math.inf, math.nan],
    "str": "resnet50",
    "empty_str": "",
    "unicode": "é中😀\x00",
    "long_str": "x" * 70_000,
    "bytes": b"\x00\xff" * 100,
    "empty_bytes": b"",
    "list": [None, True, 1, 1.5, "a", b"b", [], {}],
    "tuple": (1, "a", (2, 3)),
    "dict": {"i": 7, "pcc": 0.99, "passed": True, "model": "resnet50"},
    "nested_dict": {"a": {"b": {"c": [1, {"d": None}]}}, "": "empty key"},
    "many_keys": {f"k{i}": i for i in range(300)},
    "deepest_kept": nested(31),
    "most_values": [None] * ((1 << 20) - 1),
}

SLOW: dict[str, Any] = {
    "i64_max_plus_one": 2**63,
    "i64_min_minus_one": -(2**63) - 1,
    "big_int_after_plain_values": [1, True, "x", 2**64],
    "too_deep": nested(32),
    "dict_cycle": cyclic_dict(),
    "surrogate": "a\ud800b",
    "surrogate_in_dict_key": {"a\udfff": 1},
    "int_key": {1: "a"},
    "set": {1, 2},
    "float_subclass": [FloatSubclass(1.5)],
    "str_subclass_in_dict": {"k": StrSubclass("v")},
    "dict_subclass": DictSubclass(a=1),
    "bytearray": bytearray(b"x"),
    "object": object(),
}


@pytest.mark.parametrize("case", list(FAST))
@pytest.mark.parametrize(
    ("test", "append"), [(None, False), ("t.py::test[é]", True), ("a\ud800", False)]
)
def test_fast_path_writes_the_bytes_the_conversion_writes(
    case: str, test: str | None, append: bool
) -> None:
    for mono_ns in (0, 1, 2**40 + 3, 2**64 - 1):
        fast, reference = _native._property_bytes(case, FAST[case], test, mono_ns, append)
        assert fast is not None, "the fast path declined a plain value"
        assert fast == reference


@pytest.mark.parametrize("case", list(SLOW))
def test_fast_path_leaves_the_rest_to_the_conversion(case: str) -> None:
    fast, _ = _native._property_bytes("k", SLOW[case])
    assert fast is None


def test_fast_path_keys() -> None:
    assert _native._property_bytes("é", 1)[0] is not None
    assert _native._property_bytes(StrSubclass("k"), 1)[0] is None
    assert _native._property_bytes("k\ud800", 1)[0] is None
    with pytest.raises(pytest_blackbox.InvalidKeyError):
        _native._property_bytes(("a", 1), 1)


def test_too_large_is_refused_as_before() -> None:
    with pytest.raises(pytest_blackbox.RecordTooLargeError, match="store large data"):
        _native._property_bytes("k", [None] * (1 << 20))
    with pytest.raises(pytest_blackbox.RecordTooLargeError, match="store large data"):
        _native._property_bytes("k", {"x": "y" * (64 << 20)})


@pytest.fixture
def session(tmp_path: Path) -> Any:
    s = pytest_blackbox.start_run(tmp_path)
    yield s
    pytest_blackbox.stop_run(s)


def stored(session: Any) -> list[dict[str, Any]]:
    return [
        r
        for r in _native.read_records(session.run_dir)
        if r["kind"] in ("property_set", "property_append")
    ]


def test_what_record_stores_and_returns(session: Any) -> None:
    values = {**FAST, **SLOW}
    del values["most_values"]  # its bytes are checked above
    for case, value in values.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert pytest_blackbox.record(case, value, test="t.py::a") is None
            assert pytest_blackbox.append(case, value, test="t.py::b") is None
            returned = session.recorder.record(case, value, "t.py::c")
        plain, notes = convert(value)
        assert len(caught) == 3 * len(notes), (case, caught)
        # The caller's own object when stored as given, else what is stored.
        assert (returned is value) == (not notes and case != "tuple"), case
        assert same(returned, plain), case
    assert [r["key"] for r in stored(session)] == [k for k in values for _ in range(3)]
    run = pytest_blackbox.Store(session.store_dir).run(session.run_id)
    for test, wrap in [("t.py::a", lambda v: v), ("t.py::b", lambda v: [v]), ("t.py::c", None)]:
        got = run.properties(test)
        assert list(got) == list(values)
        for key, value in got.items():
            want = convert(values[key])[0]
            assert same(value, wrap(want) if wrap else want), (test, key)


def test_record_warns_at_its_caller(session: Any) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pytest_blackbox.record("k", {1, 2}, test="t.py::a")
        pytest_blackbox.append("k", FloatSubclass(1.0))
    assert [Path(w.filename).name for w in caught] == [Path(__file__).name] * 2
    assert [w.category for w in caught] == [pytest_blackbox.BlackboxWarning] * 2


def test_record_takes_arguments_as_a_python_function_would(session: Any) -> None:
    import inspect

    for f in (pytest_blackbox.record, pytest_blackbox.append):
        assert str(inspect.signature(f)) == "(key, value, *, test=None)"
        name = f.__name__
        f(key=name, value=1, test=None)
        f(name, value=2)
        with pytest.raises(TypeError, match=rf"{name}\(\) missing required argument 'value'"):
            f("k")
        with pytest.raises(TypeError, match=r"takes 2 positional arguments but 3 were given"):
            f("k", 1, "t.py::a")
        with pytest.raises(TypeError, match=r"unexpected keyword argument 'tset'"):
            f("k", 1, tset="t.py::a")
        with pytest.raises(TypeError, match=r"multiple values for argument 'key'"):
            f("k", 1, key="k")
    # A test that is not a str is str()-ed, as before.
    pytest_blackbox.record("path", 1, test=Path("t.py"))  # type: ignore[arg-type]
    got = [(r["kind"], r["test"], r["key"], r["value"]) for r in stored(session)]
    assert got == [
        ("property_set", None, "record", 1),
        ("property_set", None, "record", 2),
        ("property_append", None, "append", 1),
        ("property_append", None, "append", 2),
        ("property_set", "t.py", "path", 1),
    ]


def test_record_mirrors_into_the_running_items_user_properties(
    session: Any, request: pytest.FixtureRequest
) -> None:
    item = request.node
    session.current_item, session.current_nodeid = item, "t.py::running"
    before = list(item.user_properties)
    try:
        pytest_blackbox.record("k", 1)
        pytest_blackbox.record("k", (2, 3))  # the last write wins; as stored: a list
        pytest_blackbox.append("a", 1)
        pytest_blackbox.append("a", (4,))
        pytest_blackbox.record("other", 5, test="t.py::other")  # not the running test
        mirrored = item.user_properties[len(before) :]
    finally:
        session.current_item = session.current_nodeid = None
        item.user_properties[:] = before
    assert mirrored == [("k", [2, 3]), ("a", [1, [4]])]
    run = pytest_blackbox.Store(session.store_dir).run(session.run_id)
    assert run.properties("t.py::running") == {"k": [2, 3], "a": [1, [4]]}
    assert run.properties("t.py::other") == {"other": 5}


def test_a_pytest_sessions_running_test_is_what_its_hooks_keep(pytester: pytest.Pytester) -> None:
    # No attribute of the session is set per test: its hooks keep the running test, and
    # record() (mirroring into user_properties) and the session's properties read it there.
    source = """
import pytest
from pytest_blackbox import _runtime, record


@pytest.fixture
def fx():
    yield _runtime.active()
    s = _runtime.active()  # its teardown: still the running test
    assert s.current_nodeid.endswith("::test_a"), s.current_nodeid


def test_a(request, fx):
    s = _runtime.active()
    assert "current_item" not in vars(s) and "current_nodeid" not in vars(s)
    assert s.current_item is request.node is s.hooks.current_item
    assert s.current_nodeid == request.node.nodeid == s.hooks.current_nodeid
    record("k", 1)
    assert request.node.user_properties == [("k", 1)]


def test_b(request):
    record("k", 2)
    assert request.node.user_properties == [("k", 2)]
"""
    pytester.makeconftest(
        """
from pytest_blackbox import _runtime

def pytest_sessionfinish(session):
    s = _runtime.active()
    assert s.current_item is None and s.current_nodeid is None
    print("BETWEEN TESTS: none")
"""
    )
    result, store, _ = run_session(pytester, ["-s"], source)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*BETWEEN TESTS: none*"])
    run = pytest_blackbox.Store(store).latest()
    assert run.properties("test_session.py::test_a") == {"k": 1}
    assert run.properties("test_session.py::test_b") == {"k": 2}


def test_record_without_a_run_says_how_to_start_one() -> None:
    from pytest_blackbox import _runtime

    active = list(_runtime._sessions)  # this test session's own run, when the plugin is on
    _runtime._sessions.clear()
    try:
        with pytest.raises(pytest_blackbox.NotRecordingError, match="start_run"):
            pytest_blackbox.record("k", 1)
        with pytest.raises(pytest_blackbox.NotRecordingError, match="start_run"):
            pytest_blackbox.append("k", 1, test="t.py::a")
    finally:
        _runtime._sessions[:] = active
