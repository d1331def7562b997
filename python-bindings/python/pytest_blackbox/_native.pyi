"""``pytest_blackbox._native``: the Rust core (blackbox-core) seen from Python.

The binding is thin: it converts values and maps errors; the store's logic lives in the core
crate. Most users want the package's API instead (``pytest_blackbox.record``, ``Store``...).
These docs live here, in the stub, and ``tests/test_stub.py`` checks that the stub and the
module name the same things.

Values. What a record stores is one of None, bool, int, float, str, bytes, list, dict (str
keys). Anything else is converted to the nearest of these, or to its repr, with exactly one
:class:`pytest_blackbox.BlackboxWarning` per call saying what was converted:

- a subclass of a plain type (a float subclass, an ``IntEnum``, a str subclass, a
  namedtuple, an ``OrderedDict``) becomes that plain type;
- a tuple becomes a list (silently: JSON has no tuple); a set or frozenset a sorted list
  (in repr order if its items do not compare); a ``bytearray`` or ``memoryview`` bytes;
- an object with ``__array__`` and ``tolist()`` (numpy and friends) its ``tolist()``; a
  ``collections.abc.Mapping`` a dict; another ``Set`` or ``Sequence`` (``deque``,
  ``range``, ``array``) a list; an object with ``__index__`` an int, else with ``__float__``
  a float;
- anything else, and nesting deeper than 32 levels, its ``repr()``;
- a container that contains itself stores the cycle as ``"[...]"`` or ``"{...}"``;
- a non-str dict key becomes ``str(key)`` (keys that collide keep the last value); a str
  with lone surrogates gets ``\\udXXX`` escapes; an int too long for ``str()`` its hex str.

NaN, infinities and ints beyond 64 bits are plain and stored as they are. A value that
cannot fit one record (64 MiB, or more than 1,048,576 values counting a shared sub-list once
per place it appears) is refused with :class:`pytest_blackbox.RecordTooLargeError`.

Errors are raised as the classes of :mod:`pytest_blackbox.errors`, all under
:class:`pytest_blackbox.BlackboxError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

__version__: Final[str]
"""The package version: ``[workspace.package] version`` of the Cargo workspace."""

FORMAT_VERSION: Final[int]
"""The segment file format version this build writes and reads (see docs/format.md)."""

_Role = Literal["main", "controller", "worker", "forked", "other"]
_Durability = Literal["process", "system"]
_Phase = Literal["setup", "call", "teardown"]
_PathLike = str | os.PathLike[str]
_T = TypeVar("_T")

class Recorder:
    """This process's writer into one run folder.

    The segment file is created on the first write, and again after a ``fork()``: a child
    never writes into its parent's file. Each call below is one record, committed (visible
    to readers, and safe from this process's death) on return, unless a transaction is open
    (:meth:`begin`). Thread-safe.
    """

    def __new__(
        cls,
        run_dir: _PathLike,
        role: _Role = "other",
        worker: str | None = None,
        durability: _Durability = "process",
    ) -> Recorder:
        """A writer for the run folder ``run_dir``.

        ``role`` says which process this is; ``worker`` is the xdist worker id (``gw0``).
        ``durability="process"`` survives the death of any process (no syscall per commit);
        ``"system"`` also survives power loss (msync at each commit, slower). An unknown
        role or durability raises ``ValueError``.
        """

    def record(
        self,
        key: str,
        value: object,
        test: str | None = None,
        warn: bool = True,
        key_as_str: bool = False,
    ) -> Any:
        """Set property ``key`` of ``test`` (a nodeid; None: the session) to ``value``; the
        last write wins. Returns the plain value stored (see the module docs).

        A key that is not a str raises :class:`pytest_blackbox.InvalidKeyError`, unless
        ``key_as_str`` (the stock ``record_property``, whose name junitxml turns into a str)
        stores it as ``str(key)``. A str subclass key is stored as str. Whatever was
        converted, key and value together, gives one ``BlackboxWarning`` (none with
        ``warn=False``). Too large a value raises
        :class:`pytest_blackbox.RecordTooLargeError`; a full disk
        :class:`pytest_blackbox.StoreFullError`.
        """

    def append(
        self,
        key: str,
        value: object,
        test: str | None = None,
        warn: bool = True,
        key_as_str: bool = False,
    ) -> Any:
        """Append ``value`` to the list under ``key`` of ``test`` (e.g. one comparison
        result per call). Returns the plain value stored; keys and warnings as
        :meth:`record`."""

    def write(self, kind: str, fields: dict[str, Any]) -> None:
        """Write one record of any kind: ``kind`` its name (docs/format.md's table:
        ``"crash"``, ``"run_end"``...), ``fields`` its fields by name, each as a value of
        the field's type (an option may be left out, meaning None; a phase or role by its
        name; a list of pairs as a dict; times on the records' clocks,
        ``time.monotonic_ns()`` for ``mono_ns`` and ``time.time_ns()`` for ``wall_ns``).
        What a kind without a method of its own is written with; the per-test kinds have
        faster methods of their own. An unknown kind, or a field missing, unknown or of the
        wrong type, raises :class:`pytest_blackbox.InvalidRecordError` naming the kind and
        the field."""

    def start_test(self, nodeid: str) -> None:
        """``nodeid`` starts running in this process: the crash slot names it from now."""

    def end_test(self, nodeid: str) -> None:
        """``nodeid`` is done in this process."""

    def set_timeouts(self, default_s: float | None, per_test: dict[str, float]) -> None:
        """The time limit of every test this recorder starts from now on (``None``: none)
        and of single tests by nodeid (0: none for that test). ``start_test`` arms the
        native watchdog with it and ``end_test`` disarms it (atomic stores, no system
        call); a test past its limit is recorded as a ``timeout`` and its process ended
        with status 124."""

    def external_timer(self, nodeid: str, limit_s: float | None) -> None:
        """pytest-timeout armed (``limit_s``) or cancelled (``None``) its timer for
        ``nodeid``: a failed phase or an exit past that limit is recorded as a timeout of
        pytest-timeout's."""

    def phase(
        self,
        nodeid: str,
        phase: _Phase,
        outcome: str,
        duration_s: float,
        report: dict[str, Any] | None = None,
    ) -> None:
        """Record one phase of ``nodeid``: its outcome, its duration and, optionally, the
        serialized pytest report (``pytest_report_to_serializable``), from which a parent
        rebuilds the reports a dead child could not hand back.

        The report is converted without a warning. When it cannot fit one record (a test
        with huge properties, each of which is already in a record of its own), its strings
        are cut to 64 KiB each, and if that is not enough the report is left out: the phase
        itself is always recorded.
        """

    def fixture(
        self, name: str, scope: str, setup: bool, test: str | None, duration_s: float
    ) -> None:
        """One setup (``setup=True``) or teardown of fixture ``name`` of ``scope``, while
        ``test`` ran, taking ``duration_s`` seconds."""

    def timed(self, name: str, test: str | None, duration_s: float) -> None:
        """One call of a ``@timed`` function ``name``, while ``test`` ran."""

    def crash(
        self,
        test: str | None,
        pid: int,
        worker: str | None,
        signal: int,
        exit_code: int | None,
        phase: str | None,
        detail: str,
    ) -> None:
        """A parent's account of a dead child: it ran ``test`` (in ``phase``), had ``pid``
        (and xdist ``worker``), and died of ``signal`` (0: none known) or with
        ``exit_code``; ``detail`` is a line for people."""

    def exit(self, code: int, after_report: bool) -> None:
        """``os._exit(code)``, recorded just before it happens: in the middle of the running
        test's phase (its death), or, when ``after_report`` (a reporting hook ends the
        process after the test's last report was made) or between tests, an intentional
        exit that is no crash."""

    def attachment(self, test: str | None, kind: str, path: str) -> None:
        """A file that belongs to ``test`` (``kind="faulthandler"``: where a fatal signal's
        Python traceback goes)."""

    def run_start(self, argv: list[str], rootdir: str, host: str) -> None:
        """The run starts (written once, by the main process or the xdist controller)."""

    def run_end(self, exit_status: int) -> None:
        """The run ends with pytest's ``exit_status``."""

    def collected(self, nodeids: list[str]) -> None:
        """The session's collection, in collection order (written once per run, by the main
        process or the xdist controller): front-coded, visible all at once."""

    def resume(self, run: str, attempt: int, retry: bool) -> None:
        """This session resumes ``run`` (``--blackbox-resume``) as ``attempt`` of its logical
        run; ``retry``: the tests that crashed there run again."""

    def begin(self) -> None:
        """Open a transaction: the records until :meth:`commit` become visible together, or
        not at all. A transaction already open raises
        :class:`pytest_blackbox.TransactionError`."""

    def commit(self) -> None:
        """Commit the open transaction."""

    def rollback(self) -> None:
        """Drop the open transaction's records (nothing if none is open)."""

    def close(self) -> None:
        """Mark the segment closed cleanly and release it, lock included: readers see a
        finished writer from now on, not only once this object is collected. A later write
        opens a new segment."""

    @property
    def segment_path(self) -> Path | None:
        """This process's segment file, or None before the first write."""

    @property
    def run_dir(self) -> Path:
        """The run folder."""

    @property
    def role(self) -> _Role:
        """The role given at creation."""

    @property
    def worker(self) -> str | None:
        """The xdist worker id given at creation."""

    @property
    def current_test(self) -> str | None:
        """The test between :meth:`start_test` and :meth:`end_test`, if any."""

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open."""

class FixtureTimer:
    """Times one fixture for the plugin's ``pytest_fixture_setup`` wrapper (made by
    :meth:`TestHooks.fixture_starts`, not from Python): its setup until
    :meth:`setup_done`. Added twice as the fixture's finalizer (``FixtureDef.addfinalizer``),
    before and after its setup, it is called around the fixture's own teardown: the first
    call starts the teardown, the second records it. Each record names the test this
    process runs at that moment; a store error becomes a :class:`BlackboxWarning`, never an
    exception (a finalizer that raised would fail the test's teardown)."""

    def setup_done(self, fixturedef: Any) -> None:
        """The setup is over (it raised or not): records it and adds the timer as the
        finalizer that starts the teardown."""

    def __call__(self) -> None:
        """As a finalizer: the first call starts the teardown, the second records it."""

class TestHooks:
    """What one pytest session records of the tests this process runs, for the plugin's
    hooks (one native call each): a test's start (before its setup), its phase reports,
    into ``recorder``, with the running test kept in :attr:`current_item` and
    :attr:`current_nodeid`; and its fixtures' times. A store error becomes a
    :class:`BlackboxWarning`. The plugin keeps it as ``session.hooks``."""

    def __new__(
        cls,
        recorder: Recorder,
        config: Any,
        on_new_process: Callable[[], object],
        session_pid: int,
        skip: Callable[[Any], bool],
    ) -> TestHooks:
        """``on_new_process`` is called before the first test of a process other than the
        last one seen (a forked child); a phase report made in a process other than
        ``session_pid``, or a failed one, is stored whole (``pytest_report_to_serializable``
        of ``config``), for the parent that rebuilds it. ``skip(func)`` tells, once per
        fixture definition, whether its function is not timed."""

    def start(self, item: Any) -> None:
        """``item`` starts (``pytest_runtest_setup``, before its setup)."""

    def record_phase(self, item: Any, report: Any) -> None:
        """Records ``report``, the phase report pytest just made for ``item``, when it is
        the running test (``pytest_runtest_makereport``); its teardown ends the test."""

    def fixture_starts(self, fixturedef: Any) -> FixtureTimer | None:
        """A fixture's setup starts (``pytest_fixture_setup``): its timer, already added as
        the finalizer that ends its teardown; ``None`` when it is not timed."""

    @property
    def current_item(self) -> Any | None:
        """The running test (``None`` between tests)."""

    @property
    def current_nodeid(self) -> str | None:
        """The running test's nodeid (``None`` between tests)."""

class RunView:
    """One read of a run (:meth:`RunReader.read`), held natively."""

    @property
    def test_count(self) -> int:
        """How many tests."""

    def summary(self) -> dict[str, Any]:
        """:meth:`RunReader.view` without ``tests``."""

    def tests(self, cls: type) -> list[Any]:
        """Each test, in the view's order, as a ``TestInfo`` kept native: its ``__class__``
        is ``store.TestInfo`` (``isinstance``, ``dataclasses``, ``==``, ``repr``, copy and
        pickle answer as for the dataclass) and each field is converted from the view when
        read (a new list or dict each time). They refer to no Python object, so they are
        left out of the cyclic GC (``gc.is_tracked`` is False)."""

    def test_dicts(self) -> list[dict[str, Any]]:
        """Each test's whole dict, as ``RunReader.view()["tests"]``."""

    def properties(self, nodeid: str) -> dict[str, Any] | None:
        """:meth:`RunReader.properties_dict` of test ``nodeid`` as of this read; ``None``
        when the view has no test ``nodeid`` (the session's own properties: ``""``)."""

class RunReader:
    """A follower of one run folder: each :meth:`poll` reads only what was committed since
    the last one (cost proportional to what is new), from every segment of the run. It
    never blocks a writer. A damaged record stops the read of its segment (reported in the
    view's ``problems``); the other segments are still read."""

    def __new__(cls, run_dir: _PathLike) -> RunReader:
        """A reader of the run folder ``run_dir`` (nothing is read until :meth:`poll`)."""

    @property
    def id(self) -> str:
        """The run id (the folder's name)."""

    @property
    def dir(self) -> Path:
        """The run folder."""

    def poll(self) -> int:
        """Read what was committed since the last poll (a :meth:`follow` thread's polls
        count); returns how many new records."""

    def follow(self, interval_s: float) -> None:
        """Poll every ``interval_s`` seconds on a thread of its own (no GIL) until
        :meth:`stop_following` or the reader's end, so that a later :meth:`view`,
        :meth:`brief` or :meth:`fold_history` has little left to read. Calling it again
        while it follows changes nothing (not even the interval). ``ValueError`` unless
        ``interval_s`` >= 0.001; :class:`pytest_blackbox.SystemResourceError` (an
        ``OSError``) if no thread can be started.

        A forked child does not inherit the thread (:attr:`following` is False there),
        and the thread may have held the reader's lock at the fork: in the child, every
        method of a reader that was following raises ``BlackboxError`` (make a new
        ``RunReader`` there). Stop following before ``fork()`` to hand a usable reader
        down (the pytest plugin does, with ``os.register_at_fork``)."""

    def stop_following(self) -> None:
        """Stop what :meth:`follow` started; waits for its thread (at most one poll).
        Nothing to stop in a forked child (see :meth:`follow`)."""

    @property
    def following(self) -> bool:
        """Whether a :meth:`follow` thread of this process runs."""

    def view(self) -> dict[str, Any]:
        """Poll, then the whole run as a dict in the ``blackbox stats --json`` schema:
        ``run``, ``tests``, ``fixtures``, ``timed``, ``crashes`` (each with its ``kind``
        and ``devices``), ``exits`` (processes that ended themselves outside a phase),
        ``workers``, ``problems``.
        JSON has no NaN, bytes or big ints: use :meth:`properties` for exact values.
        Built straight from the aggregate, with the cyclic GC paused meanwhile."""

    def read(self) -> RunView:
        """Poll, then the run's view kept native: what :meth:`view` gives, converted part
        by part when asked for (``Store``'s ``Run`` reads this way)."""

    def brief(self, fixtures: int = 10) -> dict[str, Any]:
        """The run in brief, after a poll: ``view()`` without ``tests`` (``test_count`` and
        ``outcomes``, the number of tests by outcome, instead) and with at most
        ``fixtures`` fixtures and timed names. Its fixtures are the terminal summary's
        "slowest fixtures": pytest's own (``request``, ``tmp_path``, ...) are left out unless
        their setups take more than 1% of the run's test time. Cheap to call at the end of
        long runs."""

    def properties_dict(self, nodeid: str) -> dict[str, Any]:
        """:meth:`properties` as a dict (of two equal keys the later wins). Does not poll."""

    def properties(self, nodeid: str) -> list[tuple[str, Any]]:
        """The properties of ``nodeid`` as (key, value) pairs with their exact values:
        ``record`` keys (last write wins) and ``append`` keys (a list in time order). Does
        not poll."""

    def phase_reports(self, nodeid: str) -> list[tuple[_Phase, dict[str, Any] | None]]:
        """The recorded phases of ``nodeid`` in order, each with its serialized report (or
        None when none was recorded). Does not poll."""

    def fixture_setups(self) -> int:
        """Setups of every fixture seen so far, in every process. Does not poll."""

    def fold_history(
        self, store_dir: _PathLike, keep: int = 200, wait_s: float = 60.0, max_mb: float = 256.0
    ) -> dict[str, Any]:
        """:func:`fold_history` of this run from this reader's aggregate, after a poll:
        only what was committed since the last poll is read, not the whole run again."""

    def flaky_note(self, store_dir: _PathLike, last: int = 20) -> str | None:
        """The terminal summary's line: how many tests of this run (not yet folded) are
        flaky over it and the newest ``last - 1`` runs in history, from this reader's
        aggregate after a poll (not a second read of the run); None when none is."""

    def segments(self) -> list[dict[str, Any]]:
        """Each writer's segment as it stands: ``path``, ``pid``, ``ppid``, ``role``,
        ``worker``, ``alive`` (its writer still holds the lock), ``closed_cleanly``,
        ``crash_signal`` and ``crash_test`` (from the crash slot), ``current_test`` and
        ``damage`` (where and why its read stopped, or None)."""

def record(key: str, value: object, *, test: str | None = None) -> None:
    """``pytest_blackbox.record``: set ``key`` to ``value`` on the running test of this
    process (or on ``test``, a nodeid, which is ``str()``-ed; or on the session when no test
    runs), mirrored into the running item's ``user_properties``. Committed, and so
    crash-safe, on return. Writes into the innermost session of
    ``pytest_blackbox._runtime``; none raises :class:`pytest_blackbox.NotRecordingError`.
    Keys, values, the one warning (pointing at the caller) and errors as
    :meth:`Recorder.record`, but for a store failure (a full disk) in a pytest session not
    under ``--blackbox=require``: the value is dropped with the run's one warning (still
    mirrored) and nothing is raised."""

def append(key: str, value: object, *, test: str | None = None) -> None:
    """``pytest_blackbox.append``: append ``value`` to the list under ``key``, otherwise as
    :func:`record`."""

def to_plain(value: object, what: str = "value", warn: bool = True) -> Any:
    """``value`` converted the way :meth:`Recorder.record` stores it, with the same one
    warning (its message starts with ``blackbox: {what}:``)."""

def read_records(run_dir: _PathLike) -> list[dict[str, Any]]:
    """Every committed record of a run, segment by segment, as dicts with ``kind``, the
    record's fields and the writer's ``pid``. Reads a snapshot: for tools and tests."""

def new_run(store_dir: _PathLike) -> tuple[str, Path]:
    """Create the store directory ``store_dir`` if needed and a new run folder in it;
    returns (run id, run folder). Run ids sort in the order the runs started."""

def logical_view(store_dir: _PathLike, run_id: str) -> dict[str, Any]:
    """Run ``run_id`` with the attempts it resumes (``--blackbox-resume``) as one logical
    run: every test once, from the newest attempt that has it (its ``attempt``)."""

def list_runs(store_dir: _PathLike) -> list[str]:
    """The run ids of a store, oldest first. A missing store raises
    :class:`pytest_blackbox.NoStoreError`."""

def find_store(given: _PathLike | None = None, cwd: _PathLike | None = None) -> Path:
    """The store a reader uses, as the CLI finds it: ``given``, else ``$BLACKBOX_DIR``,
    else the nearest ``.blackbox`` from ``cwd`` (default: the current directory) upward,
    or the ``blackbox_dir`` ini value of a pytest config file on the way. None found
    raises :class:`pytest_blackbox.NoStoreError`."""

def resolve_run(store_dir: _PathLike, wanted: str) -> str:
    """The id of the run ``wanted`` names: its id or a start of it that only one run has
    (``--run``'s rule). None or several raise :class:`pytest_blackbox.NoSuchRunError`."""

def run_path(store_dir: _PathLike, id: str) -> Path:
    """The folder of run ``id``; an unknown id raises
    :class:`pytest_blackbox.NoSuchRunError`."""

def fold_history(
    store_dir: _PathLike, run_id: str, keep: int = 200, wait_s: float = 60.0, max_mb: float = 256.0
) -> dict[str, Any]:
    """Fold run ``run_id`` into ``<store>/history.redb`` in batched commits (the last one
    durable), keeping the newest ``keep`` runs there, and the file under ``max_mb`` MiB
    (the oldest runs pruned, the file compacted). Waits up to ``wait_s`` seconds while
    another process has the file open, then raises :class:`BlackboxError`. Returns
    ``run_id``, ``tests``, ``fixtures``, ``crashes``, ``replaced``, ``pruned``,
    ``commits`` and ``elapsed_s``."""

def history_brief(store_dir: _PathLike, run_id: str, wait_s: float = 2.0) -> dict[str, Any] | None:
    """What :meth:`RunReader.brief` says of a finished run that the next session's start
    needs (``run`` with ``id``, ``exit_status``, ``live``; ``test_count``; ``crashes``),
    read from ``<store>/history.redb`` instead of the run folder. None when the history
    does not hold the run (its pytest died before folding it, or folding is off). Waits up
    to ``wait_s`` seconds while a fold in another process holds the file."""

def history_flaky(store_dir: _PathLike, last: int = 20) -> dict[str, Any]:
    """``blackbox flaky --json`` (docs/cli.md): ``runs``, ``last`` and ``tests``."""

def history_test(store_dir: _PathLike, nodeid: str, last: int = 20) -> dict[str, Any]:
    """``blackbox history NODEID --json`` (docs/cli.md)."""

def history_slower(store_dir: _PathLike, last: int = 20, threshold: float = 1.5) -> dict[str, Any]:
    """``blackbox slower --json`` (docs/cli.md)."""

def fold_missing(
    store_dir: _PathLike,
    except_run: str | None = None,
    keep: int = 200,
    max_mb: float = 256.0,
    wait_s: float = 60.0,
) -> list[str]:
    """Fold every run folder of the store that history does not hold (a session killed
    before or during its fold), but ``except_run``, live runs and folders older than every
    run in history; returns the ids folded, oldest first."""

def combine_store(target: _PathLike, source: _PathLike) -> dict[str, Any]:
    """``blackbox combine --dir target source``: ``shard``, ``copied``, ``from_history``,
    ``already``, ``skipped`` (lines naming a path and why)."""

def prune_runs(store_dir: _PathLike, keep: int) -> list[str]:
    """Remove all but the newest ``keep`` run folders, never one a live process still
    writes; returns the ids removed."""

def create_private_file(path: _PathLike) -> int:
    """Create ``path`` (an attachment of a run folder) for writing, mode 0600 whatever the
    umask, never through a symlink; a FIFO, a hard link or another user's file there is
    refused (:class:`pytest_blackbox.StoreRefusedError`). Returns the descriptor (the
    caller owns it)."""

def remove_empty_attachments(run_dir: _PathLike) -> list[Path]:
    """Remove the empty attachment files of a run folder (a ``faulthandler-<pid>.txt`` no
    crash wrote to); returns the paths removed."""

def register_errors(
    *,
    base: type[BaseException],
    store_full: type[BaseException],
    record_too_large: type[BaseException],
    damaged: type[BaseException],
    no_store: type[BaseException],
    no_such_run: type[BaseException],
    refused: type[BaseException],
    transaction: type[BaseException],
    invalid_key: type[BaseException],
    invalid_record: type[BaseException],
    system: type[BaseException],
    warning: type[Warning],
) -> None:
    """Hand the native module the exception tree of :mod:`pytest_blackbox.errors` (which
    calls it once, at its import); every error it raises is one of these. A later call
    keeps the first classes."""

def register_runtime(
    *,
    sessions: list[Any],
    require: Any,
    set_user_property: Any,
    append_user_property: Any,
) -> None:
    """Hand the native ``record``/``append`` the session list of
    ``pytest_blackbox._runtime`` and its helpers (it calls this once, at its import)."""

def register_store_error_handler(handler: Callable[..., None]) -> None:
    """Hand the native side the plugin's policy for store errors (``plugin._store_error``,
    once, at its import): a hook's failed write calls ``handler(error)``, a failed
    ``record()``/``append()`` ``handler(error, True, 2)``, which raises it again unless it only
    warns of it (a full store outside ``--blackbox=require``: the value is dropped)."""

def install_crash_handler() -> None:
    """Install the async-signal-safe handler of fatal signals (SIGSEGV, SIGABRT, SIGBUS,
    SIGFPE, SIGILL) that marks this process's segment with the signal, the time and the
    running test, then calls the handler installed before it (Python's faulthandler, say)
    or the default action. Safe to call again. Raises
    :class:`pytest_blackbox.SystemResourceError` when the handler cannot be installed."""

def set_crash_echo(source: int, target: int, note: str | None = None) -> None:
    """When a fatal signal kills this process, the crash handler copies the file open as
    descriptor ``source`` (faulthandler's output, from its start) to ``target`` (the user's
    stderr, duplicated before pytest captured it) and then writes one line,
    ``blackbox: <test> crashed with <signal> (pid <pid>); <note>``, when ``note`` is given.
    -1 turns it off."""

def mark_crash(signal: int) -> bool:
    """Mark this process's newest segment as crashed by ``signal``, as the handler does;
    returns whether there was a segment to mark. For tests."""

def signal_name(signal: int) -> str:
    """``"SIGSEGV"`` for 11, and so on (``"signal N"`` for one without a name)."""

def watchdog_dump_signal(signal: int, fd: int = ...) -> None:
    """The signal the watchdog raises on its own thread, when it fires, for faulthandler
    (registered for it) to write every Python thread's traceback into the file open as
    ``fd``; 0: none. The watchdog first writes there the line naming the test's thread."""

def watchdog_before_fork() -> None:
    """Ends this process's watchdog thread before a fork (``os.register_at_fork``)."""

def watchdog_after_fork_in_parent() -> None:
    """After a fork, in the parent: an armed test gets its watchdog thread back. Raises
    :class:`pytest_blackbox.SystemResourceError` (an ``OSError``) when no thread can be
    started."""

def cli_main(argv: list[str], is_tty: bool | None = None) -> int:
    """Run the ``blackbox`` command line (``stats``, ``tests``, ``fixtures``, ``crashes``,
    ``dump``, ``runs``, ``check``, ``report``) with ``argv`` (without the program name),
    printing to this process's stdout; ``is_tty`` says whether that is a terminal (colour,
    width), found out from stdout when None. Returns the exit code: 0 ok, 1 error,
    2 usage."""
