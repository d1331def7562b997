"""Fixture timing: every fixture's setup and teardown, all scopes, plain and yield, with no
decorator; @timed on functions, fixtures and coroutines; totals across xdist workers."""

from __future__ import annotations

import pytest

from conftest import MODES, no_internal_error, run, store

SUITE = """
import time, pytest

@pytest.fixture(scope="session")
def sess():
    time.sleep(0.03)
    yield "s"
    time.sleep(0.02)

@pytest.fixture(scope="module")
def mod():
    time.sleep(0.01)
    return "m"

@pytest.fixture(scope="class")
def klass():
    yield "c"

@pytest.fixture
def func(sess, mod):
    time.sleep(0.005)
    yield "f"
    time.sleep(0.005)

@pytest.fixture
def plain():
    return 1

class TestGroup:
    def test_a(self, klass, func, plain):
        pass

    def test_b(self, klass, func):
        pass

def test_c(func, plain):
    pass

def test_d(plain):
    pass
"""

# Setups per fixture when each test process sets up what it needs once per scope: plain
# mode; a forked child sets up everything afresh for its one test.
EXPECTED = {
    "plain": {"sess": 1, "mod": 1, "klass": 1, "func": 3, "plain": 3},
    "forked": {"sess": 3, "mod": 3, "klass": 2, "func": 3, "plain": 3},
}


@pytest.mark.parametrize("mode", ["plain", "forked"])
def test_every_fixture_every_scope_is_timed(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(test_fix=SUITE)
    result = run(pytester, *MODES[mode])
    no_internal_error(result)
    assert result.ret == 0
    run_ = store(pytester).latest()
    fixtures = {f.name: f for f in run_.fixtures}
    for name, setups in EXPECTED[mode].items():
        f = fixtures[name]
        assert f.setups == setups, (name, f)
        assert f.teardowns == setups, (name, f)
    scopes = {f.name: f.scope for f in run_.fixtures}
    assert scopes["sess"] == "session" and scopes["mod"] == "module"
    assert scopes["klass"] == "class" and scopes["func"] == "function"
    # Setup and teardown are timed separately, including the part after `yield`.
    assert fixtures["sess"].total_s >= 0.03 * fixtures["sess"].setups
    assert fixtures["sess"].teardown_total_s >= 0.02 * fixtures["sess"].setups
    assert fixtures["func"].max_s >= 0.005
    assert fixtures["func"].teardown_total_s >= 0.005 * 3
    assert abs(fixtures["func"].mean_s - fixtures["func"].total_s / 3) < 1e-9


TIMED_SUITE = """
import asyncio, time, pytest
from pytest_blackbox import timed

@timed
def helper(x):
    time.sleep(0.01)
    return x * 2

@pytest.fixture
@timed(name="plain fixture")
def plain_fx():
    time.sleep(0.01)
    return 5

@pytest.fixture
@timed(name="yield fixture")
def yield_fx():
    time.sleep(0.01)
    yield 7
    time.sleep(0.02)

@timed(name="coroutine")
async def work():
    await asyncio.sleep(0.01)
    return 3

def test_timed(plain_fx, yield_fx):
    assert helper(2) == 4
    assert helper(3) == 6
    assert plain_fx == 5 and yield_fx == 7
    assert asyncio.run(work()) == 3
"""


@pytest.mark.parametrize("mode", sorted(MODES))
def test_timed_decorator(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(test_timed=TIMED_SUITE)
    result = run(pytester, *MODES[mode])
    no_internal_error(result)
    assert result.ret == 0, result.stdout.str()
    timed = {t.name: t for t in store(pytester).latest().timed}
    assert timed["helper"].setups == 2
    assert timed["helper"].total_s >= 0.02
    assert timed["plain fixture"].setups == 1
    assert timed["yield fixture"].setups == 1
    assert timed["yield fixture"].total_s >= 0.01
    assert timed["yield fixture[teardown]"].total_s >= 0.02
    assert timed["coroutine"].setups == 1 and timed["coroutine"].total_s >= 0.01
    # The decorated fixtures are still timed as fixtures, with no decorator needed.
    fixtures = {f.name for f in store(pytester).latest().fixtures}
    assert {"plain_fx", "yield_fx"} <= fixtures


SUMMARY_SUITE = """
import time, pytest
from pytest_blackbox import summary

N_TESTS = 6  # tests per worker, this one included

@pytest.fixture
def counted():
    yield

@pytest.mark.parametrize("i", range(N_TESTS - 1))
def test_work(counted, i):
    pass

def test_zz_totals_across_workers(counted, worker_id):
    # --dist each: both workers run every test; each sees the other's setups.
    expected = 2 * N_TESTS
    deadline = time.monotonic() + 60
    s = summary()
    while s.fixture("counted").setups < expected and time.monotonic() < deadline:
        time.sleep(0.02)
        s = summary()
    assert s.fixture("counted").setups == expected
    assert s.fixture_setups == s.fixture("counted").setups + s.fixture("worker_id").setups
    workers = {w.id for w in s.workers}
    assert {"gw0", "gw1"} <= workers, workers
"""


@pytest.mark.slow
def test_summary_totals_are_exact_across_workers_20_runs(
    pytester: pytest.Pytester,
) -> None:
    """The failure that started this: a per-worker tracker read 0 at random under -n."""
    pytester.makepyfile(test_summary=SUMMARY_SUITE)
    for attempt in range(20):
        result = run(pytester, "-n", "2", "--dist", "each", "-q")
        no_internal_error(result)
        assert result.ret == 0, (attempt, result.stdout.str())
        result.assert_outcomes(passed=12)


def test_terminal_summary_lists_fixtures_and_crashes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mixed="""
        import ctypes, time, pytest

        @pytest.fixture
        def slow_fixture():
            time.sleep(0.05)

        @pytest.mark.parametrize("i", range(4))
        def test_slow(slow_fixture, i):
            pass

        def test_segv():
            ctypes.string_at(0)
        """
    )
    result = run(pytester, "-n", "2")
    no_internal_error(result)
    result.stdout.fnmatch_lines(
        [
            "*- blackbox -*",
            "run *: 5 tests on * workers, 1 crashed; details: blackbox stats --dir *",
            "slowest fixtures (all processes): slow_fixture 0.2*s/4x (max 0.0*s)*",
            "CRASHED test_mixed.py::test_segv (gw*, pid *): SIGSEGV in call",
        ]
    )
