"""RunReader.follow(): a run read on a thread of its own while it goes on (the plugin's
parents use it so that the terminal summary and the history fold find little left to read)."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import wait_until
from pytest_blackbox import BlackboxError, _native, start_run, stop_run


def _threads() -> int:
    """The follow threads of this process, by name: a count of all its threads would move
    with any other thread (xdist's, an earlier test's) that starts or ends meanwhile."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                count += f.read().strip() == "blackbox-follow"
        except FileNotFoundError:  # a thread that ended while we listed
            pass
    return count


def _wait_for_threads(count: int) -> None:
    """Waits until the follow threads are ``count``: a new thread names itself once it runs,
    a moment after spawn returns, and a joined one leaves /proc/self/task a moment after the
    join (the kernel wakes the joiner in mm_release, before exit_notify reaps the thread).
    Counted at once, the count failed once under CI's -n 2."""
    wait_until(lambda: _threads() == count, timeout=5)


def test_a_following_reader_reads_without_being_polled(tmp_path: Path) -> None:
    session = start_run(tmp_path / "store")
    try:
        reader = _native.RunReader(session.run_dir)
        threads = _threads()
        reader.follow(0.01)
        assert reader.following
        _wait_for_threads(threads + 1)
        reader.follow(0.01)  # again: still one thread
        time.sleep(0.1)
        assert _threads() == threads + 1

        # properties() does not poll: only the thread can have read these records.
        session.recorder.record("k", 1, "script::a")
        wait_until(lambda: reader.properties("script::a") == [("k", 1)])
        session.recorder.append("log", "x", "script::a")
        wait_until(lambda: dict(reader.properties("script::a")).get("log") == ["x"])

        reader.stop_following()
        assert not reader.following
        _wait_for_threads(threads)
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
        _wait_for_threads(threads + 1)
        del reader
        _wait_for_threads(threads)
    finally:
        stop_run(session)


@pytest.mark.parametrize("bad", [0.0, -1.0, 1e-9, 0.0009, math.nan, math.inf, 1e300])
def test_follow_takes_an_interval_of_a_millisecond_or_more(tmp_path: Path, bad: float) -> None:
    session = start_run(tmp_path / "store")
    try:
        reader = _native.RunReader(session.run_dir)
        with pytest.raises(ValueError, match=r"interval_s = .*: give a number of seconds >= 0.001"):
            reader.follow(bad)
        assert not reader.following
        reader.follow(0.001)
        assert reader.following
        reader.stop_following()
    finally:
        stop_run(session)


def _wait_child(pid: int) -> int:
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.01)


def test_a_reader_inherited_while_following_refuses_and_never_hangs(tmp_path: Path) -> None:
    """The child of a fork has the reader but not its thread, which may have held the
    reader's lock at the fork: there every method of that reader raises (never blocks), a
    new reader works, and the parent's reader goes on following."""
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
                refused = 0
                calls = (
                    reader.poll,
                    reader.view,
                    reader.brief,
                    reader.fixture_setups,
                    reader.segments,
                    lambda: reader.properties("script::a"),
                    lambda: reader.phase_reports("script::a"),
                    lambda: reader.follow(0.01),
                )
                for call in calls:
                    try:
                        call()
                    except BlackboxError as e:
                        refused += "inherited through fork()" in str(e)
                reader.stop_following()  # nothing to stop here, and still refused after
                try:
                    reader.poll()
                except BlackboxError:
                    refused += 1
                child = _native.RunReader(session.run_dir)
                child.follow(0.01)  # a thread of its own
                wait_until(lambda: dict(child.properties("script::a")).get("i") == 19)
                child.stop_following()
                code = 0 if refused == len(calls) + 1 and not reader.following else 2
            finally:
                os._exit(code)
        assert _wait_child(pid) == 0
        assert reader.following
        session.recorder.record("after", True, "script::a")
        wait_until(lambda: dict(reader.properties("script::a")).get("after") is True)
        reader.stop_following()
    finally:
        stop_run(session)


def test_a_reader_stopped_before_the_fork_works_in_the_child(tmp_path: Path) -> None:
    session = start_run(tmp_path / "store")
    try:
        reader = _native.RunReader(session.run_dir)
        reader.follow(0.001)
        session.recorder.record("k", 1, "script::a")
        reader.stop_following()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                reader.poll()
                code = 0 if dict(reader.properties("script::a")) == {"k": 1} else 2
            finally:
                os._exit(code)
        assert _wait_child(pid) == 0
    finally:
        stop_run(session)


def test_the_plugin_forks_with_no_follow_thread(pytester: pytest.Pytester) -> None:
    """The plugin stops its follow thread before a fork and starts it again after, in the
    parent (os.register_at_fork): the child's copy of the session's reader is usable, which
    it is only when no thread followed at the fork; Python 3.12+ would warn otherwise."""
    pytester.makepyfile(
        test_fork="""
        import os

        from pytest_blackbox import _runtime

        def test_fork(record_property):
            record_property("before", 1)
            session = _runtime.active()
            reader = session.reader()
            assert reader.following
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    reader.poll()  # the parent's reader, as the fork left it
                    code = 0
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert reader.following  # again, in the parent
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(("args", "follows"), [([], True), (["--forked"], False)])
def test_a_parent_that_forks_each_test_does_not_follow(
    pytester: pytest.Pytester, args: list[str], follows: bool
) -> None:
    """Under pytest-forked the parent forks for every test, and the thread would be
    stopped at each fork before it ever polled: it is not started there."""
    pytester.makepyfile(
        test_mode=f"""
        from pytest_blackbox import plugin

        def test_mode():
            assert plugin._plugins[-1].follows is {follows}
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)
    result.assert_outcomes(passed=1)
