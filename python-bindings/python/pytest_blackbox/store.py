"""Reading runs: the :class:`Store` API, for finished runs and for live ones."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from . import _native
from .errors import NoStoreError, NoSuchRunError

__all__ = [
    "CrashInfo",
    "FixtureInfo",
    "History",
    "Run",
    "Store",
    "Summary",
    "TestInfo",
    "WorkerInfo",
    "default_store_dir",
]


def default_store_dir() -> Path:
    """The store as pytest finds its rootdir (the CLI's rule, in the core): ``$BLACKBOX_DIR``,
    else the nearest ``.blackbox`` from the current directory upward (or the ``blackbox_dir``
    ini value of a pytest config file on the way), else ``./.blackbox``."""
    try:
        return Path(_native.find_store())
    except NoStoreError:
        return Path.cwd() / ".blackbox"


@dataclass(frozen=True)
class TestInfo:
    """One test across every process that touched it.

    A ``Run``'s tests are frozen (``dataclasses.replace`` makes a changed copy), and their
    ``phases`` and ``properties`` are a new list and dict at each read: changing one in
    place changes nothing stored or read later."""

    __test__ = False  # not a pytest test class

    nodeid: str
    outcome: str
    duration_s: float
    worker: str | None
    pid: int | None
    crashed: bool
    signal: int | None
    signal_name: str | None
    phases: list[dict[str, Any]]
    properties: dict[str, Any]
    #: The test ran past its time limit: ``phase``, ``limit_s``, ``elapsed_s``, ``source``.
    timeout: dict[str, Any] | None = None
    #: The attempt of the logical run it ran in (1, or more after ``--blackbox-resume``).
    attempt: int = 1

    @property
    def not_finished(self) -> bool:
        """The run did not finish it: never started (``not-run``), or in the middle of it
        when its process died: what ``--blackbox-resume`` runs."""
        return self.crashed or self.outcome in ("not-run", "unfinished", "running")

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TestInfo:
        args: dict[str, Any] = {k: d.get(k) for k in cls.__dataclass_fields__}
        return cls(**args)


class _TestList(list[TestInfo]):
    """A Run's ``tests``: a list of ``_native.TestInfo`` objects, each a TestInfo to its
    readers (``isinstance``, ``dataclasses``, ``==``, ``repr``, copy and pickle) whose
    fields come from the native view when read. They refer to no Python object, so they
    are left out of the cyclic GC, which would otherwise go over all of them in each of
    its collections while a reader goes on (benches/python/read_path.py, 2b)."""

    __slots__ = ()


def _tests_of(dicts: list[dict[str, Any]]) -> list[TestInfo]:
    """TestInfo objects over the view's test dicts, each dict becoming the object's
    ``__dict__`` (its keys are exactly the fields): a run of 20,000 tests is read faster
    than a JSON-lines file of them is parsed (benches/python/read_path.py), where calling
    the frozen dataclass's ``__init__`` per test cost four times that."""
    if dicts and dicts[0].keys() != TestInfo.__dataclass_fields__.keys():
        return [TestInfo.from_json(d) for d in dicts]  # a view of another shape
    new = object.__new__
    set_attr = object.__setattr__
    out: list[TestInfo] = []
    append = out.append
    for d in dicts:
        t = new(TestInfo)
        set_attr(t, "__dict__", d)
        append(t)
    return out


@dataclass(frozen=True)
class FixtureInfo:
    """Setup and teardown times of one fixture over the whole run (all workers)."""

    name: str
    scope: str
    setups: int
    teardowns: int
    total_s: float
    mean_s: float
    max_s: float
    teardown_total_s: float

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FixtureInfo:
        args: dict[str, Any] = {k: d.get(k) for k in cls.__dataclass_fields__}
        return cls(**args)


def _has_default(f: Any) -> bool:
    return f.default is not MISSING or f.default_factory is not MISSING


@dataclass(frozen=True)
class CrashInfo:
    """A process that died in (or between) tests."""

    nodeid: str | None
    worker: str | None
    pid: int | None
    signal: int | None
    signal_name: str | None
    exit_code: int | None
    phase: str | None
    detail: str
    attachments: list[str] = field(default_factory=list)
    #: ``signal``, ``exit``, ``killed`` (no handler ran: SIGKILL, the OOM killer) or
    #: ``child`` (a process the test forked died; the test itself did not).
    kind: str = "killed"
    #: The accelerator variables the dead process had (``CUDA_VISIBLE_DEVICES``...).
    devices: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CrashInfo:
        fields = cls.__dataclass_fields__
        args: dict[str, Any] = {
            k: d.get(k) for k in fields if k in d or not _has_default(fields[k])
        }
        return cls(**args)

    @property
    def traceback(self) -> str | None:
        """The Python traceback the fatal-signal handler wrote, if any."""
        for path in self.attachments:
            try:
                text = Path(path).read_text(errors="replace")
            except OSError:
                continue
            if text.strip():
                return text
        return None


@dataclass(frozen=True)
class WorkerInfo:
    """An xdist worker (``gw0``...), or the ``main``/``controller`` process."""

    id: str
    pids: list[int]
    tests: int
    crashes: int
    alive: bool
    #: Of ``pids``, the children forked (pytest-forked) to run a test.
    forked: int = 0
    #: The accelerator variables its processes had (``CUDA_VISIBLE_DEVICES``...).
    devices: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WorkerInfo:
        fields = cls.__dataclass_fields__
        return cls(**{k: d[k] for k in fields if k in d})


class Summary:
    """The aggregate of a run as it stands: the same numbers from any process."""

    def __init__(self, view: dict[str, Any]) -> None:
        self._load(view, None)

    def _load(self, view: dict[str, Any], native: _native.RunView | None) -> None:
        """``view``: a view dict; with ``native``, the native view it was made from, less
        its ``tests`` (those come from ``native`` when asked for)."""
        self._raw = view
        self._native = native
        self.info: dict[str, Any] = view["run"]
        self._tests: list[TestInfo] | None = None
        self.fixtures = [FixtureInfo.from_json(f) for f in view["fixtures"]]
        self.timed = [FixtureInfo.from_json(f) for f in view["timed"]]
        self.crashes = [CrashInfo.from_json(c) for c in view["crashes"]]
        self.workers = [WorkerInfo.from_json(w) for w in view["workers"]]
        #: Processes that ended themselves (``os._exit``) between tests or after a test's
        #: report was made: no crash. Dicts with ``nodeid``, ``phase``, ``code``,
        #: ``worker``, ``pid``.
        self.exits: list[dict[str, Any]] = view.get("exits", [])
        self.problems: list[str] = view.get("problems", [])

    @property
    def raw(self) -> dict[str, Any]:
        """The view as dicts, in the ``blackbox stats --json`` schema (a Run's ``tests``
        dicts are built on first access)."""
        if self._native is not None and "tests" not in self._raw:
            self._raw["tests"] = self._native.test_dicts()
        return self._raw

    @raw.setter
    def raw(self, view: dict[str, Any]) -> None:
        self._raw = view
        self._native = None

    def _test_count(self) -> int:
        if self._native is not None and "tests" not in self._raw:
            return self._native.test_count
        return len(self._raw["tests"])

    @property
    def tests(self) -> list[TestInfo]:
        """Every test, in the order they started (built on first access: a large run has
        hundreds of thousands)."""
        if self._tests is None:
            if self._native is not None:
                self._tests = _TestList(self._native.tests(TestInfo))
                return self._tests
            # As RunReader.view(): new objects that cannot form cycles; collections run
            # over them would cost a fifth of the build.
            was_on = gc.isenabled()
            gc.disable()
            try:
                self._tests = _tests_of(self._raw["tests"])
            finally:
                if was_on:
                    gc.enable()
        return self._tests

    @property
    def id(self) -> str:
        run_id: str = self.info["id"]
        return run_id

    @property
    def fixture_setups(self) -> int:
        """Setups of every fixture, every scope, every process."""
        return sum(f.setups for f in self.fixtures)

    def fixture(self, name: str) -> FixtureInfo | None:
        """The stats of fixture ``name`` (summed over scopes), or None."""
        found = [f for f in self.fixtures if f.name == name]
        if not found:
            return None
        if len(found) == 1:
            return found[0]
        setups = sum(f.setups for f in found)
        total = sum(f.total_s for f in found)
        return FixtureInfo(
            name=name,
            scope="+".join(sorted({f.scope for f in found})),
            setups=setups,
            teardowns=sum(f.teardowns for f in found),
            total_s=total,
            mean_s=total / setups if setups else 0.0,
            max_s=max(f.max_s for f in found),
            teardown_total_s=sum(f.teardown_total_s for f in found),
        )

    def test(self, nodeid: str) -> TestInfo | None:
        return next((t for t in self.tests if t.nodeid == nodeid), None)

    @property
    def collected(self) -> int | None:
        """How many tests the session collected; None when it recorded no collection."""
        return self.info.get("collected")

    @property
    def not_run(self) -> list[TestInfo]:
        """The tests collected and never started (once the run is over), in collection
        order: outcome ``not-run``."""
        return [t for t in self.tests if t.outcome == "not-run"]

    @property
    def not_finished(self) -> list[TestInfo]:
        """The tests the run did not finish (:attr:`TestInfo.not_finished`)."""
        return [t for t in self.tests if t.not_finished]

    @property
    def died(self) -> bool:
        """Its pytest died: no process of it is alive and its session never ended."""
        return not self.info.get("live") and self.info.get("ended") is None

    @property
    def attempt(self) -> int:
        """This session's attempt in its logical run (1, or more for a resume)."""
        return int(self.info.get("attempt") or 1)

    @property
    def resumes(self) -> str | None:
        """The run this session resumed (``--blackbox-resume``), if any."""
        return self.info.get("resumes")

    def __repr__(self) -> str:
        return (
            f"<Summary run={self.id} tests={self._test_count()} fixtures={len(self.fixtures)} "
            f"crashes={len(self.crashes)}>"
        )


class Run(Summary):
    """One run of a store, read when created; :meth:`refresh` reads what is new."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._reader = _native.RunReader(str(self.path))
        self._read()

    def _read(self) -> None:
        # The view stays native: tests, their phases and properties, and `raw["tests"]`
        # are converted when asked for (a run of 20,000 tests is read faster than a
        # JSON-lines file of them is parsed: benches/python/read_path.py).
        self._view = self._reader.read()
        self._load(self._view.summary(), self._view)

    def refresh(self) -> Run:
        """Reads what was committed since (cost proportional to what is new)."""
        self._read()
        return self

    def properties(self, nodeid: str) -> dict[str, Any]:
        """Everything recorded for ``nodeid``: ``record`` keys (last write wins) and
        ``append`` keys (a list in time order), as of the last read (creation or
        :meth:`refresh`). Exact values: unlike ``tests[i].properties`` (the JSON view),
        NaN, bytes and ints past 64 bits come back as they were stored."""
        found = self._view.properties(nodeid)
        if found is None:  # not a test of the view (session-level: "")
            return self._reader.properties_dict(nodeid)
        return found

    def logical(self) -> Summary:
        """This run with the attempts it resumed (``--blackbox-resume``) as one logical
        run: every test once, as the newest attempt that ran it tells it, with that
        attempt's number (``TestInfo.attempt``); the same as ``blackbox stats`` reads."""
        return Summary(_native.logical_view(str(self.path.parent), self.id))

    @property
    def live(self) -> bool:
        """Whether some process of the run still writes to it."""
        return bool(self.info.get("live"))

    def records(self) -> list[dict[str, Any]]:
        """Every committed record, segment by segment, as dicts (``kind`` and its fields);
        ``pid`` is the record's own where it has one (a crash: the process that died), else
        the pid of the process that wrote it."""
        return _native.read_records(str(self.path))

    def segments(self) -> list[dict[str, Any]]:
        """Each writer's file: pid, role, worker, alive, crash signal, running test."""
        return self._reader.segments()

    def __repr__(self) -> str:
        return (
            f"<Run {self.id} tests={self._test_count()} crashes={len(self.crashes)} "
            f"live={self.live}>"
        )


class History:
    """A store's ``history.redb`` (every finished run is folded into it): the same answers
    as ``blackbox flaky``, ``history NODEID`` and ``slower`` with ``--json`` (docs/cli.md
    has the schema)."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir

    def flaky(self, last: int = 20) -> dict[str, Any]:
        """Tests that both passed and failed within the newest ``last`` runs: ``runs``
        (looked at, newest first) and ``tests`` (outcome counts, last flip, crashes, strip)."""
        return _native.history_flaky(str(self.store_dir), last)

    def test(self, nodeid: str, last: int = 20) -> dict[str, Any]:
        """``nodeid`` in each of the newest ``last`` runs: outcome, duration, worker, crash."""
        return _native.history_test(str(self.store_dir), nodeid, last)

    def slower(self, last: int = 20, threshold: float = 1.5) -> dict[str, Any]:
        """Tests and fixtures whose median duration grew more than ``threshold`` times from
        the older half of the newest ``last`` runs to the newer half."""
        return _native.history_slower(str(self.store_dir), last, threshold)

    def __repr__(self) -> str:
        return f"History({str(self.store_dir)!r})"


class Store:
    """A store directory. ``Store()`` finds it as ``blackbox`` does: ``$BLACKBOX_DIR``, else
    the nearest ``.blackbox`` upward from the current directory (or the ``blackbox_dir`` ini
    value of a pytest config file on the way)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_dir()

    def runs(self) -> list[str]:
        """Run ids, oldest first."""
        if not self.path.exists():
            raise NoStoreError(
                f"no blackbox store at {self.path}; run pytest with the plugin first, or pass "
                "the store's path"
            )
        return _native.list_runs(str(self.path))

    def run(self, run_id: str) -> Run:
        """Run ``run_id``: its id, or a start of it that only one run has (as ``--run``)."""
        self.runs()  # a missing store: NoStoreError, with what to do
        try:
            run_id = _native.resolve_run(str(self.path), run_id)
        except NoSuchRunError as e:
            if not str(e).startswith("no run "):
                raise  # several runs start with it: the message names them
            raise NoSuchRunError(
                f"no run {run_id!r} in {self.path}; Store.runs() lists them"
            ) from None
        return Run(Path(_native.run_path(str(self.path), run_id)))

    def latest(self) -> Run:
        """The newest run."""
        runs = self.runs()
        if not runs:
            raise NoStoreError(f"the store {self.path} holds no run yet")
        return self.run(runs[-1])

    @property
    def history(self) -> History:
        """The store's history across runs (``history.redb``)."""
        return History(self.path)

    def __iter__(self) -> Iterator[str]:
        return iter(self.runs())

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"
