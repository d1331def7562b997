"""The read API (``pytest_blackbox.Store``) on finished runs of real pytest sessions.

One store gets two runs: a ``-n 2`` session whose tests pass, fail and abort, with
fixtures of three scopes and properties recorded every way; then a plain session. The
tests below read them back. The store is made once for the module (about two seconds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import run_pytest
from pytest_blackbox import (
    BlackboxError,
    NoStoreError,
    NoSuchRunError,
    Store,
    start_run,
    stop_run,
)

SUITE = """
import os
import time

import pytest

import pytest_blackbox


@pytest.fixture(scope="session")
def db():
    time.sleep(0.02)
    yield "db"


@pytest.fixture(scope="module")
def conn(db):
    yield "conn"


@pytest.fixture
def row(conn):
    return 1


@pytest.fixture
@pytest_blackbox.timed
def cache():
    time.sleep(0.02)
    yield {}
    time.sleep(0.01)


@pytest_blackbox.timed(name="compute")
def compute():
    time.sleep(0.01)
    return 42


def test_pass_one(row, blackbox, cache):
    assert compute() + compute() == 84
    time.sleep(0.15)  # the fixture is held: not part of its teardown
    blackbox.record("rows", 3)
    pytest_blackbox.append("cmp", {"a": 1})
    pytest_blackbox.append("cmp", {"a": 2})


def test_pass_two(row, record_property):
    record_property("kind", "two")


def test_fails(row):
    pytest_blackbox.record("before", True)
    assert 1 == 2


def test_aborts(row):
    pytest_blackbox.record("last_words", "bye")
    os.abort()
"""

NODE = "test_suite.py::{}".format


@dataclass
class Finished:
    store: Path
    xdist_run: str
    plain_run: str


def run_id(output: str) -> str:
    m = re.search(r"blackbox: recording run (\S+) in ", output)
    assert m, output
    return m.group(1)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    root = tmp_path_factory.mktemp("suite")
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "test_suite.py").write_text(SUITE)
    store = root / "store"
    code, out = run_pytest(root, "-n", "2", f"--blackbox-dir={store}")
    assert code == 1, out  # a failure and a crash
    xdist_run = run_id(out)
    code, out = run_pytest(root, f"--blackbox-dir={store}", "-k", "pass_one")
    assert code == 0, out
    return Finished(store, xdist_run, run_id(out))


def test_runs_are_listed_oldest_first(finished: Finished) -> None:
    store = Store(finished.store)
    assert store.runs() == [finished.xdist_run, finished.plain_run]
    assert list(store) == store.runs()
    assert store.latest().id == finished.plain_run
    assert store.run(finished.xdist_run).id == finished.xdist_run
    assert repr(store) == f"Store({str(finished.store)!r})"


def test_run_info(finished: Finished) -> None:
    run = Store(finished.store).run(finished.xdist_run)
    assert run.path == finished.store / finished.xdist_run
    assert run.live is False
    assert run.info["exit_status"] == 1
    assert "-n" in run.info["argv"]
    assert run.problems == []
    assert repr(run) == f"<Run {finished.xdist_run} tests=4 crashes=1 live=False>"
    assert run.refresh() is run and len(run.tests) == 4
    kinds = {r["kind"] for r in run.records()}
    assert {"run_start", "run_end", "test_start", "test_phase", "fixture"} <= kinds
    assert {"property_set", "property_append", "crash"} <= kinds
    segments = run.segments()
    assert {s["role"] for s in segments} == {"controller", "worker"}
    assert not any(s["alive"] for s in segments)
    assert [s["worker"] for s in segments if s["crash_signal"]] == [
        next(t.worker for t in run.tests if t.crashed)
    ]


def test_tests(finished: Finished) -> None:
    run = Store(finished.store).run(finished.xdist_run)
    by_id = {t.nodeid: t for t in run.tests}
    assert sorted(by_id) == sorted(
        NODE(n) for n in ("test_pass_one", "test_pass_two", "test_fails", "test_aborts")
    )
    outcomes = {n: (t.outcome, t.crashed, t.signal_name) for n, t in by_id.items()}
    assert outcomes == {
        NODE("test_pass_one"): ("passed", False, None),
        NODE("test_pass_two"): ("passed", False, None),
        NODE("test_fails"): ("failed", False, None),
        NODE("test_aborts"): ("crashed", True, "SIGABRT"),
    }
    for t in run.tests:
        assert re.fullmatch(r"gw\d+", t.worker or ""), t
        assert t.pid and t.duration_s >= 0
    assert [p["phase"] for p in by_id[NODE("test_fails")].phases] == ["setup", "call", "teardown"]
    assert by_id[NODE("test_fails")].phases[1]["outcome"] == "failed"
    assert by_id[NODE("test_aborts")].signal == 6
    assert run.test(NODE("test_fails")) is by_id[NODE("test_fails")]
    assert run.test("nope") is None


def test_fixtures(finished: Finished) -> None:
    run = Store(finished.store).run(finished.xdist_run)
    fixtures = {f.name: f for f in run.fixtures}
    assert {n: fixtures[n].scope for n in ("db", "conn", "row")} == {
        "db": "session",
        "conn": "module",
        "row": "function",
    }
    assert fixtures["row"].setups == 4  # once per test, over every worker
    # A session fixture is set up once per worker process that ran tests.
    workers_with_tests = sum(1 for w in run.workers if w.tests)
    assert fixtures["db"].setups == workers_with_tests
    assert fixtures["db"].total_s >= 0.02 * fixtures["db"].setups
    assert fixtures["db"].max_s >= 0.02
    assert fixtures["db"].mean_s == pytest.approx(fixtures["db"].total_s / fixtures["db"].setups)
    assert run.fixture("db") == fixtures["db"]
    assert run.fixture("nope") is None
    assert run.fixture_setups == sum(f.setups for f in run.fixtures)


def test_timed(finished: Finished) -> None:
    run = Store(finished.store).run(finished.xdist_run)
    timed = {t.name: t for t in run.timed}
    assert timed["compute"].setups == 2
    assert 0.02 <= timed["compute"].total_s < 0.5
    assert timed["cache"].setups == 1
    assert 0.02 <= timed["cache"].total_s < 0.5
    # A @timed yield fixture's teardown: from its resumption, not from its setup.
    assert timed["cache[teardown]"].setups == 1
    assert 0.01 <= timed["cache[teardown]"].total_s < 0.1


def test_crashes_and_workers(finished: Finished) -> None:
    run = Store(finished.store).run(finished.xdist_run)
    [crash] = run.crashes
    assert (crash.nodeid, crash.signal, crash.signal_name, crash.phase) == (
        NODE("test_aborts"),
        6,
        "SIGABRT",
        "call",
    )
    assert crash.worker == run.test(NODE("test_aborts")).worker
    assert crash.pid == run.test(NODE("test_aborts")).pid
    assert crash.traceback is not None
    assert "Fatal Python error: Aborted" in crash.traceback
    assert "in test_aborts" in crash.traceback

    workers = {w.id: w for w in run.workers}
    assert "controller" in workers
    assert sum(w.tests for w in run.workers) == 4
    assert workers[crash.worker].crashes == 1
    assert sum(w.crashes for w in run.workers) == 1
    assert not any(w.alive for w in run.workers)
    assert all(w.pids for w in run.workers)


def test_properties(finished: Finished) -> None:
    run = Store(finished.store).run(finished.xdist_run)
    assert run.properties(NODE("test_pass_one")) == {"rows": 3, "cmp": [{"a": 1}, {"a": 2}]}
    assert run.properties(NODE("test_pass_two")) == {"kind": "two"}
    assert run.properties(NODE("test_fails")) == {"before": True}
    # What the crashed test recorded before it died.
    assert run.properties(NODE("test_aborts")) == {"last_words": "bye"}
    assert run.properties("test_suite.py::nope") == {}
    # The same in the JSON view (values that JSON can hold).
    assert run.test(NODE("test_pass_one")).properties == {"rows": 3, "cmp": [{"a": 1}, {"a": 2}]}

    latest = Store(finished.store).latest()
    assert [t.nodeid for t in latest.tests] == [NODE("test_pass_one")]
    assert latest.workers and not latest.crashes


def test_a_missing_store_is_a_no_store_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "missing")
    for call in (store.runs, store.latest, lambda: store.run("x")):
        with pytest.raises(NoStoreError, match=r"no blackbox store at .*missing") as exc:
            call()
        assert isinstance(exc.value, BlackboxError)
        assert isinstance(exc.value, FileNotFoundError)


def test_an_empty_store_has_no_latest_run(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.runs() == []
    with pytest.raises(NoStoreError, match="holds no run yet"):
        store.latest()


def test_an_unknown_run_id_is_a_no_such_run_error(finished: Finished) -> None:
    with pytest.raises(NoSuchRunError) as exc:
        Store(finished.store).run("20000101-000000-nope")
    assert isinstance(exc.value, BlackboxError)
    assert isinstance(exc.value, KeyError)
    # Not quoted as KeyError would, and it says where the ids are.
    assert str(exc.value).startswith("no run '20000101-000000-nope' in ")
    assert "Store.runs()" in str(exc.value)


def test_the_default_store_is_blackbox_dir_else_dot_blackbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLACKBOX_DIR", str(tmp_path / "env"))
    assert Store().path == tmp_path / "env"
    monkeypatch.delenv("BLACKBOX_DIR")
    monkeypatch.chdir(tmp_path)
    assert Store().path == tmp_path / ".blackbox"


def test_a_live_run_then_finished(tmp_path: Path) -> None:
    """start_run()/stop_run(): a run read while its writer lives, then after it ends."""
    session = start_run(tmp_path / "store")
    try:
        session.recorder.record("k", [1, 2], "script::step")
        run = Store(tmp_path / "store").latest()
        assert run.id == session.run_id
        assert run.live is True
        assert run.properties("script::step") == {"k": [1, 2]}
        session.recorder.append("log", "more", "script::step")
        assert run.refresh().properties("script::step") == {"k": [1, 2], "log": ["more"]}
    finally:
        stop_run(session)
    assert run.refresh().live is False
