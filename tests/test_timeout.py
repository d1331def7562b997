"""Hangs: the native watchdog ends a hung test, keeps its data and says where it hung.

A test hung in native code holding the GIL, in time.sleep, in a deadlock of two threads,
and in a fixture's setup, in every mode: plain (pytest itself ends, the store says which
test hung), --forked, -n 2 and -n 2 --forked (the parent reports the timeout with the
test's properties and traceback, and the next tests run). pytest-timeout's kills are
recorded as timeouts too.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (
    MODES,
    REPORTS_CONFTEST,
    cli_json,
    cli_text,
    junit_properties,
    no_internal_error,
    reports_of,
    run,
    wait_until,
)

LIMIT = 2.0
#: A hung test ends within its limit plus this (the issue's bound).
SLACK = 2.0

SUITE = """
import ctypes, threading, time
import pytest

def test_native(record_property):
    record_property("where", "native")
    ctypes.PyDLL(None).sleep(600)  # HANG native

def test_sleep(record_property):
    record_property("where", "sleep")
    time.sleep(600)  # HANG sleep

def test_deadlock(record_property):
    record_property("where", "deadlock")
    a, b = threading.Lock(), threading.Lock()
    both = threading.Barrier(2)

    def other():
        with b:
            both.wait()
            a.acquire()

    threading.Thread(target=other, daemon=True).start()
    with a:
        both.wait()
        b.acquire()  # HANG deadlock

@pytest.fixture
def stuck(record_property):
    record_property("where", "fixture")
    time.sleep(600)  # HANG fixture
    yield

def test_fixture(stuck):
    pass

def test_after(record_property):
    record_property("after", 1)
"""

HANGS = {"native": "call", "sleep": "call", "deadlock": "call", "fixture": "setup"}
FUNCTION = {
    "native": "test_native",
    "sleep": "test_sleep",
    "deadlock": "test_deadlock",
    "fixture": "stuck",
}


def hang_line(where: str) -> int:
    return next(
        i
        for i, line in enumerate(SUITE.lstrip("\n").splitlines(), 1)
        if line.endswith(f"# HANG {where}")
    )


def blackbox(pytester: pytest.Pytester, *args: str) -> dict:
    return cli_json(pytester, *args)


def first_frame(text: str, nodeid: str) -> str:
    """The first frame of the traceback excerpt under ``nodeid``'s row or heading: the
    line after the first thread's header that follows it."""
    lines = text[text.index(nodeid) :].splitlines()
    header = next(i for i, line in enumerate(lines) if "(most recent call first):" in line)
    return lines[header + 1].strip()


def check_timeouts(pytester: pytest.Pytester, names: list[str]) -> None:
    """The store: one crash of kind timeout per hung test, with its limit, elapsed time,
    phase and traceback file; the test's outcome is timeout."""
    crashes = blackbox(pytester, "crashes")["crashes"]
    # One crash per hung test: a second one for the same test would hide in a dict.
    assert len({c["nodeid"] for c in crashes}) == len(crashes), crashes
    by_test = {c["nodeid"].split("::")[-1]: c for c in crashes}
    assert sorted(by_test) == sorted(f"test_{n}" for n in names), crashes
    tests = {t["nodeid"].split("::")[-1]: t for t in blackbox(pytester, "tests")["tests"]}
    # stats --json tells the same, as its own kind: no signal.
    stats = blackbox(pytester, "stats")
    assert len({c["nodeid"] for c in stats["crashes"]}) == len(stats["crashes"]), stats
    stats_crashes = {c["nodeid"].split("::")[-1]: c for c in stats["crashes"]}
    stats_tests = {t["nodeid"].split("::")[-1]: t for t in stats["tests"]}
    for name in names:
        c, t = stats_crashes[f"test_{name}"], stats_tests[f"test_{name}"]
        assert (c["kind"], c["signal"], c["timeout"]) == (
            "timeout",
            None,
            by_test[f"test_{name}"]["timeout"],
        ), c
        assert (t["outcome"], t["signal"], t["timeout"]) == ("timeout", None, c["timeout"]), t
    for name in names:
        c = by_test[f"test_{name}"]
        phase = HANGS[name]
        assert c["kind"] == "timeout", c
        assert c["detail"] == f"timed out after {LIMIT} s in {phase} (blackbox_timeout)", c
        t = c["timeout"]
        assert (t["limit_s"], t["phase"], t["source"], t["fatal"]) == (
            LIMIT,
            phase,
            "blackbox_timeout",
            True,
        )
        assert LIMIT <= t["elapsed_s"] < LIMIT + SLACK, t
        assert tests[f"test_{name}"]["outcome"] == "timeout"
        assert tests[f"test_{name}"]["timeout"] == t
        # Every thread's traceback, written when the watchdog fired, points at the line.
        dumps = "".join(Path(a).read_text() for a in c["attachments"])
        assert f"line {hang_line(name)} in {FUNCTION[name]}" in dumps, dumps
    # What a person reads: the excerpt of `crashes` and `show` is the thread the test ran
    # on, at the line that hung (the dump lists the newest thread first: the deadlock's
    # other thread, execnet's reader under -n 2).
    table = cli_text(pytester, "crashes")
    # Its first column holds the cause: a signal's name, or timeout.
    assert table.splitlines()[0].split()[0] == "CAUSE", table
    listed = cli_text(pytester, "tests").splitlines()
    for name in names:
        nodeid = f"test_suite.py::test_{name}"
        hung = f'test_suite.py", line {hang_line(name)} in {FUNCTION[name]}'
        assert first_frame(table, nodeid).endswith(hung), table
        cause_row = rf"^timeout +\S+ +\d+ +{HANGS[name]} +test_suite\.py::test_{name}$"
        assert re.search(cause_row, table, re.M), table
        shown = cli_text(pytester, "show", nodeid)
        assert first_frame(shown, "\ncrash\n").endswith(hung), shown
        # The phase that ran out of time, as such; the test's duration even when it hung in
        # setup, before any phase report.
        assert re.search(rf"^  {HANGS[name]} +timed out +-$", shown, re.M), shown
        assert re.search(r"^  timeout · took [23]\.\d\ds · ", shown, re.M), shown
        row = next(line for line in listed if line.endswith(nodeid)).split()
        assert row[0] == "timeout" and re.fullmatch(r"[23]\.\d\ds", row[1]), row
    # The HTML report shows them as timeouts, with their story.
    html = pytester.path / "report.html"
    subprocess.run(
        [sys.executable, "-m", "pytest_blackbox.cli", "report", "--html", str(html)],
        cwd=pytester.path,
        check=True,
        capture_output=True,
    )
    page = html.read_text()
    # Each in the crashes table and in the tests that did not pass.
    assert page.count('<td class="outcome o-crashed">timeout</td>') == 2 * len(names), page
    for name in names:
        assert f"timed out after {LIMIT} s in {HANGS[name]} (blackbox_timeout)" in page


@pytest.mark.parametrize("mode", ["forked", "xdist", "xdist_forked"])
def test_parent_reports_each_hang_and_goes_on(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makeconftest(REPORTS_CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    xml = pytester.path / "junit.xml"
    t0 = time.monotonic()
    result = run(pytester, *MODES[mode], f"--blackbox-timeout={LIMIT}", f"--junit-xml={xml}")
    took = time.monotonic() - t0
    no_internal_error(result)
    assert result.ret == 1
    result.assert_outcomes(passed=1, failed=3, errors=1)
    # Four hangs (two at a time under -n 2), each ended within its limit plus the slack,
    # and pytest's own start.
    assert took < 4 * (LIMIT + SLACK) + 20, took
    props = junit_properties(xml)
    for name, phase in HANGS.items():
        test = f"test_{name}"
        failed = [r for r in reports_of(pytester, test) if r.outcome == "failed"]
        assert len(failed) == 1, reports_of(pytester, test)
        rep = failed[0]
        assert rep.when == phase
        assert f"timed out after {LIMIT} s in {phase} (blackbox_timeout)" in rep.longrepr
        assert f"line {hang_line(name)} in {FUNCTION[name]}" in rep.longrepr, rep.longrepr
        assert rep.props["where"] == repr(name)
        assert props[test]["where"] == name
    assert [r.outcome for r in reports_of(pytester, "test_after")] == ["passed"] * 3
    # The terminal summary counts the timeouts apart from crashes, each on a line of its own.
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["run *: 5 tests*, 0 crashed, 4 timed out; details: blackbox *"])
    for name, phase in HANGS.items():
        story = f"after {LIMIT} s in {phase} (blackbox_timeout)"
        result.stdout.fnmatch_lines([f"TIMEOUT test_suite.py::test_{name} (*): {story}"])
    assert not re.search(r"^CRASHED test_suite", out, re.M), out
    check_timeouts(pytester, list(HANGS))


@pytest.mark.parametrize("name", sorted(HANGS))
def test_plain_pytest_ends_and_the_store_says_which_test_hung(
    pytester: pytest.Pytester, name: str
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    t0 = time.monotonic()
    result = run(pytester, f"--blackbox-timeout={LIMIT}", "-k", f"test_{name} or test_after")
    took = time.monotonic() - t0
    assert result.ret == 124, result.stdout.str() + result.stderr.str()
    assert took < LIMIT + SLACK + 10, took
    phase = HANGS[name]
    result.stderr.fnmatch_lines(
        [
            f"blackbox: test_suite.py::test_{name} timed out after {LIMIT} s in {phase} "
            "(blackbox_timeout); ending process * with status 124*"
        ]
    )
    check_timeouts(pytester, [name])
    # The next session says so in its header.
    pytester.makepyfile(test_suite="def test_ok(): pass")
    again = run(pytester)
    again.stdout.fnmatch_lines([f"*test_suite.py::test_{name}*timed out after {LIMIT} s*"])


def test_limits_from_ini_and_marker(pytester: pytest.Pytester) -> None:
    """The ini's limit acts on a test without a marker; a marker's replaces it, a longer
    one too, and a marker of 0 switches it off for its test, which runs past it and passes."""
    pytester.makeini("[pytest]\nblackbox_timeout = 1\n")
    pytester.makeconftest(REPORTS_CONFTEST)
    pytester.makepyfile(
        test_suite="""
import time, pytest

def test_default():
    time.sleep(600)

@pytest.mark.blackbox_timeout(2)
def test_marked():
    time.sleep(600)

@pytest.mark.blackbox_timeout(0)
def test_unlimited():
    time.sleep(2.5)

def test_quick():
    pass
"""
    )
    result = run(pytester, "--forked")
    no_internal_error(result)
    result.assert_outcomes(passed=2, failed=2)
    for test, limit in (("test_default", 1.0), ("test_marked", 2.0)):
        failed = [r for r in reports_of(pytester, test) if r.outcome == "failed"]
        assert len(failed) == 1, reports_of(pytester, test)
        story = f"timed out after {limit} s in call (blackbox_timeout)"
        assert story in failed[0].longrepr, failed[0].longrepr
    for test in ("test_unlimited", "test_quick"):
        assert [r.outcome for r in reports_of(pytester, test)] == ["passed"] * 3


@pytest.mark.parametrize(
    "args",
    [
        ["--blackbox-timeout=-1"],
        ["--blackbox-timeout=soon"],
        ["--blackbox-timeout=nan"],
        ["-o", "blackbox_timeout=-2"],
        ["-o", "blackbox_timeout=abc"],
    ],
)
def test_bad_limits_are_usage_errors(pytester: pytest.Pytester, args: list[str]) -> None:
    pytester.makepyfile(test_suite="def test_ok(): pass")
    result = run(pytester, *args)
    assert result.ret == 4, result.stdout.str() + result.stderr.str()
    out = result.stdout.str() + result.stderr.str()
    assert "blackbox_timeout" in out or "--blackbox-timeout" in out, out
    assert "seconds" in out, out


def test_bad_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_suite="""
import pytest

@pytest.mark.blackbox_timeout("later")
def test_marked():
    pass
"""
    )
    result = run(pytester)
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*test_marked: blackbox_timeout = 'later'*seconds*"])


def test_tests_in_time_and_the_dying_process(pytester: pytest.Pytester) -> None:
    """Tests that finish in time are not touched; a session interrupted in the middle of a
    test (its process then exits slowly, past the limit) is not ended as a timeout; a
    process forked in an armed test does not inherit it."""
    pytester.makepyfile(
        test_suite="""
import atexit, os, pathlib, time, pytest

@pytest.mark.parametrize("i", range(50))
def test_quick(i):
    pass

def test_forks_a_child():
    marker = pathlib.Path(__file__).parent / "child-lived"
    if os.fork() == 0:
        time.sleep(2.5)  # past the parent's limit
        marker.write_text("yes")
        os._exit(0)

def test_interrupted():
    atexit.register(time.sleep, 2.5)
    raise KeyboardInterrupt
"""
    )
    result = run(pytester, "--blackbox-timeout=1.5")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 2, out  # interrupted, not 124
    assert "timed out" not in out, out
    result.stdout.fnmatch_lines(["*51 passed*"])
    lived = pytester.path / "child-lived"
    deadline = time.monotonic() + 10
    while not lived.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lived.exists(), "the forked child was ended by an inherited watchdog"
    crashes = blackbox(pytester, "crashes")["crashes"]
    assert [c for c in crashes if c["kind"] == "timeout"] == [], crashes
    tests = blackbox(pytester, "tests")["tests"]
    assert [t["nodeid"] for t in tests if t["timeout"]] == [], tests


PYTEST_TIMEOUT_SUITE = """
import ctypes, time

def test_hangs(record_property):
    record_property("where", "hangs")
    time.sleep(600)

def test_native(record_property):
    # Locks a mutex it holds, holding the GIL: no signal ends that wait.
    record_property("where", "native")
    libc, mutex = ctypes.PyDLL(None), ctypes.create_string_buffer(64)
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)

def test_after():
    pass
"""


# pytest-timeout arms its timer around the whole protocol, which pytest-forked runs in the
# parent: its kill there ends the parent (test_pytest_timeout_protocol_limit_under_forked).
# With timeout_func_only it times the test function, in the forked child.
FUNC_ONLY = {
    "plain": [],
    "xdist": [],
    "forked": ["-o", "timeout_func_only=true"],
    "xdist_forked": ["-o", "timeout_func_only=true"],
}


@pytest.mark.parametrize("mode", ["plain", "xdist", "forked", "xdist_forked"])
def test_pytest_timeout_thread_method_is_a_timeout(pytester: pytest.Pytester, mode: str) -> None:
    pytest.importorskip("pytest_timeout")
    pytester.makeconftest(REPORTS_CONFTEST)
    pytester.makepyfile(test_suite=PYTEST_TIMEOUT_SUITE)
    xml = pytester.path / "junit.xml"
    result = run(
        pytester,
        *MODES[mode],
        *FUNC_ONLY[mode],
        "--timeout=1",
        "--timeout-method=thread",
        f"--junit-xml={xml}",
        "-k",
        "test_hangs or test_after",
    )
    no_internal_error(result)
    assert "BlackboxWarning" not in result.stderr.str(), result.stderr.str()
    if mode == "plain":  # pytest-timeout ended pytest itself
        assert result.ret == 1
    else:
        result.assert_outcomes(passed=1, failed=1)
        rep = next(r for r in reports_of(pytester, "test_hangs") if r.outcome == "failed")
        assert "timed out after 1.0 s in call (pytest-timeout)" in rep.longrepr, rep.longrepr
        assert rep.props["where"] == "'hangs'"
        assert junit_properties(xml)["test_hangs"]["where"] == "hangs"
    crashes = blackbox(pytester, "crashes")["crashes"]
    assert [(c["kind"], c["timeout"]["source"], c["timeout"]["limit_s"]) for c in crashes] == [
        ("timeout", "pytest-timeout", 1.0)
    ]


@pytest.mark.parametrize("mode", ["plain", "xdist", "forked", "xdist_forked"])
def test_pytest_timeout_signal_method_is_a_timeout(pytester: pytest.Pytester, mode: str) -> None:
    pytest.importorskip("pytest_timeout")
    pytester.makeconftest(REPORTS_CONFTEST)
    pytester.makepyfile(test_suite=PYTEST_TIMEOUT_SUITE)
    xml = pytester.path / "junit.xml"
    result = run(
        pytester,
        *MODES[mode],
        *FUNC_ONLY[mode],
        "--timeout=1",
        "--timeout-method=signal",
        f"--junit-xml={xml}",
        "-k",
        "not native",
    )
    no_internal_error(result)
    assert "BlackboxWarning" not in result.stderr.str(), result.stderr.str()
    result.assert_outcomes(passed=1, failed=1)
    rep = next(r for r in reports_of(pytester, "test_hangs") if r.outcome == "failed")
    assert "Timeout (>1.0s) from pytest-timeout" in rep.longrepr, rep.longrepr
    assert rep.props["where"] == "'hangs'"
    assert junit_properties(xml)["test_hangs"]["where"] == "hangs"
    tests = {t["nodeid"].split("::")[-1]: t for t in blackbox(pytester, "tests")["tests"]}
    t = tests["test_hangs"]
    assert t["outcome"] == "timeout"
    assert (t["timeout"]["source"], t["timeout"]["limit_s"], t["timeout"]["fatal"]) == (
        "pytest-timeout",
        1.0,
        False,
    )
    assert t["properties"] == {"where": "hangs"}
    assert blackbox(pytester, "crashes")["crashes"] == []


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie no one reaped has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("method", ["thread", "signal"])
def test_pytest_timeout_protocol_limit_under_forked(pytester: pytest.Pytester, method: str) -> None:
    """pytest-timeout's limit of the whole protocol under --forked: its timer runs in
    pytest-forked's parent, which it ends (nothing blackbox can change through public
    hooks). One warning says so and what to set; the forked test is not left running,
    orphaned, to be recorded as passed: the watchdog ends it at that limit, a timeout."""
    pytest.importorskip("pytest_timeout")
    pytester.makepyfile(
        test_suite="""
import time

def test_hangs(record_property):
    record_property("where", "hangs")
    time.sleep(60)

def test_after():
    pass
"""
    )
    t0 = time.monotonic()
    result = run(pytester, "--forked", "--timeout=1", f"--timeout-method={method}")
    err = result.stderr.str()
    assert result.ret == (1 if method == "thread" else 3), result.stdout.str() + err
    assert err.count("BlackboxWarning") == 1, err
    assert err.count("pytest-timeout's limit (1 s) with --forked") == 1, err
    assert "timeout_func_only = true" in err and "--blackbox-timeout" in err, err

    def ended() -> list:
        crashes = blackbox(pytester, "crashes")["crashes"]
        return crashes if crashes and not any(alive(c["pid"]) for c in crashes) else []

    crashes = wait_until(ended, timeout=LIMIT + SLACK + 10)
    assert time.monotonic() - t0 < 1 + 1 + SLACK + 15
    assert [(c["kind"], c["nodeid"], c["detail"]) for c in crashes] == [
        ("timeout", "test_suite.py::test_hangs", "timed out after 1.0 s in call (pytest-timeout)")
    ], crashes
    # A second after pytest-timeout's deadline (FORKED_GRACE): its parent gave up by then.
    assert 1.0 + 1.0 <= crashes[0]["timeout"]["elapsed_s"] < 1.0 + 1.0 + SLACK, crashes
    tests = {t["nodeid"]: t for t in blackbox(pytester, "tests")["tests"]}
    hung = tests["test_suite.py::test_hangs"]
    assert (hung["outcome"], hung["properties"]) == ("timeout", {"where": "hangs"}), hung
    assert tests["test_suite.py::test_after"]["outcome"] == "not-run", tests


@pytest.mark.parametrize(
    ("test", "args", "story"),
    [
        # pytest-timeout's is shorter: it acts, and the report says so.
        (
            "test_hangs",
            ["--blackbox-timeout=5", "--timeout=1", "--timeout-method=thread"],
            "timed out after 1.0 s in call (pytest-timeout)",
        ),
        # The watchdog's is shorter.
        (
            "test_hangs",
            ["--blackbox-timeout=1", "--timeout=5", "--timeout-method=thread"],
            "timed out after 1.0 s in call (blackbox_timeout)",
        ),
        # pytest-timeout cannot stop native code that holds the GIL (its signal handler
        # and its timer thread both need it): the watchdog, with the longer limit, does.
        (
            "test_native",
            ["--blackbox-timeout=2", "--timeout=1", "--timeout-method=signal"],
            "timed out after 2.0 s in call (blackbox_timeout)",
        ),
    ],
)
def test_both_limits_the_shorter_acts(
    pytester: pytest.Pytester, test: str, args: list[str], story: str
) -> None:
    pytest.importorskip("pytest_timeout")
    pytester.makepyfile(test_suite=PYTEST_TIMEOUT_SUITE)
    pytester.makeconftest(REPORTS_CONFTEST)
    result = run(pytester, "-n", "2", *args, "-k", f"{test} or test_after")
    no_internal_error(result)
    result.assert_outcomes(passed=1, failed=1)
    rep = next(r for r in reports_of(pytester, test) if r.outcome == "failed")
    assert story in rep.longrepr, rep.longrepr
