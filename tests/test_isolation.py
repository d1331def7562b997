"""Isolation: a nested pytest session records its own run, never the outer one; two
pytest.main() calls make two runs; workers learn the run folder from the controller, not
from an environment variable that nested sessions would inherit."""

from __future__ import annotations

import sys

import pytest

from conftest import no_internal_error, run, store
from pytest_blackbox import Store

OUTER = '''
import os, sys
from pytest_blackbox import Store, record

INNER = """
import pytest
from pytest_blackbox import record

@pytest.fixture
def inner_fixture():
    yield 1

def test_inner_one():
    record("inner", 1)

def test_inner_two(inner_fixture):
    pass
"""

def test_outer_first():
    record("outer", 1)

@pytest.mark.parametrize("how", ["inprocess", "subprocess", "inprocess-off"])
def test_nested_session(pytester, how):
    record("before_inner", how)
    assert not [k for k in os.environ if "BLACKBOX" in k.upper()], dict(os.environ)
    pytester.makepyfile(test_inner=INNER)
    if how == "inprocess-off":
        # Its fixtures are timed into no run: not the inner (off), not this one.
        result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:blackbox")
        result.assert_outcomes(passed=2)
        assert not (pytester.path / ".blackbox").exists()
        record("after_inner", how)
        return
    if how == "inprocess":
        result = pytester.runpytest("-p", "no:cacheprovider")
    else:
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=2)
    inner = Store(pytester.path / ".blackbox").latest()
    assert inner.fixture("inner_fixture").setups == 1
    assert inner.fixture("inner_fixture").teardowns == 1
    assert sorted(t.nodeid for t in inner.tests) == [
        "test_inner.py::test_inner_one",
        "test_inner.py::test_inner_two",
    ]
    assert inner.properties("test_inner.py::test_inner_one") == {"inner": 1}
    # The outer run gets this process's records again once the inner session ends.
    record("after_inner", how)
'''


def test_nested_sessions_inside_an_xdist_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_outer="import pytest\n" + OUTER)
    result = run(pytester, "-n", "2", "-p", "pytester")
    no_internal_error(result)
    assert result.ret == 0, result.stdout.str()
    outer = store(pytester).latest()
    nodeids = sorted(t.nodeid for t in outer.tests)
    assert nodeids == [
        "test_outer.py::test_nested_session[inprocess-off]",
        "test_outer.py::test_nested_session[inprocess]",
        "test_outer.py::test_nested_session[subprocess]",
        "test_outer.py::test_outer_first",
    ]
    assert outer.properties("test_outer.py::test_outer_first") == {"outer": 1}
    # The outer run times its own fixtures, before and after the inner sessions, and none
    # of theirs.
    assert outer.fixture("pytester").setups == 3
    assert outer.fixture("pytester").teardowns == 3
    assert "inner_fixture" not in {f.name for f in outer.fixtures}
    for how in ("inprocess", "subprocess", "inprocess-off"):
        # record() writes into this process's innermost run: with the inner session off,
        # that is the outer test's (which ran the code that recorded).
        extra = {"inner": 1} if how == "inprocess-off" else {}
        assert outer.properties(f"test_outer.py::test_nested_session[{how}]") == {
            "before_inner": how,
            "after_inner": how,
            **extra,
        }
    # Nothing of the inner sessions leaked into the outer run.
    assert not [r for r in outer.records() if "inner" in str(r.get("test") or r.get("nodeid"))]
    assert len(store(pytester).runs()) == 1


def test_two_pytest_main_calls_make_two_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_one="""
        import os, types

        import _pytest.fixtures
        import _pytest.runner
        import pytest_forked
        from pytest_blackbox import _runtime, record

        def test_x():
            record("n", 1)
            # The session reads its run on a thread of its own while it goes on.
            assert _runtime.active().reader().following
            # It records through hooks: pytest's functions are pytest's own.
            for f in (
                _pytest.fixtures.call_fixture_func,
                _pytest.runner.call_and_report,
                pytest_forked.forked_run_report,
            ):
                assert isinstance(f, types.FunctionType), f
            assert _pytest.runner.call_and_report.__module__ == "_pytest.runner"
            assert pytest_forked.forked_run_report.__module__ == "pytest_forked"
            # os._exit is wrapped while it records (to tell an exit from a kill).
            assert os._exit.__module__ == "pytest_blackbox.plugin"
        """
    )
    script = pytester.makepyfile(
        driver="""
        import os
        import posix

        import _pytest.fixtures
        import _pytest.runner
        import pytest
        from pytest_blackbox import Store

        pytests_own = (_pytest.fixtures.call_fixture_func, _pytest.runner.call_and_report)
        threads = len(os.listdir("/proc/self/task"))
        for _ in range(2):
            assert pytest.main(["-q", "-p", "no:cacheprovider", "test_one.py"]) == 0
            # The session's follow thread ended with it.
            assert len(os.listdir("/proc/self/task")) == threads
            # Nothing of pytest's is replaced, and os._exit is put back after the session.
            assert _pytest.fixtures.call_fixture_func is pytests_own[0]
            assert _pytest.runner.call_and_report is pytests_own[1]
            assert os._exit is posix._exit
        store = Store(".blackbox")
        runs = store.runs()
        assert len(runs) == 2, runs
        for run_id in runs:
            r = store.run(run_id)
            assert [t.nodeid for t in r.tests] == ["test_one.py::test_x"], r.tests
            assert r.properties("test_one.py::test_x") == {"n": 1}
            assert r.info["exit_status"] == 0
        print("TWO RUNS OK")
        """
    )
    result = pytester.run(sys.executable, str(script), timeout=120)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["TWO RUNS OK"])


def test_off_switches(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(record_property):\n    record_property('a', 1)\n")
    for args in (["-p", "no:blackbox"], ["--blackbox=off"], ["-o", "blackbox=off"]):
        result = run(pytester, *args)
        assert result.ret == 0, (args, result.stdout.str())
        assert not (pytester.path / ".blackbox").exists(), args
    bad = run(pytester, "-o", "blackbox=maybe")
    assert bad.ret == 4  # usage error
    bad.stderr.fnmatch_lines(["*blackbox = 'maybe': use on or off*"])


def test_store_dir_option_ini_and_env(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    assert run(pytester, "--blackbox-dir", "by_option").ret == 0
    assert len(store_at(pytester, "by_option").runs()) == 1
    pytester.makeini("[pytest]\nblackbox_dir = by_ini\n")
    assert run(pytester).ret == 0
    assert len(store_at(pytester, "by_ini").runs()) == 1
    pytester.makeini("[pytest]\n")
    env_dir = pytester.path / "by_env"
    monkeypatch.setenv("BLACKBOX_DIR", str(env_dir))
    assert run(pytester).ret == 0
    assert len(store_at(pytester, "by_env").runs()) == 1
    assert not (pytester.path / ".blackbox").exists()


def store_at(pytester: pytest.Pytester, name: str) -> Store:
    return Store(pytester.path / name)
