"""After pytest itself dies (issue 14): the tests that never ran, resuming the run, and
the next ``--lf``. Every dead run here is a real death of pytest: a segfault or abort in
plain mode, or the xdist controller killed with SIGKILL from one of its workers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli_json as cli
from conftest import cli_text, junit_outcomes, junit_properties, no_internal_error, run, store
from pytest_blackbox import _native

#: Ten tests; test_03 dies (how: {death}) the first time only (a marker file), so a run
#: that goes on after it can pass it; test_05 fails.
SUITE = """
import ctypes, os, signal, pathlib, pytest

MARK = pathlib.Path(__file__).with_name("died-once")

@pytest.mark.parametrize("i", range(10))
def test_n(i, record_property):
    record_property("i", i)
    if i == 3 and not MARK.exists():
        MARK.write_text("x")
        {death}
    assert i != 5
"""

#: The death of the whole pytest: in plain mode the test's own process is pytest; under
#: xdist the worker kills its controller (its parent).
KILL_PYTEST = {
    "segv": "ctypes.string_at(0)",
    "abort": "os.abort()",
    "kill-controller": "os.kill(os.getppid(), signal.SIGKILL); time.sleep(5)",
}


def nid(i: int) -> str:
    return f"test_suite.py::test_n[{i}]"


def dead_run(pytester: pytest.Pytester, death: str, *args: str) -> None:
    code = KILL_PYTEST[death].replace("time.sleep", "__import__('time').sleep")
    pytester.makepyfile(test_suite=SUITE.format(death=code))
    result = run(pytester, *args)
    assert result.ret < 0, result.stdout.str()  # pytest itself died of a signal
    # An xdist worker whose controller died ends on its own; wait for its lock to go.
    deadline = time.monotonic() + 60
    while store(pytester).latest().live and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.mark.parametrize("death", ["segv", "abort"])
def test_the_tests_that_never_ran_are_listed(pytester: pytest.Pytester, death: str) -> None:
    dead_run(pytester, death)
    latest = store(pytester).latest()
    assert latest.died and latest.collected == 10
    assert [t.nodeid for t in latest.not_run] == [nid(i) for i in range(4, 10)]
    assert [t.nodeid for t in latest.not_finished] == [nid(3)] + [nid(i) for i in range(4, 10)]
    listed = cli(pytester, "tests", "--outcome", "not-run")
    assert listed["run"]["collected"] == 10
    assert sorted(t["nodeid"] for t in listed["tests"]) == sorted(nid(i) for i in range(4, 10))
    assert {t["outcome"] for t in listed["tests"]} == {"not-run"}
    assert "6 never ran" in cli_text(pytester, "stats")


def test_the_tests_that_never_ran_are_listed_when_the_xdist_controller_dies(
    pytester: pytest.Pytester,
) -> None:
    dead_run(pytester, "kill-controller", "-n", "2")
    latest = store(pytester).latest()
    assert latest.died and latest.collected == 10
    ran = {t.nodeid for t in latest.tests if t.outcome != "not-run"}
    assert nid(3) in ran
    assert {t.nodeid for t in latest.not_run} == {nid(i) for i in range(10)} - ran


@pytest.mark.parametrize("args", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_resume_runs_what_the_dead_run_did_not_finish(
    pytester: pytest.Pytester, args: list[str]
) -> None:
    dead_run(pytester, "kill-controller" if args else "segv", *args)
    dead = store(pytester).latest()
    finished = {t.nodeid for t in dead.tests if not t.not_finished}
    crashed = {t.nodeid for t in dead.tests if t.crashed}
    xml = pytester.path / "resumed.xml"
    result = run(pytester, *args, "--blackbox-resume", f"--junitxml={xml}")
    no_internal_error(result)
    out = result.stdout.str()
    assert f"resuming run {dead.id} (attempt 2)" in out
    assert result.ret == 1  # test_n[5] failed (and a crash, if any, is reported failed)
    resumed = store(pytester).latest()
    assert (resumed.resumes, resumed.attempt) == (dead.id, 2)
    # What the dead run finished did not run again; the rest did, each once.
    ran_now = {t.nodeid for t in resumed.tests}
    assert not ran_now & finished
    assert ran_now == {nid(i) for i in range(10)} - finished - crashed
    if not args:  # under xdist the workers deselect; the controller's line does not say
        assert f"{len(finished) + len(crashed)} deselected" in out
    # The crashed test: reported failed with its crash story and the properties it had
    # recorded (under xdist the other worker's test may die in its setup, before any).
    outcomes = junit_outcomes(xml)
    recorded = {t.nodeid: t.properties for t in dead.tests}
    for c in crashed:
        name = c.split("::")[1]
        assert outcomes[name] == "failure"
        assert junit_properties(xml)[name] == {k: str(v) for k, v in recorded[c].items()}
    assert nid(3) in crashed  # it records, then dies
    assert junit_properties(xml)["test_n[3]"] == {"i": "3"}
    assert f"FAILED {nid(3)}" in out or not crashed
    # One logical run: every test once, with the attempt it ran in.
    logical = cli(pytester, "stats")
    attempts = {t["nodeid"]: t["attempt"] for t in logical["tests"]}
    assert len(logical["tests"]) == 10 and set(attempts) == {nid(i) for i in range(10)}
    assert all(attempts[n] == 1 for n in finished | crashed)
    assert all(attempts[n] == 2 for n in ran_now)
    assert {t.nodeid: t.attempt for t in resumed.logical().tests} == attempts
    assert "ATTEMPT" in cli_text(pytester, "stats")


@pytest.mark.parametrize("args", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_resume_reports_the_dead_runs_failures_again(
    pytester: pytest.Pytester, args: list[str]
) -> None:
    """A failure the dead run had before it died is logged again by the resumed session,
    with the traceback and properties pytest gave it there: the resumed session's summary,
    exit status and junit tell the whole logical run, as a run that never died would."""
    # Under xdist the other worker first finishes the test it runs (test_n[1] may be it).
    death = "__import__('time').sleep(2); " + KILL_PYTEST["kill-controller"] if args else ""
    death = death.replace("; time.sleep", "; __import__('time').sleep") or KILL_PYTEST["segv"]
    pytester.makepyfile(test_suite=SUITE.replace("i != 5", "i != 1").format(death=death))
    assert run(pytester, *args).ret < 0
    deadline = time.monotonic() + 60
    while store(pytester).latest().live and time.monotonic() < deadline:
        time.sleep(0.2)
    dead = store(pytester).latest()
    failed_there = [t.nodeid for t in dead.tests if t.outcome == "failed"]
    assert failed_there == [nid(1)], [(t.nodeid, t.outcome) for t in dead.tests]

    xml = pytester.path / "resumed.xml"
    result = run(pytester, *args, "--blackbox-resume", f"--junitxml={xml}")
    no_internal_error(result)
    out = result.stdout.str()
    assert "1 failure reported again" in out
    assert result.ret == 1
    # pytest's own report of the failure in the dead run: its assertion and its line.
    result.stdout.fnmatch_lines(["*_ test_n?1? _*", "*assert 1 != 1*", "FAILED *::test_n?1?*"])
    assert out.count(f"FAILED {nid(1)}") == 1
    assert junit_outcomes(xml)["test_n[1]"] == "failure"
    assert junit_properties(xml)["test_n[1]"] == {"i": "1"}
    # Logged, not run nor recorded again: the logical run keeps it in attempt 1.
    assert nid(1) not in {t.nodeid for t in store(pytester).latest().tests}
    logical = {t["nodeid"]: (t["outcome"], t["attempt"]) for t in cli(pytester, "stats")["tests"]}
    assert logical[nid(1)] == ("failed", 1)


def test_resume_retry_runs_the_crashed_test_again(pytester: pytest.Pytester) -> None:
    dead_run(pytester, "segv")
    result = run(pytester, "--blackbox-resume=retry")
    no_internal_error(result)
    result.stdout.fnmatch_lines(
        ["*its crashed tests run again*", "*1 failed, 6 passed, 3 deselected*"]
    )
    tests = {t.nodeid: (t.outcome, t.attempt) for t in store(pytester).latest().logical().tests}
    assert tests[nid(3)] == ("passed", 2)
    assert tests[nid(0)] == ("passed", 1)
    assert tests[nid(5)] == ("failed", 2)


def test_resume_after_a_finished_run_runs_everything(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite="def test_a(): pass\n")
    assert run(pytester).ret == 0
    result = run(pytester, "--blackbox-resume")
    result.stdout.fnmatch_lines(["*finished; nothing to resume, running everything*", "*1 passed*"])
    assert store(pytester).latest().attempt == 1


def test_next_lf_reruns_the_dead_runs_failures_and_crash(pytester: pytest.Pytester) -> None:
    """The README's --lf flow: the cache is on here (no -p no:cacheprovider)."""
    pytester.makepyfile(
        test_suite=SUITE.replace("i != 5", "i not in (1, 2)").format(death="ctypes.string_at(0)")
    )
    dead = pytester.runpytest_subprocess(timeout=180)
    assert dead.ret < 0
    again = pytester.runpytest_subprocess("--lf", timeout=180)
    no_internal_error(again)
    # test_n[1] and [2] failed, test_n[3] crashed: those three run, not the other seven.
    again.stdout.fnmatch_lines(
        ["*run-last-failure: rerun previous 3 failures*", "*2 failed, 1 passed*"]
    )
    # Once per dead run: that session's own end wrote lastfailed (the two failures).
    third = pytester.runpytest_subprocess("--lf", timeout=180)
    third.stdout.fnmatch_lines(["*rerun previous 2 failures*", "*2 failed in*"])


def test_lf_keeps_pytests_own_when_its_plugin_cannot_be_made_again(
    pytester: pytest.Pytester,
) -> None:
    """A pytest whose LFPlugin is built otherwise: one warning, and --lf as without us."""
    pytester.makeconftest(
        "import _pytest.cacheprovider as cp\n"
        "made = []\n"
        "original = cp.LFPlugin.__init__\n"
        "def init(self, config):\n"
        "    made.append(1)\n"
        "    if len(made) > 1:\n"
        "        raise TypeError('LFPlugin changed')\n"
        "    original(self, config)\n"
        "cp.LFPlugin.__init__ = init\n"
    )
    pytester.makepyfile(test_suite=SUITE.format(death="ctypes.string_at(0)"))
    assert pytester.runpytest_subprocess(timeout=180).ret < 0
    again = pytester.runpytest_subprocess("--lf", timeout=180)
    no_internal_error(again)
    again.stderr.fnmatch_lines(["*--lf cannot see the failures of the dead run*LFPlugin changed*"])
    # pytest's own --lf, as without the plugin: it never got the dead run's failures.
    again.stdout.fnmatch_lines(["*no previously failed tests*", "*1 failed, 9 passed*"])


def test_lf_is_left_alone_without_the_cacheprovider(pytester: pytest.Pytester) -> None:
    dead_run(pytester, "segv")
    result = run(pytester, "--lf")  # run() passes -p no:cacheprovider: --lf is unknown
    assert result.ret == 4
    assert not (pytester.path / ".pytest_cache").exists()


def test_a_collection_of_100k_nodeids_is_small(tmp_path: Path) -> None:
    """docs/format.md's size: the collection record of 100,000 nodeids against the records
    of a real run of the same tests (measured on 500, per test). Its time is a bench's
    (benches/python/collected.py), never a timed assertion here."""
    ids = [
        f"tests/unit/test_module_{i // 500:03d}.py::TestClass{i // 100 % 5}"
        f"::test_case[{i % 100}-float32]"
        for i in range(100_000)
    ]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rec = _native.Recorder(str(run_dir), "main")
    rec.collected(ids)
    head = Path(rec.segment_path).read_bytes()[:4096]
    collected_bytes = int.from_bytes(head[32:40], "little") - 4096
    rec.close()
    # A real run's bytes per test: 500 passing tests recording one property each.
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_many.py").write_text(
        "import pytest\n@pytest.mark.parametrize('i', range(500))\n"
        "def test_case(i, record_property):\n    record_property('i', i)\n"
    )
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite)],
        cwd=suite,
        capture_output=True,
        check=True,
        timeout=300,
    )
    run_dir = max((suite / ".blackbox").iterdir(), key=lambda p: p.name if p.is_dir() else "")
    used = 0
    for seg in run_dir.glob("*.seg"):
        head = seg.read_bytes()[:4096]
        used += int.from_bytes(head[32:40], "little")
    per_test = used / 500
    share = collected_bytes / (per_test * 100_000)
    print(
        f"100k nodeids: collection {collected_bytes} bytes; "
        f"a run records {per_test:.0f} bytes per test: {share:.2%} of a 100k-test run"
    )
    assert share < 0.05
