"""After pytest dies: `blackbox run` resumes it, `blackbox junit` writes the JUnit XML it
never wrote. Real sessions, real crashes; every XML file is validated against the xunit2
schema pytest's own tests use (tests/data/junit-10.xsd)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import xmlschema

from conftest import wait_until

BLACKBOX = str(Path(sys.executable).with_name("blackbox"))
SCHEMA = xmlschema.XMLSchema(str(Path(__file__).parent / "data" / "junit-10.xsd"))
README = Path(__file__).parent.parent / "README.md"

#: The ROCm runner's case: ten tests, the third segfaults and takes pytest with it.
ROCM_SUITE = """
import ctypes
from pytest_blackbox import record

def test_01(): pass
def test_02(): pass
def test_03(record_property):
    record("device", "gfx90a")
    record_property("pcc", 0.5)
    ctypes.string_at(0)
""" + "".join(f"def test_{i:02}(): pass\n" for i in range(4, 11))


def clean_env(**extra: str) -> dict[str, str]:
    """This session's environment without what would steer the inner sessions."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "BLACKBOX_")) and k != "PYTHONBREAKPOINT"
    }
    # `pytest` and `blackbox` of this venv first, as an activated venv has them.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def bb(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BLACKBOX, *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pytest_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]


def suite(root: Path, text: str, name: str = "test_suite.py") -> Path:
    (root / name).write_text(text)
    (root / "pytest.ini").write_text("[pytest]\n")
    return root


def valid(path: Path) -> ET.Element:
    """The document at ``path``, once it validates against the xunit2 schema."""
    errors = [f"{e.reason} at {e.path}" for e in SCHEMA.iter_errors(str(path))]
    assert not errors, "\n".join(errors) + "\n" + path.read_text()
    return ET.parse(path).getroot()


def cases(root: ET.Element) -> dict[str, ET.Element]:
    return {f"{c.get('classname')}::{c.get('name')}": c for c in root.iter("testcase")}


def verdict(case: ET.Element) -> str:
    kinds = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
    return kinds[0] if kinds else "passed"


def suite_counts(root: ET.Element) -> dict[str, int]:
    s = root.find("testsuite")
    assert s is not None
    return {k: int(s.get(k, "-1")) for k in ("tests", "failures", "errors", "skipped")}


# ---------------------------------------------------------------------------------------
# blackbox junit
# ---------------------------------------------------------------------------------------

MIXED_SUITE = """
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("no database")

def test_pass(record_property):
    record_property("pcc", 0.99)

def test_fail():
    assert 1 == 2, "bell \\x07 and <markup> & \\x1b[31m"

def test_setup_error(broken):
    pass

@pytest.mark.skip(reason="not on this machine")
def test_skip():
    pass

@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert 0

@pytest.mark.parametrize("x", ["a/b", "c::d"])
def test_param(x):
    pass

class TestGroup:
    def test_method(self):
        pass
"""


def test_junit_of_a_finished_run_matches_pytests_own_and_validates(tmp_path: Path) -> None:
    suite(tmp_path, MIXED_SUITE)
    rc = subprocess.run(
        pytest_cmd("--junit-xml=pytest.xml"), cwd=tmp_path, env=clean_env(), check=False
    ).returncode
    assert rc == 1
    r = bb("junit", "-o", "ours.xml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ours = valid(tmp_path / "ours.xml")
    theirs = ET.parse(tmp_path / "pytest.xml").getroot()
    mine, pytests = cases(ours), cases(theirs)
    # Every test, named as pytest's junitxml names it.
    assert sorted(mine) == sorted(pytests)
    assert "test_suite::test_param[a/b]" in mine and "test_suite.TestGroup::test_method" in mine
    for key, case in mine.items():
        want = verdict(pytests[key])
        # xunit2 has no <error>: a setup error is a <failure> saying so.
        assert verdict(case) == ("failure" if want == "error" else want), key
    fail = mine["test_suite::test_fail"].find("failure")
    their_fail = pytests["test_suite::test_fail"].find("failure")
    assert fail is not None and their_fail is not None
    assert fail.get("message") == their_fail.get("message")
    assert "#x07" in (fail.get("message") or "") and "#x1B" in (fail.text or "")
    assert (fail.text or "").strip() == (their_fail.text or "").strip()
    err = mine["test_suite::test_setup_error"].find("failure")
    assert err is not None
    assert err.get("message") == 'failed on setup with "RuntimeError: no database"'
    skip = mine["test_suite::test_skip"].find("skipped")
    assert skip is not None and skip.get("message") == "not on this machine"
    assert skip.get("type") == "pytest.skip" and (skip.text or "").endswith(": not on this machine")
    xfail = mine["test_suite::test_xfail"].find("skipped")
    assert xfail is not None and xfail.get("type") == "pytest.xfail"
    assert xfail.get("message") == "known bug"
    assert suite_counts(ours) == {"tests": 8, "failures": 2, "errors": 0, "skipped": 2}
    ts = ours.find("testsuite")
    assert ts is not None and ts.get("hostname") and ts.get("timestamp")

    # xunit1: pytest's other shape, <properties> and <error> in the testcase.
    r = bb("junit", "--family", "xunit1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    x1 = cases(ET.fromstring(r.stdout))
    assert verdict(x1["test_suite::test_setup_error"]) == "error"
    props = {p.get("name"): p.get("value") for p in x1["test_suite::test_pass"].iter("property")}
    assert props == {"pcc": "0.99"}
    assert x1["test_suite::test_pass"].get("file") == "test_suite.py"


DEAD_SUITE = """
import ctypes, os, time
from pytest_blackbox import record

def test_first():
    pass

def test_dies(record_property):
    record("model", "resnet50")
    record_property("pcc", 0.5)
    ctypes.string_at(0)

def test_never_runs():
    pass
"""


def test_junit_of_a_dead_run_has_the_crash_as_a_failure_with_properties_and_traceback(
    tmp_path: Path,
) -> None:
    suite(tmp_path, DEAD_SUITE)
    rc = subprocess.run(
        pytest_cmd("--junit-xml=pytest.xml"), cwd=tmp_path, env=clean_env(), check=False
    ).returncode
    assert rc == -signal.SIGSEGV
    assert not (tmp_path / "pytest.xml").exists()  # what CI shows today: nothing
    r = bb("junit", "-o", "out/junit.xml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    root = valid(tmp_path / "out" / "junit.xml")
    got = cases(root)
    assert verdict(got["test_suite::test_first"]) == "passed"
    failure = got["test_suite::test_dies"].find("failure")
    assert failure is not None
    message = failure.get("message") or ""
    assert re.fullmatch(r"crashed: killed by SIGSEGV in call \(pid \d+\)", message), message
    text = failure.text or ""
    assert re.search(r"pid \d+, worker main, run \S+", text), text
    assert "  model = resnet50\n" in text and "  pcc = 0.5\n" in text
    assert "Fatal Python error: Segmentation fault" in text
    assert re.search(r'File ".*test_suite.py", line 11 in test_dies', text), text
    # xunit1 has the properties as <property> elements.
    r = bb("junit", "--family=xunit1", cwd=tmp_path)
    case = cases(ET.fromstring(r.stdout))["test_suite::test_dies"]
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props == {"model": "resnet50", "pcc": "0.5"}


def test_junit_usage_errors_are_clear(tmp_path: Path) -> None:
    r = bb("junit", "--family", "xunit3", cwd=tmp_path)
    assert r.returncode == 2 and "--family takes xunit2, xunit1 or legacy" in r.stderr
    r = bb("junit", cwd=tmp_path)
    assert r.returncode == 1 and "no blackbox store" in r.stderr


# ---------------------------------------------------------------------------------------
# blackbox run
# ---------------------------------------------------------------------------------------


def test_run_exits_0_when_every_test_passes_and_leaves_pytests_junit_alone(
    tmp_path: Path,
) -> None:
    suite(tmp_path, "def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    r = bb("run", "--", *pytest_cmd("--junit-xml=j.xml"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout
    assert "blackbox run:" not in r.stderr  # nothing died, nothing to say
    root = valid(tmp_path / "j.xml")
    assert suite_counts(root)["tests"] == 2


def test_run_passes_pytests_own_statuses_through(tmp_path: Path) -> None:
    suite(tmp_path, "def test_a():\n    assert 0\n")
    assert bb("run", "--", *pytest_cmd(), cwd=tmp_path).returncode == 1
    assert bb("run", "--", *pytest_cmd("--no-such-option"), cwd=tmp_path).returncode == 4
    assert bb("run", "--", *pytest_cmd("-k", "nothing_matches"), cwd=tmp_path).returncode == 5


def test_run_says_when_the_command_is_not_found(tmp_path: Path) -> None:
    r = bb("run", "--", "no-such-pytest-here", "-x", cwd=tmp_path)
    assert r.returncode == 127
    assert "blackbox run: no-such-pytest-here: command not found" in r.stderr
    r = bb("run", cwd=tmp_path)
    assert r.returncode == 2 and "blackbox run -- pytest ARGS" in r.stderr


def test_run_max_restarts_0_stops_after_the_first_death(tmp_path: Path) -> None:
    suite(tmp_path, ROCM_SUITE, "test_rocm.py")
    r = bb("run", "--max-restarts", "0", "--", *pytest_cmd("--junit-xml=j.xml"), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "attempt 2" not in r.stderr
    # One session only: the store has one run, and the file covers it.
    runs = bb("runs", "--json", cwd=tmp_path)
    assert runs.returncode == 0, runs.stderr
    assert runs.stdout.count('"id"') == 1, runs.stdout
    root = valid(tmp_path / "j.xml")
    got = cases(root)
    assert verdict(got["test_rocm::test_01"]) == "passed"
    assert verdict(got["test_rocm::test_03"]) == "failure"


def test_run_passes_sigterm_on_and_does_not_restart(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    suite(
        tmp_path,
        "import time, pathlib\n\n"
        "def test_slow():\n"
        f"    pathlib.Path({str(marker)!r}).write_text('x')\n"
        "    time.sleep(60)\n\n"
        "def test_after():\n    pass\n",
    )
    proc = subprocess.Popen(
        [BLACKBOX, "run", "--", *pytest_cmd()],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(marker.exists, timeout=60)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # to the supervisor alone, as `kill` sends it
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - t0 < 20
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "attempt 2" not in err


def test_rocm_flow_is_one_command(tmp_path: Path) -> None:
    """Test 3 of 10 segfaults in plain mode: one command runs the other 9 and says so."""
    suite(tmp_path, ROCM_SUITE, "test_rocm.py")
    r = bb("run", "--", *pytest_cmd("--junit-xml=junit.xml"), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    restart = re.search(
        r"blackbox run: pytest died \(SIGSEGV in test_rocm.py::test_03\) with 7 tests left; "
        r"attempt 2 of 4: .*-m pytest .*--blackbox-resume$",
        r.stderr,
        re.M,
    )
    assert restart, r.stderr
    assert "attempt 3" not in r.stderr
    root = valid(tmp_path / "junit.xml")
    got = cases(root)
    assert len(got) == 10
    verdicts = {k: verdict(c) for k, c in got.items()}
    assert [k for k, v in verdicts.items() if v != "passed"] == ["test_rocm::test_03"]
    failure = got["test_rocm::test_03"].find("failure")
    assert failure is not None
    assert (failure.get("message") or "").startswith("crashed: killed by SIGSEGV in call")
    assert "  device = gfx90a\n" in (failure.text or "")
    assert suite_counts(root) == {"tests": 10, "failures": 1, "errors": 0, "skipped": 0}
    # `blackbox junit` of the latest run says the same: the resumed run covers both.
    again = bb("junit", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert {k: verdict(c) for k, c in cases(ET.fromstring(again.stdout)).items()} == verdicts


def test_run_with_retry_exits_0_when_the_crashed_test_passes_again(tmp_path: Path) -> None:
    """`--blackbox-resume=retry` ran the test that killed pytest again and it passed: every
    test of the logical run passed, so the exit status is 0, as pytest's over it."""
    mark = tmp_path / "died-once"
    suite(
        tmp_path,
        "import ctypes, pathlib\n\n"
        "def test_a(): pass\n\n"
        "def test_flaky_native():\n"
        f"    mark = pathlib.Path({str(mark)!r})\n"
        "    if not mark.exists():\n"
        "        mark.write_text('x')\n"
        "        ctypes.string_at(0)\n\n"
        "def test_c(): pass\n",
    )
    r = bb("run", "--", *pytest_cmd("--blackbox-resume=retry"), cwd=tmp_path)
    assert "attempt 2 of 4" in r.stderr, r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    # Without retry the crash is reported failed in the resumed session: exit 1.
    mark.unlink()
    again = bb("run", "--", *pytest_cmd(), cwd=tmp_path)
    assert "attempt 2 of 4" in again.stderr, again.stderr
    assert again.returncode == 1, again.stdout + again.stderr
    # `=retry` in the ini's addopts: the plain flag the supervisor appends keeps it.
    mark.unlink()
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --blackbox-resume=retry\n")
    from_ini = bb("run", "--", *pytest_cmd(), cwd=tmp_path)
    assert "attempt 2 of 4" in from_ini.stderr, from_ini.stderr
    assert "its crashed tests run again" in from_ini.stdout, from_ini.stdout
    assert from_ini.returncode == 0, from_ini.stdout + from_ini.stderr


def test_junit_of_a_run_stopped_by_x_says_the_session_ended(tmp_path: Path) -> None:
    suite(tmp_path, "def test_a():\n    assert False\n\ndef test_b(): pass\n")
    r = subprocess.run(
        pytest_cmd("-x"), cwd=tmp_path, env=clean_env(), capture_output=True, text=True
    )
    assert r.returncode == 1, r.stdout + r.stderr
    out = bb("junit", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    got = cases(ET.fromstring(out.stdout))
    skipped = got["test_suite::test_b"].find("skipped")
    assert skipped is not None
    assert re.fullmatch(
        r"not run: the session ended before it started \(run \S+\)", skipped.get("message") or ""
    )


def test_junit_of_the_dead_run_alone_lists_what_never_ran(tmp_path: Path) -> None:
    suite(tmp_path, ROCM_SUITE, "test_rocm.py")
    r = subprocess.run(pytest_cmd(), cwd=tmp_path, env=clean_env(), check=False)
    assert r.returncode == -signal.SIGSEGV
    out = tmp_path / "dead.xml"
    assert bb("junit", "-o", str(out), cwd=tmp_path).returncode == 0
    got = cases(valid(out))
    assert len(got) == 10
    skipped = got["test_rocm::test_07"].find("skipped")
    assert skipped is not None
    assert re.fullmatch(
        r"not run: pytest died before it started \(run \S+\)", skipped.get("message") or ""
    )
    assert verdict(got["test_rocm::test_03"]) == "failure"
    assert suite_counts(valid(out)) == {"tests": 10, "failures": 1, "errors": 0, "skipped": 7}


def readme_ci_steps() -> list[tuple[bool, str]]:
    """The README's CI snippet: (runs always, command) for each `run:` step."""
    text = README.read_text()
    block = next(
        b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "blackbox junit -o" in b
    )
    steps: list[tuple[bool, str]] = []
    always = False
    for line in block.splitlines():
        item = line.strip().removeprefix("- ")
        if item.startswith("if:"):
            always = "always()" in item
        elif item.startswith("run:"):
            steps.append((always, item.removeprefix("run:").strip()))
            always = False
        elif line.strip().startswith("- "):
            always = False
    return steps


def test_the_ci_snippet_of_the_readme(tmp_path: Path) -> None:
    steps = readme_ci_steps()
    assert [a for a, _ in steps] == [False, True], steps
    suite(tmp_path, ROCM_SUITE, "test_rocm.py")
    failed = False
    for always, command in steps:
        if failed and not always:
            continue
        r = subprocess.run(
            command,
            shell=True,
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        failed |= r.returncode != 0
        assert "INTERNALERROR" not in r.stdout + r.stderr
    assert failed  # the suite has a crash: the test step fails, as it should
    root = valid(tmp_path / "junit.xml")
    got = cases(root)
    assert len(got) == 10
    assert [k for k, c in got.items() if verdict(c) != "passed"] == ["test_rocm::test_03"]


def test_junit_of_a_run_the_watchdog_ended_has_the_timeout_and_every_thread(
    tmp_path: Path,
) -> None:
    suite(
        tmp_path,
        "import time\n\ndef test_a():\n    pass\n\n"
        "def test_hang(record_property):\n    record_property('k', 'v')\n    time.sleep(60)\n",
    )
    r = subprocess.run(
        pytest_cmd("--blackbox-timeout", "1"), cwd=tmp_path, env=clean_env(), check=False
    )
    assert r.returncode not in (0, 1)  # the watchdog ended pytest
    out = bb("junit", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    path = tmp_path / "j.xml"
    path.write_text(out.stdout)
    failure = cases(valid(path))["test_suite::test_hang"].find("failure")
    assert failure is not None
    assert re.fullmatch(
        r"timed out after 1\.0 s in call \(blackbox_timeout\) \(pid \d+\)",
        failure.get("message") or "",
    ), failure.get("message")
    assert "  k = v\n" in (failure.text or "")
    assert re.search(r'File ".*test_suite.py", line 8 in test_hang', failure.text or "")
