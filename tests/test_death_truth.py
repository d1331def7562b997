"""How a test process ended, told truly (issue 11): what the terminal shows of a crash is
at least what it shows without the plugin; an intentional exit after a test's reports is
no crash and pytest counts the test once; processes that ran no test of their own make no
crash; a killer a parent can see is named; what shows and runs nothing records no run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import MODES, junit_properties, no_internal_error, run, store

CRASHING = """
import ctypes, os

def test_first():
    pass

def test_dies(record_property):
    record_property("model", "resnet50")
    {death}
"""


@pytest.mark.parametrize(
    ("death", "signame"), [("ctypes.string_at(0)", "SIGSEGV"), ("os.abort()", "SIGABRT")]
)
def test_plain_crash_shows_the_traceback_as_without_the_plugin(
    pytester: pytest.Pytester, death: str, signame: str
) -> None:
    pytester.makepyfile(test_suite=CRASHING.format(death=death))
    off = run(pytester, "-q", "-p", "no:blackbox")
    on = run(pytester, "-q")
    assert off.ret == on.ret == -{"SIGSEGV": 11, "SIGABRT": 6}[signame]
    for result in (off, on):
        err = result.stderr.str()
        assert "Fatal Python error" in err, err
        assert 'test_suite.py", line 8 in test_dies' in err, err
    # Plus one line naming the test and where its story is.
    on.stderr.fnmatch_lines(
        [
            f"blackbox: test_suite.py::test_dies crashed with {signame} (pid *); "
            f"its story: blackbox crashes --dir {pytester.path / '.blackbox'}"
        ]
    )
    # The copy in the run folder is the same traceback.
    crash = store(pytester).latest().crashes[0]
    assert crash.traceback is not None
    assert 'test_suite.py", line 8 in test_dies' in crash.traceback

    # The next session says so in one line, under -q too.
    pytester.makepyfile(test_suite="def test_ok():\n    pass\n")
    again = run(pytester, "-q")
    assert again.ret == 0
    notices = [line for line in again.stdout.lines if "previous run" in line]
    assert len(notices) == 1, again.stdout.str()
    assert "crashed in test_suite.py::test_dies" in notices[0]


# The conftest of a GPU suite that ends a worker after each failed test to get a clean
# device (Genesis-Embodied-AI/quadrants PR #556).
EXIT_AFTER_FAILURE_CONFTEST = """
import os

IS_WORKER = False

def pytest_configure(config):
    global IS_WORKER
    IS_WORKER = hasattr(config, "workerinput")

def pytest_runtest_logreport(report):
    if IS_WORKER and report.failed:
        os._exit(1)
"""

FIVE_AND_FIVE = """
import ctypes
import pytest

@pytest.mark.parametrize("i", range(5))
def test_fails(i, record_property):
    record_property("i", i)
    assert i < 0, f"failure {i}"

@pytest.mark.parametrize("i", range(5))
def test_passes(i):
    pass
"""


@pytest.mark.parametrize("segfault", [False, True], ids=["exits", "exits_and_segfault"])
def test_exit_after_a_failed_report_is_no_crash(pytester: pytest.Pytester, segfault: bool) -> None:
    pytester.makeconftest(EXIT_AFTER_FAILURE_CONFTEST)
    suite = FIVE_AND_FIVE
    if segfault:
        suite += "\ndef test_segfaults():\n    ctypes.string_at(0)\n"
    pytester.makepyfile(test_suite=suite)
    xml = pytester.path / "junit.xml"
    result = run(pytester, "-n", "2", "--max-worker-restart=100", f"--junit-xml={xml}")
    no_internal_error(result)
    # pytest counts each test once: no synthetic "worker crashed" failure beside the real one.
    result.assert_outcomes(failed=6 if segfault else 5, passed=5)
    crash_reports = [
        line
        for line in result.stdout.lines
        if "crashed while running" in line and not line.startswith("FAILED")
    ]
    assert len(crash_reports) == (1 if segfault else 0), result.stdout.str()

    r = store(pytester).latest()
    tests = {t.nodeid.split("::")[-1]: t for t in r.tests}
    for i in range(5):
        t = tests[f"test_fails[{i}]"]
        assert (t.outcome, t.crashed) == ("failed", False), t
        assert r.properties(t.nodeid) == {"i": i}
        assert tests[f"test_passes[{i}]"].outcome == "passed"
    longreprs = {
        rec["nodeid"]: rec["report"]["longrepr"]
        for rec in r.records()
        if rec["kind"] == "test_phase" and rec["outcome"] == "failed" and rec["report"]
    }
    for i in range(5):
        assert f"failure {i}" in str(longreprs[f"test_suite.py::test_fails[{i}]"])
    crashes = [c for c in r.crashes if c.kind != "child"]
    if segfault:
        assert [(c.nodeid, c.signal) for c in crashes] == [("test_suite.py::test_segfaults", 11)]
        assert tests["test_segfaults"].crashed
    else:
        assert crashes == []
    # The replacement workers ran tests or nothing: neither is a crash.
    assert len([e for e in r.exits if e["nodeid"]]) >= 5
    # JUnit XML: one testcase per test, the failures with their properties.
    props = junit_properties(xml)
    assert props["test_fails[3]"] == {"i": "3"}
    cases = [line for line in xml.read_text().split("<testcase")[1:]]
    assert len(cases) == (11 if segfault else 10)


def test_exit_after_a_failed_report_in_plain_mode_ends_pytest_not_the_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(EXIT_AFTER_FAILURE_CONFTEST.replace("IS_WORKER and ", ""))
    pytester.makepyfile(test_suite=FIVE_AND_FIVE)
    result = run(pytester)
    assert result.ret == 1
    r = store(pytester).latest()
    t = r.tests[0]
    assert (t.nodeid, t.outcome, t.crashed) == ("test_suite.py::test_fails[0]", "failed", False)
    assert r.crashes == []
    assert [(e["nodeid"], e["phase"], e["code"]) for e in r.exits] == [
        ("test_suite.py::test_fails[0]", "call", 1)
    ]


CHILDREN = """
import ctypes, multiprocessing, os
from pytest_blackbox import record

def _child():
    os._exit(0)

def test_multiprocessing_child():
    p = multiprocessing.get_context("fork").Process(target=_child)
    p.start()
    p.join()
    assert p.exitcode == 0

def test_fork_exits_3():
    record("before", 1)
    pid = os.fork()
    if pid == 0:
        record("in_child", 1)
        os._exit(3)
    assert os.waitpid(pid, 0)[1] >> 8 == 3

def test_child_records_and_dies():
    pid = os.fork()
    if pid == 0:
        record("from_child", 1)
        ctypes.string_at(0)
    assert os.waitpid(pid, 0)[1] & 0x7F == 11

def test_last():
    pass
"""


def test_children_of_tests_are_no_crash_of_a_test(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(test_children=CHILDREN)
    result = run(pytester, *MODES[mode])
    no_internal_error(result)
    result.assert_outcomes(passed=4)
    r = store(pytester).latest()
    assert {t.nodeid.split("::")[-1]: (t.outcome, t.crashed) for t in r.tests} == {
        name: ("passed", False)
        for name in (
            "test_multiprocessing_child",
            "test_fork_exits_3",
            "test_child_records_and_dies",
            "test_last",
        )
    }
    # The one child that died of a signal is told as a child of its test.
    assert [(c.kind, c.nodeid, c.signal) for c in r.crashes] == [
        ("child", "test_children.py::test_child_records_and_dies", 11)
    ], r.crashes
    assert r.crashes[0].detail == (
        "child process of test_children.py::test_child_records_and_dies died of SIGSEGV"
    )
    assert r.properties("test_children.py::test_child_records_and_dies") == {"from_child": 1}
    out = result.stdout.str()
    assert "0 crashed" in out, out
    assert "CRASHED" not in out


HANGS_THEN_KILLED = """
import os, signal, time
from pytest_blackbox import record

def test_hangs_then_killed():
    record("started", True)
    time.sleep(1.5)
    os.kill(os.getpid(), signal.SIGKILL)

def test_after():
    pass
"""


@pytest.mark.parametrize("mode", ["forked", "xdist", "xdist_forked"])
def test_sigkill_is_named_and_the_duration_runs_to_the_death(
    pytester: pytest.Pytester, mode: str
) -> None:
    pytester.makepyfile(test_kill=HANGS_THEN_KILLED)
    result = run(pytester, *MODES[mode])
    no_internal_error(result)
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*blackbox: setup passed, call crashed with SIGKILL*"])
    r = store(pytester).latest()
    (c,) = r.crashes
    assert (c.signal, c.signal_name, c.kind) == (9, "SIGKILL", "killed")
    t = next(t for t in r.tests if t.nodeid.endswith("test_hangs_then_killed"))
    assert t.crashed and t.duration_s >= 1.4, t


def _memory_cgroup_for_test() -> Path | None:
    """A new memory cgroup (v1 or v2) under this process's own, or None where none can be
    made here (not root, no writable cgroup)."""
    if os.geteuid() != 0:
        return None
    own = Path("/proc/self/cgroup").read_text().splitlines()
    for line in own:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
        elif controllers == "":
            base = Path("/sys/fs/cgroup") / path.lstrip("/")
            if not (base / "memory.events").exists():
                continue
        else:
            continue
        cg = base / f"bbx-oom-{uuid.uuid4().hex[:8]}"
        try:
            cg.mkdir()
        except OSError:
            continue
        limits = {
            "memory.limit_in_bytes": str(256 << 20),
            "memory.memsw.limit_in_bytes": str(256 << 20),
            "memory.max": str(256 << 20),
            "memory.swap.max": "0",
        }
        for name, value in limits.items():
            if (cg / name).exists():
                (cg / name).write_text(value)
        return cg
    return None


OOM_CONFTEST = """
import os

def pytest_configure(config):
    if hasattr(config, "workerinput") or not os.environ.get("BBX_OOM_WORKERS_ONLY"):
        with open(os.path.join(os.environ["BBX_OOM_CGROUP"], "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
"""

OOM_SUITE = """
def test_before():
    pass

def test_eats_memory():
    hog = []
    while True:
        hog.append(bytearray(16 << 20))

def test_after():
    pass
"""


@pytest.mark.parametrize("mode", ["forked", "xdist"])
def test_an_oom_kill_is_named(pytester: pytest.Pytester, mode: str) -> None:
    cg = _memory_cgroup_for_test()
    if cg is None:
        pytest.skip("needs root and a memory cgroup this process can make a child of")
    try:
        pytester.makeconftest(OOM_CONFTEST)
        pytester.makepyfile(test_oom=OOM_SUITE)
        env = {"BBX_OOM_CGROUP": str(cg)}
        if mode == "xdist":
            env["BBX_OOM_WORKERS_ONLY"] = "1"
        for k, v in env.items():
            os.environ[k] = v
        try:
            result = run(pytester, *MODES[mode])
        finally:
            for k in env:
                del os.environ[k]
        no_internal_error(result)
        result.assert_outcomes(failed=1, passed=2)
        result.stdout.fnmatch_lines(["*call was killed by the OOM killer (SIGKILL)*"])
        (c,) = store(pytester).latest().crashes
        assert c.signal == 9 and c.nodeid.endswith("test_eats_memory")
    finally:
        procs = (cg / "cgroup.procs").read_text().split() if cg.exists() else []
        for pid in procs:
            with open(cg.parent / "cgroup.procs", "w") as f:
                f.write(pid)
        cg.rmdir()


@pytest.mark.parametrize(
    "args",
    [["--collect-only"], ["--co", "-q"], ["--fixtures"], ["--help"], ["--version"], ["--markers"]],
    ids=lambda a: a[0],
)
def test_what_runs_no_test_records_no_run(pytester: pytest.Pytester, args: list[str]) -> None:
    pytester.makepyfile(test_suite=CRASHING.format(death="ctypes.string_at(0)"))
    run(pytester)
    crashed = store(pytester).runs()
    assert len(crashed) == 1
    shown = run(pytester, *args)
    assert shown.ret == 0, shown.stdout.str() + shown.stderr.str()
    assert store(pytester).runs() == crashed
    blackbox = shutil.which("blackbox", path=str(Path(sys.executable).parent))
    assert blackbox is not None
    out = subprocess.run(
        [blackbox, "crashes", "--json", "--dir", str(pytester.path / ".blackbox")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [c["nodeid"] for c in json.loads(out)["crashes"]] == ["test_suite.py::test_dies"]
    # And the next session that runs tests still tells of the crash.
    pytester.makepyfile(test_suite="def test_ok():\n    pass\n")
    again = run(pytester)
    again.stdout.fnmatch_lines(["blackbox: previous run * crashed in test_suite.py::test_dies*"])


DEVICES_CONFTEST = """
import os

def pytest_configure(config):
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = workerinput["workerid"][2:]
        os.environ["ZE_AFFINITY_MASK"] = "0.1"
"""


def test_the_accelerators_of_a_process_are_in_its_story(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(DEVICES_CONFTEST)
    pytester.makepyfile(test_suite=CRASHING.format(death="ctypes.string_at(0)"))
    result = run(pytester, "-n", "2")
    no_internal_error(result)
    r = store(pytester).latest()
    (c,) = r.crashes
    gpu = c.worker[2:]
    assert c.devices == {"CUDA_VISIBLE_DEVICES": gpu, "ZE_AFFINITY_MASK": "0.1"}
    workers = {w.id: w.devices for w in r.workers if w.id.startswith("gw")}
    assert workers["gw0"]["CUDA_VISIBLE_DEVICES"] == "0"
    out = result.stdout.str()
    assert f"CUDA_VISIBLE_DEVICES={gpu} ZE_AFFINITY_MASK=0.1" in out, out
    crash_lines = [line for line in out.splitlines() if line.startswith("CRASHED")]
    assert len(crash_lines) == 1 and f"CUDA_VISIBLE_DEVICES={gpu}" in crash_lines[0]
    assert re.search(r"blackbox: setup passed, call crashed with SIGSEGV \(worker gw\d", out)
