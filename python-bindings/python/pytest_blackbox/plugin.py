"""The pytest plugin (entry point ``pytest11: blackbox``), on by default.

Every process that runs tests (the main process, xdist workers, pytest-forked children)
records test starts, phase reports, properties and fixture timings into its own segment of
the run, through pytest's public hooks (``_TestRecording``). Parent processes (the
pytest-forked parent, the xdist controller) read what a dead child recorded and put it into
the reports pytest and junitxml see (``_ForkedReports``, ``pytest_handlecrashitem``).
"""

from __future__ import annotations

import contextlib
import copy
import faulthandler
import os
import re
import select
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import pytest

from . import _native, _runtime, _settings, _timeout
from .errors import BlackboxError, StoreFullError, StoreRefusedError

if TYPE_CHECKING:
    from types import FrameType

    from ._native import _Role
    from .store import Summary

HELP_ENABLE = (
    "Record the run with pytest-blackbox: on (default), off, or require (a store that "
    "cannot record, full or read-only or not private, is then a usage error, not a warning)."
)
HELP_DIR = "Store directory of pytest-blackbox (default: $BLACKBOX_DIR, else <rootdir>/.blackbox)."
HELP_DURABILITY = (
    "process (default: survives the death of any process) or system (msync per commit: "
    "survives power loss, slower)."
)
HELP_KEEP = "Run folders pytest-blackbox keeps in its store (default 20; 0 keeps all)."
HELP_HISTORY = (
    "Runs kept in the store's history.redb, which each finished run is folded into "
    "(default 200; 0: do not fold)."
)
HELP_RESUME = (
    "Run only what the latest run of this store did not finish when its pytest died (never "
    "started, or running at the death), as the next attempt of that run; its crashed tests "
    "are reported failed, or run again with =retry. After a run that finished: runs "
    "everything, as a new run."
)
HELP_HISTORY_MAX_MB = (
    "Size cap of history.redb in MiB: past it the oldest runs are pruned (default 256)."
)

#: How often a parent reads its run while the run goes on (``RunReader.follow``).
FOLLOW_INTERVAL_S = 0.2

PLUGIN_KEY = pytest.StashKey["BlackboxPlugin"]()
#: Why a session with the plugin on records nothing: its store could not record (the cause,
#: as the warning of the run's start said it).
UNUSABLE_KEY = pytest.StashKey[str]()
PHASES = ("setup", "call", "teardown")
#: Options that make pytest show something and run no test: no run is recorded for them.
NO_RUN_OPTIONS = ("help", "collectonly", "showfixtures", "show_fixtures_per_test", "markers")


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    group = parser.getgroup("blackbox", "crash-safe flight recorder (pytest-blackbox)")
    group.addoption("--blackbox", choices=("on", "off", "require"), default=None, help=HELP_ENABLE)
    parser.addini("blackbox", HELP_ENABLE, default="on")
    group.addoption("--blackbox-dir", default=None, metavar="DIR", help=HELP_DIR)
    parser.addini("blackbox_dir", HELP_DIR, default="")
    group.addoption(
        "--blackbox-durability",
        choices=("process", "system"),
        default=None,
        help=HELP_DURABILITY,
    )
    parser.addini("blackbox_durability", HELP_DURABILITY, default="process")
    group.addoption(
        "--blackbox-keep", type=_settings.count, default=None, metavar="N", help=HELP_KEEP
    )
    _settings.addini_number(parser, "blackbox_keep", HELP_KEEP, "int", 20)
    group.addoption(
        "--blackbox-history-keep",
        type=_settings.count,
        default=None,
        metavar="N",
        help=HELP_HISTORY,
    )
    _settings.addini_number(parser, "blackbox_history_keep", HELP_HISTORY, "int", 200)
    group.addoption(
        "--blackbox-history-max-mb",
        type=float,
        default=None,
        metavar="MB",
        help=HELP_HISTORY_MAX_MB,
    )
    parser.addini("blackbox_history_max_mb", HELP_HISTORY_MAX_MB, default="256")
    # -- issue 14: after pytest dies --
    # A flag, so that `pytest --blackbox-resume tests/` keeps its path; `=retry` is its own
    # option string (argparse matches a whole option string before splitting at `=`), with
    # a destination of its own: `blackbox run` appends the plain flag, which must not undo
    # an `=retry` the user put in addopts.
    group.addoption(
        "--blackbox-resume",
        action="store_true",
        dest="blackbox_resume",
        default=False,
        help=HELP_RESUME,
    )
    group.addoption(
        "--blackbox-resume=retry",
        action="store_true",
        dest="blackbox_resume_retry",
        default=False,
        help="--blackbox-resume, running the tests that crashed there again (wins over "
        "the plain flag wherever either is given).",
    )
    pluginmanager.register(_timeout, _timeout.NAME)  # --blackbox-timeout: _timeout.py


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(name.replace("-", "_"), None)
    return value if value is not None else config.getini(name.replace("-", "_"))


def _history_max_mb(config: pytest.Config) -> float:
    return _settings.size_mb(config, "blackbox-history-max-mb")


def _store_dir(config: pytest.Config) -> Path:
    opt = config.getoption("blackbox_dir", None)
    if opt:
        return Path(opt).expanduser().absolute()
    ini = config.getini("blackbox_dir")
    if ini:
        p = Path(str(ini)).expanduser()
        return p if p.is_absolute() else Path(config.rootpath) / p
    env = os.environ.get("BLACKBOX_DIR")
    if env:
        return Path(env).expanduser().absolute()
    return Path(config.rootpath) / ".blackbox"


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    settings = None
    if workerinput is not None:
        if "blackbox_run_dir" not in workerinput:
            cause = workerinput.get("blackbox_unusable")
            if cause:
                _not_recording(config, cause)
            return  # the controller does not record: neither do we
    elif config.getoption("help", False):
        return  # help is shown whatever the settings say
    else:
        settings = _settings.validate(config)  # a bad setting: a usage error, now
        _history_max_mb(config)
        if not settings.records:
            return
        if any(config.getoption(name, False) for name in NO_RUN_OPTIONS):
            return  # --collect-only, --fixtures, --help...: nothing runs, nothing to record
    try:
        plugin = BlackboxPlugin(config, settings)
    except BlackboxError as e:  # the store cannot record: the tests run all the same
        cause = _settings.store_unusable(config, settings, e)
        _not_recording(config, cause)
        config.pluginmanager.register(_Unusable(cause), _Unusable.NAME)
        return
    config.stash[PLUGIN_KEY] = plugin
    config.pluginmanager.register(plugin, "blackbox-session")


def _not_recording(config: pytest.Config, cause: str) -> None:
    """This session records nothing because its store could not: the ``blackbox`` fixture
    and ``record()`` say so, not that the plugin is off."""
    config.stash[UNUSABLE_KEY] = cause
    _runtime.unusable.append(cause)


class _Unusable:
    """Registered in an xdist controller whose store could not record: its workers are told
    why (``blackbox_unusable``), for their ``blackbox`` fixture and ``record()``."""

    NAME = "blackbox-unusable"

    def __init__(self, cause: str) -> None:
        self.cause = cause

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["blackbox_unusable"] = self.cause


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    cause = config.stash.get(UNUSABLE_KEY, None)
    if cause is not None:
        del config.stash[UNUSABLE_KEY]
        with contextlib.suppress(ValueError):
            _runtime.unusable.remove(cause)
        unusable = config.pluginmanager.get_plugin(_Unusable.NAME)
        if unusable is not None:
            config.pluginmanager.unregister(unusable)
    plugin = config.stash.get(PLUGIN_KEY, None)
    if plugin is not None:
        plugin.close()
        config.pluginmanager.unregister(plugin)
        del config.stash[PLUGIN_KEY]


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture
def record_property(record_property: Any, request: pytest.FixtureRequest) -> Any:
    """The stock ``record_property``, made crash-safe: each call is also committed to the
    blackbox store, so a crashed test's report still carries it."""
    plugin = request.config.stash.get(PLUGIN_KEY, None)
    if plugin is None:
        return record_property

    def record_func(name: str, value: object) -> None:
        # junitxml str()s a name that is not a str: so does the store, noting it in the
        # one warning that the value's conversion may give.
        try:
            plain = plugin.session.recorder.record(
                name, value, request.node.nodeid, key_as_str=True
            )
        except BlackboxError as e:
            if not _is_store_failure(e):
                raise  # about the value (too large, ...): as record() raises it
            _store_error(e)  # a full store: junitxml still gets the property
            plain = value
        key = name if isinstance(name, str) else str(name)
        request.node.user_properties.append((key, plain))

    return record_func


class BoundRecorder:
    """The ``blackbox`` fixture: the API bound to the requesting test."""

    def __init__(self, session: _runtime.Session, item: pytest.Item) -> None:
        self._session = session
        self._item = item
        self.nodeid: str = item.nodeid

    def record(self, key: str, value: Any) -> None:
        """Set ``key`` of this test (the last write wins). A full store: as
        ``pytest_blackbox.record``."""
        try:
            plain = self._session.recorder.record(key, value, self.nodeid)
        except BlackboxError as e:
            _store_error(e, True)  # raised again unless only warned of
            plain = value
        _runtime.set_user_property(self._item, key, plain)

    def append(self, key: str, value: Any) -> None:
        """Append ``value`` to the list under ``key`` of this test."""
        try:
            plain = self._session.recorder.append(key, value, self.nodeid)
        except BlackboxError as e:
            _store_error(e, True)
            plain = value
        _runtime.append_user_property(self._item, key, plain)

    def transaction(self) -> Any:
        """Records inside commit together (see ``pytest_blackbox.transaction``)."""
        from .api import transaction

        return transaction()

    def properties(self) -> dict[str, Any]:
        """What this test recorded so far (from the store)."""
        reader = self._session.reader()
        reader.poll()
        return dict(reader.properties(self.nodeid))

    def summary(self) -> Summary:
        """The run so far, across every process."""
        from .store import Summary  # not at import: its dataclasses cost every process

        return Summary(self._session.reader().view())

    @property
    def run_dir(self) -> Path:
        return self._session.run_dir


@pytest.fixture
def blackbox(request: pytest.FixtureRequest) -> BoundRecorder:
    """Record properties of this test into the crash-safe store."""
    plugin = request.config.stash.get(PLUGIN_KEY, None)
    if plugin is None:
        cause = request.config.stash.get(UNUSABLE_KEY, None)
        if cause is not None:
            pytest.skip(_runtime.not_recorded(cause))
        pytest.skip("pytest-blackbox is off (--blackbox=off or -p no:blackbox)")
    return BoundRecorder(plugin.session, request.node)


# ---------------------------------------------------------------------------------------
# os._exit: how a test process ends itself is recorded before it happens, while a session
# records (put back when the last one ends): an exit in the middle of a test is its death,
# one from a reporting hook after the test's report was made (a suite that exits for a
# clean device) or between tests is no crash.
# ---------------------------------------------------------------------------------------

_real_os_exit = os._exit
#: Hooks that run after a report is made: an exit inside them comes after that report.
_REPORTING_HOOKS = frozenset(
    ("pytest_runtest_logreport", "pytest_runtest_makereport", "pytest_runtest_logfinish")
)


def _in_reporting_hook() -> bool:
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name in _REPORTING_HOOKS:
            return True
        frame = frame.f_back
    return False


def _os_exit_recording(status: int) -> NoReturn:  # pragma: no cover - the process ends here
    # Named as os._exit's parameter: os._exit(status=3) works as without the plugin.
    s = _runtime.active()
    if s is not None:
        with contextlib.suppress(Exception):  # exiting anyway
            s.recorder.exit(int(status), _in_reporting_hook())
    _real_os_exit(status)


# ---------------------------------------------------------------------------------------
# The per-session plugin
# ---------------------------------------------------------------------------------------


def _who(crash: dict[str, Any]) -> str:
    """Where a crash happened: worker, pid and the accelerators the process had."""
    devices = " ".join(f"{k}={v}" for k, v in (crash.get("devices") or {}).items())
    pid = f"pid {crash['pid']}" if crash.get("pid") else ""
    return ", ".join(x for x in (crash.get("worker"), pid, devices) if x)


def _signal_detail(sig: int | None) -> str:
    return _native.signal_name(sig) if sig else "an unknown cause (SIGKILL or os._exit?)"


def _death(crash: dict[str, Any]) -> str:
    """How a crash of the run's view ended, in a few words: its signal, its exit status, or
    its timeout ("timed out after 2.0 s in call (blackbox_timeout)")."""
    if crash.get("timeout"):
        return str(crash["detail"])
    if crash["signal_name"]:
        return str(crash["signal_name"])
    code = crash["exit_code"]
    return f"exit status {code}" if code is not None else "no signal"


def _read_text(path: Path, limit: int = 64 * 1024) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read(limit)
    except OSError:
        return ""


def _is_store_failure(e: BlackboxError) -> bool:
    """Whether ``e`` is about the store (full, refused, an I/O error), not about a value."""
    return isinstance(e, (StoreFullError, StoreRefusedError)) or type(e) is BlackboxError


def _counted(n: int, one: str, many: str) -> str:
    """``1 test``, ``2 tests``."""
    return f"{n} {one if n == 1 else many}"


def _store_error(e: BlackboxError, api: bool = False, stacklevel: int = 3) -> None:
    """A store error never breaks the run: one warning for the run, said by the process
    whose output the user sees. A forked child or an xdist worker hands it to its parent
    (``BlackboxPlugin.hand_over``), which says it once for all of them. The native hooks
    call this too (``register_store_error_handler``).

    ``api``: from ``record()``/``append()``, which raise it again unless it is a store
    failure (a full disk, not a value too large) in a pytest session that does not
    ``--blackbox=require`` a record: there the value is dropped and the test goes on. The
    warning points ``stacklevel`` frames up (the line that recorded)."""
    plugin = _plugin_of(_runtime.active())
    if api and (not _is_store_failure(e) or plugin is None or plugin.require):
        raise e
    kind = type(e).__name__
    if not _settings.first(kind):
        return
    if plugin is not None and plugin.hand_over(kind, str(e)):
        return
    _settings.warn(_settings.store_failed_message(str(e)), stacklevel)


_native.register_store_error_handler(_store_error)


#: The sessions of this process, innermost last (nested pytester sessions).
_plugins: list[BlackboxPlugin] = []


def _stop_follow_threads() -> None:
    """Before a fork (``os.register_at_fork``): the process forks with no thread of ours.
    A child gets only the forking thread anyway, and Python 3.12+ warns
    (DeprecationWarning) when a process with more than one thread forks: pytest-forked's
    fork for each test, a test's own ``os.fork`` or multiprocessing's."""
    for p in _plugins:
        if p.follows and p.session.pid == os.getpid():
            p.session.reader().stop_following()


def _start_follow_threads() -> None:
    """After a fork, in the parent: the follow threads go on."""
    for p in _plugins:
        if p.follows and p.session.pid == os.getpid():
            p.follows = p._follow()


os.register_at_fork(before=_stop_follow_threads, after_in_parent=_start_follow_threads)


class BlackboxPlugin:
    """Records one pytest session; registered as ``blackbox-session``."""

    def __init__(self, config: pytest.Config, settings: _settings.Settings | None) -> None:
        self.config = config
        workerinput = getattr(config, "workerinput", None)
        role: _Role
        #: --blackbox=require: record() raises what the store cannot take.
        self.require = settings is not None and settings.mode == "require"
        if workerinput is not None:
            store_dir = Path(workerinput["blackbox_store_dir"])
            run_dir = Path(workerinput["blackbox_run_dir"])
            run_id = run_dir.name
            role, worker = "worker", str(workerinput.get("workerid"))
            durability = workerinput["blackbox_durability"]
            self.require = bool(workerinput.get("blackbox_require", False))
        else:
            store_dir = _store_dir(config)
            # Checked at configure (_settings.validate), before this plugin is made.
            durability = _settings.DURABILITIES[
                str(_option(config, "blackbox-durability")).strip().lower()
            ]
            # A store that cannot be created, or refused: pytest_configure's to handle.
            run_id, run_dir_s = _native.new_run(str(store_dir))
            run_dir = Path(run_dir_s)
            dist = config.getoption("dist", "no")
            is_controller = dist not in (None, "no") and not config.getoption("collectonly")
            role, worker = ("controller" if is_controller else "main"), None
        self.session = _runtime.Session(store_dir, run_id, run_dir, role, worker, durability)
        self.is_parent = role in ("main", "controller")
        #: --blackbox-resume: what this session does not run (finished in the run it
        #: resumes, or crashed there and reported failed), and the note that says why.
        self.resume: _Resume | None = None
        self.resume_skip: set[str] = set()
        self.resume_note: str | None = None
        if workerinput is not None:
            self.resume_skip = set(workerinput.get("blackbox_resume_skip", ()))
        if self.is_parent:
            # The run's first write, before anything of this session is installed: a store
            # that cannot take it (full) leaves nothing behind but this empty folder. The
            # host name as socket.gethostname() gives it, without importing socket.
            try:
                self.session.recorder.run_start(
                    [str(a) for a in sys.argv], str(config.rootpath), os.uname().nodename
                )
            except BlackboxError:
                with contextlib.suppress(OSError):
                    for leftover in run_dir.iterdir():
                        leftover.unlink()
                    run_dir.rmdir()
                raise
            retry = bool(config.getoption("blackbox_resume_retry", False))
            if retry or config.getoption("blackbox_resume", False):
                self.resume, self.resume_note = _Resume.plan(store_dir, run_id, retry=retry)
                if self.resume is not None:
                    self.resume_skip = self.resume.skip
                    self.session.recorder.resume(
                        self.resume.run, self.resume.attempt, self.resume.retry
                    )
            self._dead_failures_to_lastfailed()
        _runtime.push(self.session)
        #: Store errors of this process's forked children come through this pipe (see
        #: ``hand_over``); a worker's, and its children's, go to the controller at its end.
        self._notes: tuple[int, int] | None = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.for_controller: list[tuple[str, str]] = []
        self.previous_notes: list[str] = []
        self._crash_reports: set[int] = set()
        self._collection_recorded = False
        self._fh_file: Any = None
        self._fh_pid = 0
        self._stderr_dup: int | None = None
        #: Whether this session reads its run on a thread while it goes on (parents only).
        self.follows = False
        if self.is_parent:
            self.previous_notes = self._previous_run_notes()
        _plugins.append(self)
        #: The user's stderr, before pytest captures it (as pytest's faulthandler plugin
        #: keeps it): where a dying process's traceback goes, as it would without us.
        try:
            self._stderr_dup = os.dup(sys.__stderr__.fileno() if sys.__stderr__ else 2)
        except (OSError, ValueError):
            self._stderr_dup = None
        self._capture_fatal_signals()
        #: What the hooks of _TestRecording record of this session's tests.
        self.session.hooks = _native.TestHooks(
            self.session.recorder,
            config,
            self._capture_fatal_signals,
            self.session.pid,
            _not_timed,
        )
        if os._exit is not _os_exit_recording:
            os._exit = _os_exit_recording
        pm = config.pluginmanager
        if role != "controller":
            pm.register(_TestRecording(self.session.hooks), _TestRecording.NAME)
        else:
            pm.register(_DistReports(self), _DistReports.NAME)
            self.expect_crash_reports()
        # Last, so that nothing above can fail with the thread running: at the run's end
        # (terminal summary, history) only the last records are left to read. Not in a
        # parent that forks for each test (pytest-forked): the thread would be stopped for
        # every fork (see _stop_follow_threads) before it ever polled.
        forks_each_test = role == "main" and bool(config.getoption("forked", False))
        if self.is_parent and not forks_each_test:
            self.follows = self._follow()

    def _follow(self) -> bool:
        """Starts (again) the follow thread of this session's reader; False if it cannot."""
        try:
            self.session.reader().follow(FOLLOW_INTERVAL_S)
        except OSError as e:  # no thread to be had: the run is read at its end
            _settings.warn(f"blackbox: {e}", 3)
            return False
        return True

    # -- crash capture -------------------------------------------------------------------

    def _capture_fatal_signals(self) -> None:
        """faulthandler writes this process's traceback into the run folder; the native
        handler (which faulthandler chains to) marks the segment with signal and test."""
        if self._fh_pid == os.getpid():
            return
        path = self.session.run_dir / f"faulthandler-{os.getpid()}.txt"
        try:
            # Read back by the crash handler (set_crash_echo): read-write. 0600 whatever
            # the umask, never through a planted symlink, nor into a FIFO or another's file.
            fd = _native.create_private_file(str(path))
            fh = os.fdopen(fd, "w+")  # kept open for the process's life
        except (OSError, BlackboxError) as e:
            _store_error(e if isinstance(e, BlackboxError) else BlackboxError(f"{path}: {e}"))
            return
        if self._fh_file is not None:
            # Ours, or our parent's inherited through fork() (this process's own copy of the
            # descriptor): left unclosed, its collection is a ResourceWarning.
            faulthandler.disable()
            self._fh_file.close()
        self._fh_file, self._fh_pid = fh, os.getpid()
        self.fh_path = path
        # Also opens this process's segment now, so a child forked before any test of
        # ours (pytest-forked under xdist) knows it is a child.
        self._safely(self.session.recorder.attachment, None, "faulthandler", str(path))
        faulthandler.disable()
        _native.install_crash_handler()
        faulthandler.enable(file=fh, all_threads=True)
        _timeout.dump_into(self.config, fh)
        self._echo_crashes()

    def _echo_crashes(self) -> None:
        """A fatal signal's traceback goes to the user's stderr too, as faulthandler's
        does without the plugin; where the crash kills pytest (the main process), one more
        line names the test and where its story is."""
        if self._stderr_dup is None or self._fh_file is None:
            return
        note = (
            f"its story: blackbox crashes --dir {self.session.store_dir}"
            if self.session.role == "main" and os.getpid() == self.session.pid
            else None
        )
        _native.set_crash_echo(self._fh_file.fileno(), self._stderr_dup, note)

    def _restore_faulthandler(self) -> None:
        if self._fh_file is None or self._fh_pid != os.getpid():
            return
        _native.set_crash_echo(-1, -1, None)
        faulthandler.disable()
        outer = _runtime.active()
        plugin = _plugin_of(outer)
        if plugin is not None and plugin._fh_file is not None and plugin._fh_pid == os.getpid():
            faulthandler.enable(file=plugin._fh_file, all_threads=True)
        else:
            with contextlib.suppress(AttributeError, ValueError, OSError):
                faulthandler.enable(file=sys.__stderr__ or sys.stderr, all_threads=True)
        if plugin is not None and plugin._fh_file is not None and plugin._fh_pid == os.getpid():
            plugin._echo_crashes()
        self._fh_file.close()
        self._fh_file = None
        if self._stderr_dup is not None:
            with contextlib.suppress(OSError):
                os.close(self._stderr_dup)
            self._stderr_dup = None

    # -- previous runs -------------------------------------------------------------------

    def _previous_run_notes(self) -> list[str]:
        """Lines about the run before this one if it died: which test, pid, signal."""
        try:
            runs = _native.list_runs(str(self.session.store_dir))
        except BlackboxError:
            return []
        older = [r for r in runs if r < self.session.run_id]
        if not older:
            return []
        prev = older[-1]
        view = None
        if int(_option(self.config, "blackbox-history-keep") or 0) > 0:
            # A finished run was folded into history.redb at its end: a few rows there,
            # where its folder would be a read of every record.
            with contextlib.suppress(BlackboxError):
                view = _native.history_brief(str(self.session.store_dir), prev)
        reader = None
        if view is None:
            try:
                reader = _native.RunReader(_native.run_path(str(self.session.store_dir), prev))
                view = reader.brief(0)
            except BlackboxError as e:
                return [f"blackbox: cannot read the previous run {prev}: {e}"]
        if view["run"].get("live"):
            return []
        lines = []
        for c in view["crashes"]:
            if c.get("kind") == "child":
                continue
            where = c["nodeid"] or "between tests"
            sig = _death(c)
            who = f"pid {c['pid']}" + (f", {c['worker']}" if c["worker"] else "")
            tb = next((a for a in c["attachments"] if _read_text(Path(a), 1).strip()), None)
            lines.append(
                f"blackbox: previous run {prev} crashed in {where} ({who}, {sig})"
                + (f"; traceback: {tb}" if tb else "")
            )
        if not lines and view["run"].get("exit_status") is None and view["test_count"]:
            lines.append(f"blackbox: previous run {prev} ended without finishing its session")
        if reader is not None and view["run"].get("exit_status") is None:
            self._fold(reader)  # its own session died before it could
        return lines

    # -- hooks: session ------------------------------------------------------------------

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        if not self.is_parent:
            return []
        where = f"blackbox: recording run {self.session.run_id} in {self.session.store_dir}"
        return [where, *self.previous_notes]

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Where the header is not shown (-q, --no-header), the news of a dead previous
        run still is: one line."""
        config = self.config
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if self.resume_note and tr is not None:
            tr.write_line(self.resume_note)
        if not self.previous_notes or not (
            config.get_verbosity() < 0 or config.getoption("no_header", False)
        ):
            return
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            more = len(self.previous_notes) - 1
            tr.write_line(self.previous_notes[0] + (f" (and {more} more)" if more else ""))

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist controller: tell each worker the run folder (not through the environment,
        which nested pytest sessions would inherit)."""
        node.workerinput["blackbox_store_dir"] = str(self.session.store_dir)
        node.workerinput["blackbox_run_dir"] = str(self.session.run_dir)
        node.workerinput["blackbox_durability"] = self.session.durability
        node.workerinput["blackbox_require"] = self.require
        if self.resume_skip:
            node.workerinput["blackbox_resume_skip"] = sorted(self.resume_skip)

    # -- hooks: --blackbox-resume ----------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        """Deselects what the resumed run finished (and its crashes, reported instead),
        as ``--deselect`` does: the terminal counts them as deselected."""
        if not self.resume_skip or os.getpid() != self.session.pid:
            return
        keep = [i for i in items if i.nodeid not in self.resume_skip]
        if len(keep) != len(items):
            gone = [i for i in items if i.nodeid in self.resume_skip]
            config.hook.pytest_deselected(items=gone)
            items[:] = keep

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Any:
        """After the tests ran: the tests that failed in the resumed run, logged again from
        their stored reports, and those that crashed there, reported failed with their crash
        story and properties (terminal, junitxml and --lf see them as any failure). Not
        before: a failure logged before the loop reads as a collection
        error, which stops the session."""
        try:
            return (yield)
        finally:
            if self.resume is not None and os.getpid() == self.session.pid:
                self.resume.report_failures(self.config)
                for t in self.resume.crashed:
                    self.resume.report(self.config, t)

    def _dead_failures_to_lastfailed(self) -> None:
        """After a run whose pytest died, pytest's cache never got its failures (it writes
        ``lastfailed`` at session end): hand them over, through ``config.cache``. The
        cacheprovider reads ``cache/lastfailed`` once, when its ``pytest_configure``
        (tryfirst) makes its ``lfplugin``, where no ``config.cache`` exists before it: so
        this runs after it, and the ``lfplugin`` is made again (by its own class, under
        its own names) to read what was added. Once per dead run; nothing with
        ``-p no:cacheprovider``."""
        config = self.config
        cache = getattr(config, "cache", None)
        if cache is None:
            return
        if not _lastfailed_from_dead_run(cache, self.session.store_dir, self.session.run_id):
            return
        pm = config.pluginmanager
        lf = pm.get_plugin("lfplugin")
        if lf is None:
            return

        def take_out() -> list[tuple[object, str]]:
            out = []
            for name in ("lfplugin-collwrapper", "lfplugin"):
                plugin = pm.get_plugin(name)
                if plugin is not None:
                    pm.unregister(plugin, name)
                    out.append((plugin, name))
            return out

        # Its own names out first: a new LFPlugin registers its collection wrapper.
        gone = take_out()
        try:
            pm.register(type(lf)(config), "lfplugin")
        except Exception as e:  # noqa: BLE001 (pytest's private class: any change of it)
            # A pytest whose LFPlugin is built otherwise keeps its own --lf (without the
            # dead run's failures), and the user gets one warning.
            take_out()
            for plugin, name in reversed(gone):
                pm.register(plugin, name)
            _settings.warn(
                f"blackbox: --lf cannot see the failures of the dead run ({e!r}); "
                "`blackbox crashes` and `blackbox tests` list them",
                2,
            )

    # -- hooks: collection (recorded once per run, by the process that knows it) ---------

    def _record_collection(self, nodeids: list[str]) -> None:
        if self._collection_recorded:
            return
        self._collection_recorded = True
        self._safely(self.session.recorder.collected, nodeids)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """The main process: what it will run (``session.items``, after deselection)."""
        if self.session.role == "main" and os.getpid() == self.session.pid:
            self._record_collection([item.nodeid for item in session.items])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """xdist controller: it collects nothing itself; the first worker's collection is
        the run's (xdist checks that every worker collected the same)."""
        if self.session.role == "controller":
            self._record_collection(list(ids))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if os.getpid() != self.session.pid:
            return
        self.hear()
        if self.is_parent:
            self._safely(self.session.recorder.run_end, int(exitstatus))
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:  # xdist sends it after this hook
            workeroutput["blackbox_store_errors"] = self.for_controller

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: what a worker could not record, said once for the run."""
        for kind, cause in getattr(node, "workeroutput", {}).get("blackbox_store_errors", ()):
            self.heard(kind, cause)

    # -- store errors: said once, by the process the user sees -----------------------------

    def hand_over(self, kind: str, cause: str) -> bool:
        """A store error of a process whose warnings the user does not see: a forked child
        (its warnings die with it) writes it into its parent's pipe; an xdist worker keeps it
        for the controller (each worker's warning would be one more). False: say it here."""
        if os.getpid() != self.session.pid:
            if self._notes is None:
                return False
            line = f"{kind}\t{cause}".replace("\n", " ").encode()[: select.PIPE_BUF - 1]
            try:
                os.write(self._notes[1], line + b"\n")  # one write, whole (PIPE_BUF)
            except OSError:
                return False
            return True
        if self.session.role == "worker":
            self.for_controller.append((kind, cause))
            return True
        return False

    def hear(self) -> None:
        """Reads what this process's forked children handed over (see ``hand_over``)."""
        if self._notes is None or os.getpid() != self.session.pid:
            return
        data = b""
        with contextlib.suppress(OSError):  # BlockingIOError: nothing (more) there
            while chunk := os.read(self._notes[0], 65536):
                data += chunk
        for line in data.decode(errors="replace").splitlines():
            kind, _, cause = line.partition("\t")
            self.heard(kind, cause)

    def heard(self, kind: str, cause: str) -> None:
        """A store error another process of the run handed over: said once for the run (a
        worker hands it on to the controller)."""
        if not _settings.first(kind):
            return
        if self.session.role == "worker":
            self.for_controller.append((kind, cause))
        else:
            _settings.say(self.config, _settings.store_failed_message(cause))

    # -- hooks: tests (in the process that runs them) ------------------------------------

    def _safely(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, a store error becoming a warning (see ``_store_error``)."""
        try:
            return fn(*args)
        except BlackboxError as e:
            _store_error(e)
            return None

    # -- parents: crash reports ----------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: Any, sched: Any) -> None:
        """xdist controller: a worker died running ``crashitem``. xdist logs ``report``
        after this hook: a crash report, or, when the worker ended itself after the test's
        reports were made (``os._exit`` from a reporting hook), a passing teardown that
        closes the test for junitxml, so pytest counts the test once."""
        node = getattr(report, "node", None)
        worker = getattr(getattr(node, "gateway", None), "id", None)
        reader = self.session.reader()
        reader.poll()
        view = reader.brief(0)
        dist = self.config.pluginmanager.get_plugin(_DistReports.NAME)
        if dist is not None:
            dist.deliver_missing(reader, crashitem, worker, node)
        exits = [
            e for e in view["exits"] if e["nodeid"] == crashitem and e["worker"] in (None, worker)
        ]
        if exits:
            report.when = "teardown"
            report.outcome = "passed"
            report.longrepr = None
            report.user_properties = list(reader.properties(crashitem))
            return
        pids: list[int] = next((w["pids"] for w in view["workers"] if w["id"] == worker), [])
        status = _exit_status(pids[0]) if pids else None
        self.fill_crash_report(
            report,
            crashitem,
            worker=worker,
            child_pid=pids[0] if pids else None,
            signal_hint=status[0] if status else None,
            exit_code=status[1] if status else None,
        )

    def died_in(self, reader: _native.RunReader, nodeid: str, worker: str | None) -> dict[str, Any]:
        """The dead process's own account of dying in ``nodeid``: its segment (crash mark,
        running test, an os._exit record, its memory cgroup), as the aggregate reads it;
        empty when it left none."""
        died: dict[str, Any] = {}
        for c in reader.brief(0)["crashes"]:
            if c["nodeid"] != nodeid or c["pid"] == os.getpid() or c["kind"] == "child":
                continue
            if worker is not None and c["worker"] not in (None, worker):
                continue
            died = c
        return died

    def fill_crash_report(
        self,
        report: Any,
        nodeid: str,
        *,
        worker: str | None,
        child_pid: int | None,
        phases_done: list[Any] | None = None,
        signal_hint: int | None = None,
        exit_code: int | None = None,
    ) -> None:
        """Put what the dead process recorded into ``report``: properties, the phase that
        died, how it died and the Python traceback; and record the crash."""
        reader = self.session.reader()
        died = self.died_in(reader, nodeid, worker)
        pid = died.get("pid") or child_pid
        signal = signal_hint or died.get("signal")
        if phases_done is None:
            phases_done = [(p, None) for p, _ in reader.phase_reports(nodeid)]
        done = [p for p, _ in phases_done]
        dying = next((p for p in PHASES if p not in done), "teardown")
        timeout = died.get("timeout")  # the watchdog or pytest-timeout ended it (_timeout.py)
        if timeout:
            dying = timeout["phase"] or dying
            how = died["detail"]  # "timed out after 2.0 s in call (blackbox_timeout)"
        elif "OOM killer" in died.get("detail", ""):
            how = "was killed by the OOM killer (SIGKILL)"
            signal = signal or 9
        elif signal:
            how = f"crashed with {_native.signal_name(signal)}"
        elif died.get("exit_code") is not None:
            exit_code = died["exit_code"]
            how = f"exited with status {exit_code} (os._exit)"
        elif exit_code is not None:
            how = f"exited with status {exit_code}"
        else:
            how = "died (no signal handler ran: SIGKILL or os._exit?)"
        outcomes = {p: r.get("outcome", "passed") for p, r in phases_done if isinstance(r, dict)}
        story = ", ".join(f"{p} {outcomes.get(p, 'passed')}" for p in done)
        line = (f"{story}, " if story else "") + (how if timeout else f"{dying} {how}")
        devices = " ".join(f"{k}={v}" for k, v in (died.get("devices") or {}).items())
        who = ", ".join(
            x
            for x in (f"worker {worker}" if worker else "", f"pid {pid}" if pid else "", devices)
            if x
        )
        props = reader.properties(nodeid)
        text = [
            str(report.longrepr) if report.longrepr else "",
            f"blackbox: {line} ({who})",
        ]
        if pid:
            tb = _read_text(self.session.run_dir / f"faulthandler-{pid}.txt").strip()
            if tb:
                text.append("Python traceback at the crash (faulthandler):\n" + tb)
        report.longrepr = "\n".join(t for t in text if t)
        report.user_properties = list(props)
        if dying in PHASES:
            report.when = dying
        self._crash_reports.add(id(report))
        self.expect_crash_reports()
        self._safely(
            self.session.recorder.crash,
            nodeid,
            int(pid or 0),
            worker,
            int(signal or 0),
            exit_code,
            dying,
            line,
        )

    def expect_crash_reports(self) -> None:
        """Registers ``_CrashTeardowns``: before the hook call that logs a crash report
        (a plugin registered during a hook call misses that call)."""
        pm = self.config.pluginmanager
        if not pm.has_plugin(_CrashTeardowns.NAME):
            pm.register(_CrashTeardowns(self), _CrashTeardowns.NAME)

    def crash_teardown(self, report: pytest.TestReport) -> None:
        """After a crash report ``fill_crash_report`` filled, a passing teardown report
        carrying its properties: junitxml writes a test's properties only when it
        finalizes on a teardown report."""
        if id(report) not in self._crash_reports or report.when == "teardown":
            return
        self._crash_reports.discard(id(report))
        teardown = pytest.TestReport(
            nodeid=report.nodeid,
            location=report.location,
            keywords=dict(report.keywords),
            outcome="passed",
            longrepr=None,
            when="teardown",
            user_properties=list(report.user_properties),
        )
        for attr in ("node", "worker_id", "item_index"):
            if hasattr(report, attr):
                setattr(teardown, attr, getattr(report, attr))
        self.config.hook.pytest_runtest_logreport(report=teardown)

    # -- terminal summary ------------------------------------------------------------------

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.is_parent:
            return
        try:
            view = self.session.reader().brief(5)
        except BlackboxError as e:
            terminalreporter.write_line(f"blackbox: cannot read the run: {e}")
            return
        tr = terminalreporter
        children = [c for c in view["crashes"] if c["kind"] == "child"]
        crashes = [c for c in view["crashes"] if c["kind"] != "child"]
        timeouts = sum(1 for c in crashes if c["timeout"])
        workers = [w for w in view["workers"] if w["id"].startswith("gw")]
        tr.section("blackbox", sep="-")
        tr.write_line(
            f"run {view['run']['id']}: {_counted(view['test_count'], 'test', 'tests')}"
            + (f" on {_counted(len(workers), 'worker', 'workers')}" if workers else "")
            + f", {len(crashes) - timeouts} crashed"
            + (f", {timeouts} timed out" if timeouts else "")
            + f"; details: blackbox stats --dir {self.session.store_dir}"
        )
        note = self._safely(self.session.reader().flaky_note, str(self.session.store_dir))
        if note:
            tr.write_line(note, yellow=True)
        fixtures = view["fixtures"][:5]
        if fixtures:
            parts = [
                f"{f['name']} {f['total_s']:.2f}s/{f['setups']}x"
                + (f" (max {f['max_s']:.2f}s)" if f["setups"] > 1 else "")
                for f in fixtures
            ]
            tr.write_line("slowest fixtures (all processes): " + ", ".join(parts))
        for c in crashes:
            where = c["nodeid"] or "between tests"
            if c["timeout"]:  # "TIMEOUT t.py::test (gw0, pid 9): after 2.0 s in call (...)"
                t = c["timeout"]
                phase = f" in {t['phase']}" if t["phase"] else ""
                how = f"after {t['limit_s']!r} s{phase} ({t['source']})"
                tr.write_line(f"TIMEOUT {where} ({_who(c)}): {how}", red=True)
                continue
            phase = f" in {c['phase']}" if c["phase"] else ""
            tr.write_line(f"CRASHED {where} ({_who(c)}): {_death(c)}{phase}", red=True)
        for c in children:
            tr.write_line(f"blackbox: {c['detail']} ({_who(c)})")

    # -- end -----------------------------------------------------------------------------

    def close(self) -> None:
        s = self.session
        if self._notes is not None and os.getpid() == s.pid:
            for fd in self._notes:
                os.close(fd)
            self._notes = None
        if self.follows:
            self.follows = False
            s.reader().stop_following()
        self._safely(s.recorder.close)
        _runtime.pop(s)
        if self in _plugins:
            _plugins.remove(self)
        if not _plugins and os._exit is _os_exit_recording:
            os._exit = _real_os_exit
        pm = self.config.pluginmanager
        for name in (
            _CrashTeardowns.NAME,
            _TestRecording.NAME,
            _DistReports.NAME,
            _ForkedReports.NAME,
        ):
            helper = pm.get_plugin(name)
            if helper is not None:
                pm.unregister(helper)
        self._restore_faulthandler()
        if self.is_parent:
            # The run's processes are done: a traceback file no crash wrote to goes.
            self._safely(_native.remove_empty_attachments, str(s.run_dir))
            # From the reader the terminal summary read: only what came since is read.
            self._fold(s.reader())
            keep = int(_option(self.config, "blackbox-keep") or 0)
            if keep > 0:
                self._safely(_native.prune_runs, str(s.store_dir), keep)

    def _fold(self, reader: _native.RunReader) -> None:
        """Folds the run ``reader`` reads into history.redb (off the per-record path)."""
        keep = int(_option(self.config, "blackbox-history-keep") or 0)
        if keep > 0:
            store, max_mb = str(self.session.store_dir), _history_max_mb(self.config)
            self._safely(reader.fold_history, store, keep, 60.0, max_mb)
            # And any run whose session died before or during its fold.
            self._safely(_native.fold_missing, store, self.session.run_id, keep, max_mb)


# ---------------------------------------------------------------------------------------
# The per-test and per-fixture work: public hooks, each one native call.
# ---------------------------------------------------------------------------------------


def _not_timed(func: Any) -> bool:
    """Fixture functions whose setup is not timed (asked once per fixture definition): the
    pseudo-fixture pytest makes for each direct ``parametrize`` argument, and this plugin's
    own ``record_property``, which requests the stock one (timed itself)."""
    name = getattr(func, "__name__", "")
    module = getattr(func, "__module__", "")
    return (name, module) in (
        ("get_direct_param_fixture_func", "_pytest.python"),
        ("record_property", __name__),
    )


class _TestRecording:
    """In every process that runs tests (not the xdist controller): each test's start, each
    phase's report the moment pytest made it (before any reporting hook runs, so a process
    that ends itself in one loses nothing), and every fixture's setup and teardown time."""

    NAME = "blackbox-tests"

    def __init__(self, hooks: _native.TestHooks) -> None:
        self.hooks = hooks

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.hooks.start(item)

    # Outermost: the report as every other wrapper (xfail's, say) left it.
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Any:
        report = yield
        self.hooks.record_phase(item, report)
        return report

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Any:
        timer = self.hooks.fixture_starts(fixturedef)
        if timer is None:
            return (yield)
        try:
            return (yield)
        finally:
            timer.setup_done(fixturedef)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """pytest-forked runs these tests in children: this process, their parent, hands
        pytest the reports they made where pytest-forked could not."""
        config = session.config
        if not config.pluginmanager.has_plugin("pytest_forked"):
            return
        forked = bool(config.getoption("forked", False)) or any(
            True for _ in _runtime.closest_markers(session.items, "forked")
        )
        plugin = config.stash.get(PLUGIN_KEY, None)
        if (
            forked
            and plugin is not None
            and not config.pluginmanager.has_plugin(_ForkedReports.NAME)
        ):
            config.pluginmanager.register(_ForkedReports(plugin), _ForkedReports.NAME)
            plugin.expect_crash_reports()


def _exit_status(pid: int, wait_s: float = 2.0) -> tuple[int | None, int | None] | None:
    """(signal, exit status) of this process's dead child ``pid`` (an xdist popen worker),
    read without reaping it (``WNOWAIT``: execnet still waits for it); None when it is not
    our child or has not ended within ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except (ChildProcessError, OSError):
            return None
        if info is not None:
            if info.si_code == os.CLD_EXITED:
                return None, info.si_status
            return info.si_status, None
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


class _DistReports:
    """The xdist controller: which phase reports of each worker's current test arrived, so
    that when a worker dies the reports it recorded but could not send are delivered (from
    the store) before its crash is handled."""

    NAME = "blackbox-dist"

    def __init__(self, plugin: BlackboxPlugin) -> None:
        self.plugin = plugin
        #: worker id -> (nodeid, phases logged)
        self.seen: dict[str, tuple[str, set[str]]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        worker = getattr(report, "worker_id", None) or getattr(
            getattr(getattr(report, "node", None), "gateway", None), "id", None
        )
        if worker is None:
            return
        current = self.seen.get(worker)
        if current is None or current[0] != report.nodeid:
            current = (report.nodeid, set())
            self.seen[worker] = current
        current[1].add(report.when)

    def deliver_missing(
        self, reader: _native.RunReader, nodeid: str, worker: str | None, node: Any
    ) -> None:
        seen = self.seen.get(worker or "", ("", set()))
        logged = seen[1] if seen[0] == nodeid else set()
        config = self.plugin.config
        for phase, data in reader.phase_reports(nodeid):
            if phase in logged or not isinstance(data, dict):
                continue
            rep = _report_from_data(config, data)
            if rep is not None:
                rep.node = node
                config.hook.pytest_runtest_logreport(report=rep)


RESUME_NOTE = "blackbox: --blackbox-resume"
RESUME_ALL = "running everything as a new run"

#: config.cache key: the dead runs whose failures went into ``cache/lastfailed``.
LASTFAILED_DONE_KEY = "blackbox/lastfailed_from"


def _lastfailed_from_dead_run(cache: Any, store_dir: Path, run_id: str) -> bool:
    """Adds the failed and crashed tests of the latest run, if its pytest died and this
    was not done for it yet, to ``cache/lastfailed``; whether it added any."""
    try:
        older = [r for r in _native.list_runs(str(store_dir)) if r < run_id]
    except BlackboxError:
        return False
    if not older:
        return False
    prev = older[-1]
    done = cache.get(LASTFAILED_DONE_KEY, [])
    if not isinstance(done, list) or prev in done:
        return False
    try:
        view = _native.logical_view(str(store_dir), prev)
    except BlackboxError:
        return False
    run = view["run"]
    if run.get("live") or run.get("ended") is not None:
        return False  # a finished session wrote lastfailed itself
    failed = [
        t["nodeid"]
        for t in view["tests"]
        if t["crashed"] or t["outcome"] in ("failed", "error", "timeout")
    ]
    lastfailed = cache.get("cache/lastfailed", {})
    if not isinstance(lastfailed, dict):
        lastfailed = {}
    lastfailed.update(dict.fromkeys(failed, True))
    cache.set("cache/lastfailed", lastfailed)
    cache.set(LASTFAILED_DONE_KEY, [*done[-19:], prev])
    return bool(failed)


class _Resume:
    """``--blackbox-resume``: the run this session resumes and what it leaves out."""

    def __init__(
        self,
        run: str,
        attempt: int,
        retry: bool,
        skip: set[str],
        crashed: list[Any],
        failed: list[tuple[str, list[tuple[str, Any]]]],
        run_dir: Path,
    ) -> None:
        self.run, self.attempt, self.retry = run, attempt, retry
        self.skip = skip
        #: (test dict, crash dict) of the tests that crashed in ``run``, reported failed.
        self.crashed = crashed
        #: (nodeid, properties) of the tests that failed (or errored) in ``run``: their
        #: stored reports are logged again, so that a resumed session shows every failure
        #: of the logical run, as one run that did not die would (the dead session's own
        #: output may be lost).
        self.failed = failed
        self.run_dir = run_dir

    @classmethod
    def plan(cls, store_dir: Path, run_id: str, *, retry: bool) -> tuple[_Resume | None, str]:
        """The plan, and the one line the terminal shows about it."""
        try:
            older = [r for r in _native.list_runs(str(store_dir)) if r < run_id]
            prev = older[-1] if older else None
            view = _native.logical_view(str(store_dir), prev) if prev else None
        except BlackboxError as e:
            return (
                None,
                f"{RESUME_NOTE}: cannot read the latest run ({e}); running everything",
            )
        if prev is None or view is None:
            return (
                None,
                "blackbox: --blackbox-resume: no earlier run in this store; running everything",
            )
        run = view["run"]
        if run.get("live"):
            return (
                None,
                f"{RESUME_NOTE}: the latest run {prev} is still running; {RESUME_ALL}",
            )
        if run.get("ended") is not None:
            return (
                None,
                f"{RESUME_NOTE}: the latest run {prev} finished; nothing to resume, {RESUME_ALL}",
            )
        attempt = int(run.get("attempt") or 1)
        crashes = {c["nodeid"]: c for c in view["crashes"] if c["nodeid"] and c["kind"] != "child"}
        skip: set[str] = set()
        crashed = []
        failed = []
        for t in view["tests"]:
            if t["crashed"]:
                if not retry:
                    skip.add(t["nodeid"])
                    if t["attempt"] == attempt:
                        crashed.append((t, crashes.get(t["nodeid"], {})))
            elif t["outcome"] not in ("not-run", "unfinished", "running"):
                skip.add(t["nodeid"])
                if t["outcome"] in ("failed", "error") and t["attempt"] == attempt:
                    failed.append((t["nodeid"], list(t["properties"].items())))
        left = sum(1 for t in view["tests"] if t["nodeid"] not in skip)
        what = (
            f"{_counted(len(crashed), 'crashed test', 'crashed tests')} reported failed"
            if not retry
            else "its crashed tests run again"
        )
        if failed:
            what += f", {_counted(len(failed), 'failure', 'failures')} reported again"
        note = (
            f"blackbox: resuming run {prev} (attempt {attempt + 1}): "
            f"{_counted(len(skip), 'test', 'tests')} done there left out, {what}, "
            f"{_counted(left, 'test', 'tests')} to run"
        )
        return cls(prev, attempt + 1, retry, skip, crashed, failed, store_dir / prev), note

    def report_failures(self, config: pytest.Config) -> None:
        """The failures of the resumed run, as pytest logged them there: its stored
        reports of each failed phase (a passed phase is stored without its report, and is
        logged as passed, with the test's properties: junitxml takes them from the
        teardown), between a logstart and a logfinish."""
        if not self.failed:
            return
        try:
            reader = _native.RunReader(str(self.run_dir))
            reader.poll()
        except BlackboxError as e:
            _settings.warn(
                f"{RESUME_NOTE}: cannot read the failures of run {self.run} ({e}); "
                f"`blackbox tests --run {self.run}` lists them",
                2,
            )
            return
        for nodeid, props in self.failed:
            reports = []
            for phase, data in reader.phase_reports(nodeid):
                rep = _report_from_data(config, data) if isinstance(data, dict) else None
                if rep is None and phase in PHASES:
                    rep = _resumed_report(nodeid, phase, "passed", None, props)
                if rep is not None:
                    reports.append(rep)
            if reports:
                _log_test(config, nodeid, reports)

    def report(self, config: pytest.Config, entry: Any) -> None:
        """One crashed test of the resumed run as pytest's reports of a failed test."""
        t, crash = entry
        nodeid = t["nodeid"]
        # Failed, as the issue asks, whichever phase died (the story names it): a report of
        # its call, between a passed setup and teardown.
        if crash.get("phase") in PHASES and crash["phase"] != "call":
            text_phase = f" in {crash['phase']}"
        else:
            text_phase = ""
        props = list(t["properties"].items())
        text = [
            f"blackbox: crashed{text_phase} in run {self.run} (attempt {self.attempt - 1}): "
            f"{crash.get('detail') or 'its process died'}"
            + (f" (pid {crash['pid']})" if crash.get("pid") else "")
        ]
        for a in crash.get("attachments") or []:
            tb = _read_text(Path(a)).strip()
            if tb:
                text.append("Python traceback at the crash (faulthandler):\n" + tb)
                break
        duration = float(t["duration_s"])
        reports = [
            _resumed_report(nodeid, "setup", "passed", None, props),
            _resumed_report(nodeid, "call", "failed", "\n".join(text), props, duration),
            _resumed_report(nodeid, "teardown", "passed", None, props),
        ]
        _log_test(config, nodeid, reports)


def _location(nodeid: str) -> tuple[str, None, str]:
    path, _, name = nodeid.partition("::")
    return (path, None, name or nodeid)


def _resumed_report(
    nodeid: str,
    when: Literal["setup", "call", "teardown"],
    outcome: Literal["passed", "failed"],
    longrepr: str | None,
    props: list[tuple[str, Any]],
    duration: float = 0.0,
) -> pytest.TestReport:
    """A report of a test of the run a session resumes, made from its records there."""
    location = _location(nodeid)
    return pytest.TestReport(
        nodeid=nodeid,
        location=location,
        keywords={location[2]: 1},
        outcome=outcome,
        longrepr=longrepr,
        when=when,
        user_properties=props,
        duration=duration,
    )


def _log_test(config: pytest.Config, nodeid: str, reports: list[Any]) -> None:
    """Logs ``reports`` as one test's, between its logstart and logfinish."""
    location = _location(nodeid)
    config.hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
    for rep in reports:
        config.hook.pytest_runtest_logreport(report=rep)
    config.hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)


def _report_from_data(config: pytest.Config, data: dict[str, Any]) -> Any:
    if isinstance(data.get("longrepr"), list):
        # A skip's (path, lineno, reason): the store keeps sequences as lists.
        data["longrepr"] = tuple(data["longrepr"])
    return config.hook.pytest_report_from_serializable(config=config, data=data)


class _CrashTeardowns:
    """Registered in a parent that may log crash reports (``expect_crash_reports``): after
    each, logs a passing teardown report (``BlackboxPlugin.crash_teardown``)."""

    NAME = "blackbox-crash-teardowns"

    def __init__(self, plugin: BlackboxPlugin) -> None:
        self.plugin = plugin

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.plugin._crash_reports:
            self.plugin.crash_teardown(report)


def _plugin_of(session: _runtime.Session | None) -> BlackboxPlugin | None:
    return next((p for p in _plugins if p.session is session), None)


# ---------------------------------------------------------------------------------------
# pytest-forked: the parent hands pytest the child's true reports
# ---------------------------------------------------------------------------------------

_EXIT_RE = re.compile(r"CRASHED with signal (\d+)|EXITED with status (\d+)")


class _ForkedReports:
    """The parent of pytest-forked's children. When a child did not hand its reports back
    (it crashed, or, on pytest 9.2, pytest-forked's ``marshal`` could not serialize them),
    pytest-forked logs one report of its own (``when == "???"``, "CRASHED with signal N"
    or "EXITED with status N"). The store has the child's true reports: that report becomes
    the first of them, in place, before any other plugin sees it, and the rest follow when
    pytest-forked ends the test (``pytest_runtest_logfinish``). A crash adds its own report
    with the phase that died, the child's properties and its traceback. No function of
    pytest-forked is replaced: its reports pass through these two public hooks."""

    NAME = "blackbox-forked"

    def __init__(self, plugin: BlackboxPlugin) -> None:
        self.plugin = plugin
        self.pending: dict[str, list[Any]] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when in PHASES or report.nodeid in self.pending:
            return
        reports = self.true_reports(report)
        first, rest = reports[0], reports[1:]
        if first is not report:
            report.__dict__.clear()
            report.__dict__.update(first.__dict__)
            crashes = self.plugin._crash_reports
            if id(first) in crashes:  # the crash report is this one now
                crashes.discard(id(first))
                crashes.add(id(report))
        self.pending[report.nodeid] = rest

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        for rep in self.pending.pop(nodeid, ()):
            self.plugin.config.hook.pytest_runtest_logreport(report=rep)
        self.plugin.hear()  # what the child could not record

    def true_reports(self, fallback: pytest.TestReport) -> list[Any]:
        """The reports to log in place of pytest-forked's ``fallback``."""
        plugin = self.plugin
        config = plugin.config
        reader = plugin.session.reader()
        reader.poll()
        nodeid = fallback.nodeid
        true_reports = []
        phases_done = []
        recorded = reader.phase_reports(nodeid)
        for phase, data in recorded:
            if isinstance(data, dict):
                rep = _report_from_data(config, data)
                if rep is not None:
                    true_reports.append(rep)
                    phases_done.append((phase, data))
        if any(r.when == "teardown" for r in true_reports):
            return true_reports
        if "teardown" in (p for p, _ in recorded) or not (
            phases_done or plugin.died_in(reader, nodeid, plugin.session.worker)
        ):
            # The child ended the test but its store had no room for the reports, or it left
            # nothing at all (no room for its segment): pytest-forked's own report, as
            # without the plugin; a crash it would not be.
            return [fallback]
        crash = copy.copy(fallback)
        crash.sections = list(fallback.sections)
        m = _EXIT_RE.search(str(fallback.longrepr or ""))
        plugin.fill_crash_report(
            crash,
            nodeid,
            worker=plugin.session.worker,
            child_pid=None,
            phases_done=phases_done,
            signal_hint=int(m.group(1)) if m and m.group(1) else None,
            exit_code=int(m.group(2)) if m and m.group(2) else None,
        )
        return [*true_reports, crash]
