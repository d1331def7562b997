"""The `blackbox` console script on runs that real pytest sessions wrote: while they run,
after pytest was SIGKILLed, and with bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_until

BLACKBOX = str(Path(sys.executable).with_name("blackbox"))

BLOCKING_SUITE = """
import os, time
from pytest_blackbox import record

def wait_for_release():
    while not os.path.exists("release"):
        time.sleep(0.02)

def test_quick():
    record("quick", True)

def test_blocks_a():
    record("who", "a")
    wait_for_release()

def test_blocks_b():
    record("who", "b")
    wait_for_release()
"""


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BLACKBOX, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def stats(cwd: Path) -> dict[str, Any]:
    r = cli("stats", "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def start_pytest(path: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def running_tests(path: Path) -> list[dict[str, Any]] | None:
    if not (path / ".blackbox").exists():
        return None
    r = cli("stats", "--json", cwd=path)
    if r.returncode != 0:
        return None
    tests = json.loads(r.stdout)["tests"]
    # A test is running from its start record; its first property commits a moment later.
    running = [t for t in tests if t["outcome"] == "running" and "who" in t["properties"]]
    return running or None


@pytest.mark.parametrize("xdist", [False, True], ids=["plain", "xdist"])
def test_stats_on_a_live_run(pytester: pytest.Pytester, xdist: bool) -> None:
    pytester.makepyfile(test_live=BLOCKING_SUITE)
    proc = start_pytest(pytester.path, *(["-n", "2"] if xdist else []))
    try:
        expected = 2 if xdist else 1
        running = wait_until(
            lambda: (r := running_tests(pytester.path)) and len(r) >= expected and r
        )
        view = stats(pytester.path)
        assert view["run"]["live"] is True
        for t in running:
            assert t["pid"] and t["properties"]["who"] in ("a", "b")
            if xdist:
                assert t["worker"] in ("gw0", "gw1")
        human = cli("stats", cwd=pytester.path)
        assert human.returncode == 0 and "running" in human.stdout
        (pytester.path / "release").touch()
        assert proc.wait(timeout=120) == 0
    finally:
        (pytester.path / "release").touch()
        proc.kill()
        proc.wait()
    done = stats(pytester.path)
    assert done["run"]["live"] is False
    assert sorted(t["outcome"] for t in done["tests"]) == ["passed"] * 3
    assert done["run"]["exit_status"] == 0


def test_stats_after_pytest_was_sigkilled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_live=BLOCKING_SUITE)
    proc = start_pytest(pytester.path)
    try:
        running = wait_until(lambda: running_tests(pytester.path))
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    view = stats(pytester.path)
    assert view["run"]["live"] is False
    killed = next(t for t in view["tests"] if t["nodeid"] == running[0]["nodeid"])
    assert killed["outcome"] == "crashed"
    assert killed["pid"] == proc.pid
    assert killed["properties"] == {"who": killed["properties"]["who"]}
    crash = [c for c in view["crashes"] if c["nodeid"] == killed["nodeid"]]
    assert len(crash) == 1 and crash[0]["pid"] == proc.pid and crash[0]["signal"] is None
    human = cli("crashes", cwd=pytester.path)
    assert human.returncode == 0 and "test_blocks_a" in human.stdout


def test_stats_after_an_xdist_worker_was_sigkilled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_live=BLOCKING_SUITE)
    proc = start_pytest(pytester.path, "-n", "2")
    try:
        running = wait_until(lambda: (r := running_tests(pytester.path)) and len(r) >= 2 and r)
        victim = running[0]
        os.kill(victim["pid"], signal.SIGKILL)
        (pytester.path / "release").touch()
        assert proc.wait(timeout=120) == 1  # the killed worker's test failed
    finally:
        (pytester.path / "release").touch()
        proc.kill()
        proc.wait()
    view = stats(pytester.path)
    crashed = [t for t in view["tests"] if t["outcome"] == "crashed"]
    assert [t["nodeid"] for t in crashed] == [victim["nodeid"]]
    assert crashed[0]["worker"] == victim["worker"] and crashed[0]["pid"] == victim["pid"]


def test_console_script_bad_input(tmp_path: Path) -> None:
    r = cli("stats", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "no blackbox store" in r.stderr
    assert "Traceback" not in r.stderr
    (tmp_path / ".blackbox").mkdir()
    r = cli("stats", cwd=tmp_path)
    assert r.returncode == 1 and "holds no run yet" in r.stderr
    r = cli("stats", "--bogus-flag", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("blackbox: ")
    r = cli("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("blackbox ")
