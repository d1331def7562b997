"""Plain mode: the crash kills pytest itself. The next read (Store API) and the next
session's start show which test did it, with pid, signal, properties and traceback."""

from __future__ import annotations

import pytest

from conftest import DEATHS, no_internal_error, run, store

SUITE = """
import ctypes, os, signal
from pytest_blackbox import record, append

def test_first():
    record("first", 1)

def test_dies(record_property):
    record("model", "resnet50")
    record_property("pcc", 0.99)
    append("comparison", {{"name": "out0", "pcc": 0.99}})
    {death}

def test_never_runs():
    pass
"""


@pytest.mark.parametrize("death", sorted(DEATHS))
def test_dead_pytest_is_attributed_on_the_next_read(pytester: pytest.Pytester, death: str) -> None:
    pytester.makepyfile(test_suite=SUITE.format(death=DEATHS[death]))
    result = run(pytester)
    expected_rc = {"segv": -11, "abort": -6, "sigkill": -9, "exit": 3}[death]
    assert result.ret == expected_rc, result.stdout.str()

    run_ = store(pytester).latest()
    assert not run_.live
    assert [c.nodeid for c in run_.crashes] == ["test_suite.py::test_dies"]
    c = run_.crashes[0]
    assert c.pid and c.pid > 0
    assert c.phase == "call"
    assert c.signal == {"segv": 11, "abort": 6}.get(death)
    if death == "exit":
        assert c.exit_code == 3
    tests = {t.nodeid: t for t in run_.tests}
    assert tests["test_suite.py::test_first"].outcome == "passed"
    dies = tests["test_suite.py::test_dies"]
    assert dies.outcome == "crashed" and dies.crashed
    assert dies.pid == c.pid
    assert run_.properties("test_suite.py::test_dies") == {
        "model": "resnet50",
        "pcc": 0.99,
        "comparison": [{"name": "out0", "pcc": 0.99}],
    }
    # Collected, never started: the collection record says so (issue 14).
    assert tests["test_suite.py::test_never_runs"].outcome == "not-run"
    assert [t.nodeid for t in run_.not_run] == ["test_suite.py::test_never_runs"]
    if death in ("segv", "abort"):
        # faulthandler's output is kept in the run folder and linked to the test.
        tb = c.traceback
        assert tb is not None
        assert "test_dies" in tb and "test_suite.py" in tb
    else:
        assert c.traceback is None

    # The next session says which test killed the last one.
    pytester.makepyfile(test_suite="def test_ok():\n    pass\n")
    again = run(pytester)
    no_internal_error(again)
    assert again.ret == 0
    again.stdout.fnmatch_lines(
        [f"blackbox: previous run {run_.id} crashed in test_suite.py::test_dies (pid {c.pid}*"]
    )
    if death in ("segv", "abort"):
        again.stdout.fnmatch_lines(["*; traceback: *faulthandler-*.txt"])


def test_clean_previous_run_is_not_reported(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    assert run(pytester).ret == 0
    again = run(pytester)
    assert again.ret == 0
    assert "previous run" not in again.stdout.str()
    again.stdout.fnmatch_lines(["blackbox: recording run * in *.blackbox"])


def test_os_exit_by_keyword_exits_as_without_the_plugin(pytester: pytest.Pytester) -> None:
    # The plugin's os._exit takes os._exit's own parameter name: `status=` is no TypeError.
    pytester.makepyfile(test_suite=SUITE.format(death="os._exit(status=3)"))
    result = run(pytester)
    assert result.ret == 3, result.stdout.str() + result.stderr.str()
    crashes = store(pytester).latest().crashes
    assert [(c.nodeid, c.exit_code) for c in crashes] == [("test_suite.py::test_dies", 3)]
