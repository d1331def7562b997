"""Helpers of the end-to-end suite: real pytest sessions in subprocesses, in every mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_blackbox import Store

#: Command-line arguments of each way to run a suite.
MODES: dict[str, list[str]] = {
    "plain": [],
    "forked": ["--forked"],
    "xdist": ["-n", "2"],
    "xdist_forked": ["-n", "2", "--forked"],
}

#: Ways a test dies, as the code that does it.
DEATHS: dict[str, str] = {
    "segv": "ctypes.string_at(0)",
    "abort": "os.abort()",
    "sigkill": "os.kill(os.getpid(), signal.SIGKILL)",
    "exit": "os._exit(3)",
}

#: A conftest for inner sessions: the parent (main process, forked parent or xdist
#: controller) writes every report it logs to reports.jsonl, so tests can see exactly what
#: pytest and its plugins saw.
REPORTS_CONFTEST = """
import json, os

IS_WORKER = False

def pytest_configure(config):
    # Not PYTEST_XDIST_WORKER: an outer xdist worker's environment leaks into this session.
    global IS_WORKER
    IS_WORKER = hasattr(config, "workerinput")

def pytest_runtest_logreport(report):
    if IS_WORKER:
        return
    row = {
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "user_properties": [[k, repr(v)] for k, v in report.user_properties],
        "longrepr": str(report.longrepr) if report.longrepr else "",
        "sections": [[k, v] for k, v in report.sections],
    }
    with open(os.path.join(os.path.dirname(__file__), "reports.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\\n")
"""


@dataclass
class Report:
    nodeid: str
    when: str
    outcome: str
    user_properties: list[list[str]]
    longrepr: str
    sections: list[list[str]]

    @property
    def props(self) -> dict[str, str]:
        """user_properties as {key: repr(value)}."""
        return {k: v for k, v in self.user_properties}


def reports(pytester: pytest.Pytester) -> list[Report]:
    path = pytester.path / "reports.jsonl"
    if not path.exists():
        return []
    return [Report(**json.loads(line)) for line in path.read_text().splitlines() if line]


def reports_of(pytester: pytest.Pytester, name: str) -> list[Report]:
    """The parent's reports of the test whose nodeid ends with ``::name``."""
    return [r for r in reports(pytester) if r.nodeid.endswith("::" + name)]


def junit_properties(xml: Path) -> dict[str, dict[str, str]]:
    """{testcase name: {property name: value}} of a JUnit XML file."""
    root = ET.parse(xml).getroot()
    out: dict[str, dict[str, str]] = {}
    for case in root.iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        out[case.get("name", "")] = props
    return out


def junit_outcomes(xml: Path) -> dict[str, str]:
    """{testcase name: passed|failure|error|skipped}."""
    root = ET.parse(xml).getroot()
    out = {}
    for case in root.iter("testcase"):
        kinds = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        out[case.get("name", "")] = kinds[0] if kinds else "passed"
    return out


def run(pytester: pytest.Pytester, *args: str, timeout: float = 180) -> pytest.RunResult:
    """pytest in a subprocess (a crash there cannot take this run down)."""
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=timeout)


def cli_json(pytester: pytest.Pytester, *args: str) -> dict:
    """``blackbox ARGS --json`` in the pytester folder, parsed."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest_blackbox.cli", *args, "--json"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def cli_text(pytester: pytest.Pytester, *args: str) -> str:
    """``blackbox ARGS``'s table in the pytester folder, as a person reads it."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_blackbox.cli", *args],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def store(pytester: pytest.Pytester) -> Store:
    return Store(pytester.path / ".blackbox")


def no_internal_error(result: pytest.RunResult) -> None:
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out, out
    assert result.ret not in (2, 3, 4), out


@pytest.fixture(params=sorted(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


def prop_value(props: dict[str, Any], key: str) -> Any:
    assert key in props, f"{key!r} missing from {props}"
    return props[key]


def wait_until(cond: Any, timeout: float = 60) -> Any:
    """``cond()``'s first truthy value, polling; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


#: A test id longer than any table: what tables must cut in the middle.
LONG_ID = "x" * 150

#: A suite whose tests pass, fail, segfault and call os._exit, with properties and fixtures
#: (the user's `db`, pytest's `record_property` and `tmp_path`): what a person reads about.
CRASHING_SUITE = f"""
import ctypes, os, time
import pytest
from pytest_blackbox import record

@pytest.fixture
def db():
    time.sleep(0.05)
    return 1

def test_ok(db, record_property):
    record_property("pcc", 0.99)
    time.sleep(1.5)

def test_segv(db, record_property, tmp_path):
    record("model", "resnet50")
    record_property("pcc", 0.5)
    ctypes.string_at(0)

def test_exit():
    os._exit(3)

def test_fail():
    record("input_shape", [1, 3, 224, 224])
    assert 1 == 2

@pytest.mark.parametrize("name", ["{LONG_ID}"], ids=["{LONG_ID}"])
def test_long(name):
    pass
"""


def run_pytest(cwd: Path, *args: str) -> tuple[int, str]:
    """A pytest session in a subprocess, out of reach of this session's settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "BLACKBOX_")) and k != "PYTHONBREAKPOINT"
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert "INTERNALERROR" not in output, output
    return proc.returncode, output


def crashing_sessions(root: Path, *args: str, times: int = 2) -> str:
    """CRASHING_SUITE in ``root`` (its own rootdir), run ``times`` times with ``args``;
    the last session's output."""
    (root / "test_suite.py").write_text(CRASHING_SUITE)
    (root / "pytest.ini").write_text("[pytest]\n")
    out = ""
    for _ in range(times):
        _, out = run_pytest(root, *args)
    return out
