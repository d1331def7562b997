"""RunReader.follow(): a run read on a thread of its own while it goes on (the plugin's
parents use it so that the terminal summary and the history fold find little left to read)."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import pytest

from pytest_blackbox import _native, start_run, stop_run


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def test_a_following_reader_reads_without_being_polled(tmp_path: Path) -> None:
    session = start_run(tmp_path / "store")
    try:
        reader = _native.RunReader(session.run_dir)
        threads = _threads()
        reader.follow(0.01)
        assert reader.following
        assert _threads() == threads + 1
        reader.follow(0.01)  # again: still one thread
        assert _threads() == threads + 1

        # properties() does not poll: only the thread can have read these records.
        session.recorder.record("k", 1, "script::a")
        assert _wait_for(lambda: reader.properties("script::a") == [("k", 1)])
        session.recorder.append("log", "x", "script::a")
        assert _wait_for(lambda: dict(reader.properties("script::a")).get("log") == ["x"])

        reader.stop_following()
        assert not reader.following
        assert _threads() == threads
        session.recorder.record("k", 2, "script::a")
        time.sleep(0.1)
        assert dict(reader.properties("script::a"))["k"] == 1  # nobody polled
        assert reader.poll() == 1
        assert dict(reader.properties("script::a"))["k"] == 2
        reader.stop_following()  # again: nothing to stop
    finally:
        stop_run(session)


def test_dropping_a_following_reader_stops_its_thread(tmp_path: Path) -> None:
    session = start_run(tmp_path / "store")
    try:
        threads = _threads()
        reader = _native.RunReader(session.run_dir)
        reader.follow(0.01)
        assert _threads() == threads + 1
        del reader
        assert _threads() == threads
    finally:
        stop_run(session)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, 1e300])
def test_follow_takes_only_a_positive_interval(tmp_path: Path, bad: float) -> None:
    session = start_run(tmp_path / "store")
    try:
        reader = _native.RunReader(session.run_dir)
        with pytest.raises(ValueError, match=r"interval_s = .*: give a number of seconds > 0"):
            reader.follow(bad)
        assert not reader.following
    finally:
        stop_run(session)


def test_a_forked_child_has_no_follow_thread_and_does_not_hang(tmp_path: Path) -> None:
    """The child of a fork has the reader but not its thread: it neither waits for the
    thread nor blocks on a lock the thread held at the fork; the parent's goes on."""
    session = start_run(tmp_path / "store")
    try:
        reader = _native.RunReader(session.run_dir)
        reader.follow(0.001)  # polls all the time: the fork likely lands inside one
        for i in range(20):
            session.recorder.record("i", i, "script::a")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                if not reader.following:
                    child = _native.RunReader(session.run_dir)
                    child.follow(0.01)  # a thread of its own
                    ok = _wait_for(lambda: dict(child.properties("script::a")).get("i") == 19)
                    child.stop_following()
                    del child
                    reader.stop_following()  # the parent's: nothing of it here
                    code = 0 if ok and not reader.following else 2
            finally:
                os._exit(code)
        deadline = time.monotonic() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung")
            time.sleep(0.01)
        assert os.waitstatus_to_exitcode(status) == 0
        assert reader.following
        session.recorder.record("after", True, "script::a")
        assert _wait_for(lambda: dict(reader.properties("script::a")).get("after") is True)
        reader.stop_following()
    finally:
        stop_run(session)
