"""A Run's tests are kept native (``RunView.tests``: each field converted from the view
when read): what a reader sees is the same as the whole view converted at once
(``RunReader.view()``), however it gets there, and no cycle can pass through a test."""

from __future__ import annotations

import copy
import dataclasses
import gc
import pickle
import threading
from pathlib import Path

import pytest

from pytest_blackbox import Store, TestInfo, _native, start_run, stop_run


@pytest.fixture
def store(tmp_path: Path) -> Path:
    session = start_run(tmp_path / "store")
    rec = session.recorder
    try:
        rec.run_start(["pytest"], str(tmp_path), "lazy")
        for i in range(300):
            nodeid = f"t.py::test[{i}]"
            rec.start_test(nodeid)
            rec.phase(nodeid, "setup", "passed", 1e-4, None)
            rec.phase(nodeid, "call", "failed" if i % 7 == 0 else "passed", 1e-3 * i, None)
            rec.record("pcc", {"value": 0.5 + i, "ok": i % 2 == 0, "raw": b"\x00"}, nodeid)
            if i % 3 == 0:
                rec.append("log", float("nan"), nodeid)
            rec.phase(nodeid, "teardown", "passed", 1e-4, None)
            rec.end_test(nodeid)
        rec.record("session", 1, None)
        rec.run_end(0)
    finally:
        stop_run(session)
    return tmp_path / "store"


def expected(store: Path) -> list[dict]:
    run = Store(store).latest()
    return _native.RunReader(str(run.path)).view()["tests"]


def test_each_field_is_as_the_whole_view_gives_it(store: Path) -> None:
    want = expected(store)
    run = Store(store).latest()
    assert len(run.tests) == len(want) == 300
    assert [t.nodeid for t in run.tests] == [d["nodeid"] for d in want]
    assert [t.outcome for t in run.tests] == [d["outcome"] for d in want]
    # The first use of a field left out fills every test of the list.
    assert run.tests[5].phases == want[5]["phases"]
    assert [dataclasses.asdict(t) for t in run.tests] == want
    assert all("_rest" not in vars(t) for t in run.tests)
    assert run.raw["tests"] == want


def test_a_test_outliving_its_run_and_list_reads_its_fields(store: Path) -> None:
    want = expected(store)
    tests = list(Store(store).latest().tests)  # the Run and its list are gone
    assert tests[7].properties == want[7]["properties"]
    assert vars(tests[7]) == want[7] and vars(tests[8]) == want[8]
    tests.reverse()  # order does not matter
    assert [dataclasses.asdict(t) for t in reversed(tests)] == want


def test_a_test_refers_to_nothing_a_reader_made_and_is_left_out_of_the_gc(store: Path) -> None:
    run = Store(store).latest()
    t = run.tests[3]
    assert not gc.is_tracked(t)
    assert all(isinstance(r, type) for r in gc.get_referents(t))  # its type, if anything
    # What it hands out is new each time: a reader's cycle through it holds no test.
    props = t.properties
    props["me"] = t
    assert "me" not in t.properties and t.phases is not t.phases
    assert t.properties == expected(store)[3]["properties"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del t.outcome
    assert isinstance(t, TestInfo) and dataclasses.is_dataclass(t)


def test_eq_repr_copy_pickle_and_replace(store: Path) -> None:
    run, again = Store(store).latest(), Store(store).latest()
    t = run.tests[3]
    assert t == again.tests[3] and t != again.tests[4]
    assert repr(t) == repr(TestInfo(**dataclasses.asdict(again.tests[3])))
    assert copy.copy(again.tests[10]) == t.__class__(**dataclasses.asdict(run.tests[10]))
    fresh = Store(store).latest().tests
    assert pickle.loads(pickle.dumps(fresh[11])) == run.tests[11]
    assert copy.deepcopy(Store(store).latest().tests[12]) == run.tests[12]
    assert dataclasses.replace(t, outcome="x").phases == t.phases
    assert t.not_finished is False
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        t.nope  # noqa: B018
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.outcome = "x"  # type: ignore[misc]


def test_properties_are_exact_and_the_sessions_own_still_found(store: Path) -> None:
    run = Store(store).latest()
    got = run.properties("t.py::test[3]")
    assert got["pcc"] == {"value": 3.5, "ok": False, "raw": b"\x00"}
    assert len(got["log"]) == 1 and got["log"][0] != got["log"][0]  # NaN
    assert run.properties("") == {"session": 1}
    assert run.properties("t.py::nope") == {}
    assert run.tests[3].properties["pcc"]["raw"] == [0]  # the JSON view


def test_threads_filling_at_once_see_the_same(store: Path) -> None:
    want = [d["duration_s"] for d in expected(store)]
    for _ in range(5):
        tests = Store(store).latest().tests
        seen: list[list[float]] = []
        barrier = threading.Barrier(4)

        def read(
            tests: list[TestInfo], barrier: threading.Barrier, seen: list[list[float]]
        ) -> None:
            barrier.wait()
            seen.append([t.duration_s for t in tests])

        threads = [threading.Thread(target=read, args=(tests, barrier, seen)) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert seen == [want] * 4


def test_refresh_reads_anew(tmp_path: Path) -> None:
    session = start_run(tmp_path / "store")
    try:
        session.recorder.record("k", 1, "a::t")
        run = Store(tmp_path / "store").latest()
        old = run.tests
        assert [t.nodeid for t in old] == ["a::t"]
        session.recorder.record("k", 2, "a::u")
        run.refresh()
        assert [t.nodeid for t in run.tests] == ["a::t", "a::u"]
        assert run.properties("a::u") == {"k": 2}
        assert old[0].properties == {"k": 1}
        assert repr(run).startswith(f"<Run {run.id} tests=2 ")
    finally:
        stop_run(session)
