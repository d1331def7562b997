"""The pytest plugin (entry point ``pytest11: blackbox``), on by default.

Every process that runs tests (the main process, xdist workers, pytest-forked children)
records test starts, phase reports, properties and fixture timings into its own segment of
the run. Parent processes (the pytest-forked parent, the xdist controller) read what a dead
child recorded and put it into the reports pytest and junitxml see.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import os
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import _native, _runtime
from .errors import BlackboxError, BlackboxWarning

if TYPE_CHECKING:
    from .store import Summary

HELP_ENABLE = "Record the run with pytest-blackbox: on (default) or off."
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

#: How often a parent reads its run while the run goes on (``RunReader.follow``).
FOLLOW_INTERVAL_S = 0.2

PLUGIN_KEY = pytest.StashKey["BlackboxPlugin"]()
try:
    from _pytest.python import get_direct_param_fixture_func as _direct_param_func
except ImportError:  # pragma: no cover - other pytest versions
    _direct_param_func = object()
PHASES = ("setup", "call", "teardown")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("blackbox", "crash-safe flight recorder (pytest-blackbox)")
    group.addoption("--blackbox", choices=("on", "off"), default=None, help=HELP_ENABLE)
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
    group.addoption("--blackbox-keep", type=int, default=None, metavar="N", help=HELP_KEEP)
    parser.addini("blackbox_keep", HELP_KEEP, default="20")
    group.addoption(
        "--blackbox-history-keep", type=int, default=None, metavar="N", help=HELP_HISTORY
    )
    parser.addini("blackbox_history_keep", HELP_HISTORY, default="200")


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(name.replace("-", "_"), None)
    return value if value is not None else config.getini(name.replace("-", "_"))


def _enabled(config: pytest.Config) -> bool:
    value = str(_option(config, "blackbox")).strip().lower()
    if value not in ("on", "off", "true", "false", "1", "0", "yes", "no"):
        raise pytest.UsageError(f"blackbox = {value!r}: use on or off")
    return value in ("on", "true", "1", "yes")


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
    if workerinput is not None:
        if "blackbox_run_dir" not in workerinput:
            return  # the controller does not record: neither do we
    elif not _enabled(config):
        return
    plugin = BlackboxPlugin(config)
    config.stash[PLUGIN_KEY] = plugin
    config.pluginmanager.register(plugin, "blackbox-session")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
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
        plain = plugin.session.recorder.record(name, value, request.node.nodeid, key_as_str=True)
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
        """Set ``key`` of this test (the last write wins)."""
        plain = self._session.recorder.record(key, value, self.nodeid)
        _runtime.set_user_property(self._item, key, plain)

    def append(self, key: str, value: Any) -> None:
        """Append ``value`` to the list under ``key`` of this test."""
        plain = self._session.recorder.append(key, value, self.nodeid)
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
        pytest.skip("pytest-blackbox is off (--blackbox=off or -p no:blackbox)")
    return BoundRecorder(plugin.session, request.node)


# ---------------------------------------------------------------------------------------
# os._exit: record an intentional exit in the middle of a test before it happens.
# ---------------------------------------------------------------------------------------

_real_os_exit = os._exit


def _os_exit_recording(code: int) -> None:  # pragma: no cover - the process ends here
    s = _runtime.active()
    if s is not None and s.current_nodeid is not None:
        with contextlib.suppress(Exception):  # exiting anyway
            s.recorder.exit(s.current_nodeid, int(code))
    _real_os_exit(code)


# ---------------------------------------------------------------------------------------
# The per-session plugin
# ---------------------------------------------------------------------------------------


def _signal_detail(sig: int | None) -> str:
    return _native.signal_name(sig) if sig else "an unknown cause (SIGKILL or os._exit?)"


def _read_text(path: Path, limit: int = 64 * 1024) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read(limit)
    except OSError:
        return ""


def _counted(n: int, one: str, many: str) -> str:
    """``1 test``, ``2 tests``."""
    return f"{n} {one if n == 1 else many}"


def _store_error(e: BlackboxError) -> None:
    """A store error never breaks the run: it becomes one warning (or, where warnings are
    errors, one line on stderr: a hook must not raise)."""
    msg = f"blackbox: {e}"
    try:
        warnings.warn(msg, BlackboxWarning, stacklevel=3)
    except BlackboxWarning:
        sys.stderr.write(msg + "\n")


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

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        workerinput = getattr(config, "workerinput", None)
        if workerinput is not None:
            store_dir = Path(workerinput["blackbox_store_dir"])
            run_dir = Path(workerinput["blackbox_run_dir"])
            run_id = run_dir.name
            role, worker = "worker", str(workerinput.get("workerid"))
            durability = workerinput["blackbox_durability"]
        else:
            store_dir = _store_dir(config)
            durability = str(_option(config, "blackbox-durability"))
            if durability not in ("process", "system"):
                raise pytest.UsageError(
                    f"blackbox_durability = {durability!r}: use process or system"
                )
            try:
                run_id, run_dir_s = _native.new_run(str(store_dir))
            except BlackboxError as e:
                raise pytest.UsageError(f"pytest-blackbox cannot create its store: {e}") from e
            run_dir = Path(run_dir_s)
            dist = config.getoption("dist", "no")
            is_controller = dist not in (None, "no") and not config.getoption("collectonly")
            role, worker = ("controller" if is_controller else "main"), None
        self.session = _runtime.Session(store_dir, run_id, run_dir, role, worker, durability)
        _runtime.push(self.session)
        self.is_parent = role in ("main", "controller")
        self.previous_notes: list[str] = []
        self._crash_reports: set[int] = set()
        self._fh_file: Any = None
        self._fh_pid = 0
        self._stderr_dup: int | None = None
        #: Whether this session reads its run on a thread while it goes on (parents only).
        self.follows = False
        if self.is_parent:
            # The host name as socket.gethostname() gives it, without importing socket.
            self.session.recorder.run_start(
                [str(a) for a in sys.argv], str(config.rootpath), os.uname().nodename
            )
            self.previous_notes = self._previous_run_notes()
        _plugins.append(self)
        self._capture_fatal_signals()
        #: What _native.PhaseCall records of this session's tests.
        self.session.hooks = _native.TestHooks(
            self.session.recorder,
            self.session,
            config,
            self._capture_fatal_signals,
            self.session.pid,
        )
        if os._exit is not _os_exit_recording:
            os._exit = _os_exit_recording
        _install_forked_bridge()
        _install_native_calls()
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
            warnings.warn(f"blackbox: {e}", BlackboxWarning, stacklevel=3)
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
            fh = open(path, "w")  # noqa: SIM115 - kept open for the process's life
        except OSError as e:
            warnings.warn(f"blackbox: cannot open {path}: {e}", BlackboxWarning, stacklevel=2)
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

    def _restore_faulthandler(self) -> None:
        if self._fh_file is None or self._fh_pid != os.getpid():
            return
        faulthandler.disable()
        outer = _runtime.active()
        plugin = _plugin_of(outer)
        if plugin is not None and plugin._fh_file is not None and plugin._fh_pid == os.getpid():
            faulthandler.enable(file=plugin._fh_file, all_threads=True)
        else:
            with contextlib.suppress(AttributeError, ValueError, OSError):
                faulthandler.enable(file=sys.__stderr__ or sys.stderr, all_threads=True)
        self._fh_file.close()
        self._fh_file = None

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
            where = c["nodeid"] or "between tests"
            sig = c["signal_name"] or (
                f"exit status {c['exit_code']}" if c["exit_code"] is not None else "no signal"
            )
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

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist controller: tell each worker the run folder (not through the environment,
        which nested pytest sessions would inherit)."""
        node.workerinput["blackbox_store_dir"] = str(self.session.store_dir)
        node.workerinput["blackbox_run_dir"] = str(self.session.run_dir)
        node.workerinput["blackbox_durability"] = self.session.durability

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_parent:
            self._safely(self.session.recorder.run_end, int(exitstatus))

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
        """xdist controller: a worker died running ``crashitem``."""
        gateway = getattr(getattr(report, "node", None), "gateway", None)
        worker = getattr(gateway, "id", None)
        self.fill_crash_report(report, crashitem, worker=worker, child_pid=None)

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
        died, the signal and the Python traceback; and record the crash."""
        reader = self.session.reader()
        # The dead process's own account: its segment (crash mark, running test, an
        # os._exit record), as the aggregate reads it.
        died: dict[str, Any] = {}
        for c in reader.brief(0)["crashes"]:
            if c["nodeid"] != nodeid or c["pid"] == os.getpid():
                continue
            if worker is not None and c["worker"] not in (None, worker):
                continue
            died = c
        pid = child_pid or died.get("pid")
        signal = signal_hint or died.get("signal")
        if phases_done is None:
            phases_done = [(p, None) for p, _ in reader.phase_reports(nodeid)]
        done = [p for p, _ in phases_done]
        dying = next((p for p in PHASES if p not in done), "teardown")
        if signal:
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
        line = (f"{story}, " if story else "") + f"{dying} {how}"
        who = ", ".join(
            x for x in (f"worker {worker}" if worker else "", f"pid {pid}" if pid else "") if x
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
        pm = self.config.pluginmanager
        if not pm.has_plugin(_CrashTeardowns.NAME):
            pm.register(_CrashTeardowns(self), _CrashTeardowns.NAME)
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
        crashes = view["crashes"]
        workers = [w for w in view["workers"] if w["id"].startswith("gw")]
        tr.section("blackbox", sep="-")
        tr.write_line(
            f"run {view['run']['id']}: {_counted(view['test_count'], 'test', 'tests')}"
            + (f" on {_counted(len(workers), 'worker', 'workers')}" if workers else "")
            + f", {len(crashes)} crashed; details: blackbox stats --dir {self.session.store_dir}"
        )
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
            sig = c["signal_name"] or (
                f"exit status {c['exit_code']}" if c["exit_code"] is not None else "no signal"
            )
            who = ", ".join(x for x in (c["worker"], f"pid {c['pid']}" if c["pid"] else "") if x)
            phase = f" in {c['phase']}" if c["phase"] else ""
            tr.write_line(f"CRASHED {where} ({who}): {sig}{phase}", red=True)

    # -- end -----------------------------------------------------------------------------

    def close(self) -> None:
        s = self.session
        if self.follows:
            self.follows = False
            s.reader().stop_following()
        self._safely(s.recorder.close)
        _runtime.pop(s)
        if self in _plugins:
            _plugins.remove(self)
        if not _plugins:
            _uninstall_native_calls()
        pm = self.config.pluginmanager
        crash_teardowns = pm.get_plugin(_CrashTeardowns.NAME)
        if crash_teardowns is not None:
            pm.unregister(crash_teardowns)
        self._restore_faulthandler()
        if self.is_parent:
            # From the reader the terminal summary read: only what came since is read.
            self._fold(s.reader())
            keep = int(_option(self.config, "blackbox-keep") or 0)
            if keep > 0:
                self._safely(_native.prune_runs, str(s.store_dir), keep)

    def _fold(self, reader: _native.RunReader) -> None:
        """Folds the run ``reader`` reads into history.redb (off the per-record path)."""
        keep = int(_option(self.config, "blackbox-history-keep") or 0)
        if keep > 0:
            self._safely(reader.fold_history, str(self.session.store_dir), keep)


class _CrashTeardowns:
    """Registered in a parent once it filled a crash report (``fill_crash_report``): after
    that report, logs a passing teardown report (``BlackboxPlugin.crash_teardown``)."""

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
# The per-test and per-fixture work, without a hook: while a session records, two functions
# of pytest (8.0 to 9.2) are native wrappers of themselves.
# - _pytest.runner.call_and_report(item, when, log=True, **kwds) runs each phase of a test
#   and makes its report, in every process that runs tests (the main one, xdist workers,
#   pytest-forked children): _native.PhaseCall records the test's start before its setup
#   and each report as it is made.
# - _pytest.fixtures.call_fixture_func(fixturefunc, request, kwargs) runs each fixture
#   function: _native.FixtureCall times its setup and, by a finalizer added before and
#   after the fixture's own, its teardown.
# Each records into the innermost session of the process when that is the item's own
# pytest session. Hooks did the same (pytest_runtest_setup and three
# pytest_runtest_logreport a test, a pytest_fixture_setup wrapper per fixture), each call
# paying pluggy's dispatch and Python frames (benches/python/README.md has the figures).
# ---------------------------------------------------------------------------------------

#: (module, function, what goes unrecorded without it, its native wrapper of the original)
_NATIVE_CALLS: tuple[tuple[str, str, str, Any], ...] = (
    ("_pytest.runner", "call_and_report", "phases of tests are", _native.PhaseCall),
    (
        "_pytest.fixtures",
        "call_fixture_func",
        "fixtures are",
        lambda original: _native.FixtureCall(original, _direct_param_func),
    ),
)


def _install_native_calls() -> None:
    import importlib

    for module_name, name, what, wrap in _NATIVE_CALLS:
        module = importlib.import_module(module_name)
        current = getattr(module, name, None)
        if isinstance(current, (_native.PhaseCall, _native.FixtureCall)):
            continue
        if current is None:  # pragma: no cover - a pytest without it (none from 8.0 to 9.2)
            warnings.warn(
                f"blackbox: this pytest has no {module_name}.{name}: {what} not recorded "
                "(pytest 8.0 to 9.2 have it)",
                BlackboxWarning,
                stacklevel=2,
            )
            continue
        setattr(module, name, wrap(current))


def _uninstall_native_calls() -> None:
    import importlib

    for module_name, name, _, _ in _NATIVE_CALLS:
        module = importlib.import_module(module_name)
        current = getattr(module, name, None)
        if isinstance(current, (_native.PhaseCall, _native.FixtureCall)):
            setattr(module, name, current.original)


# ---------------------------------------------------------------------------------------
# pytest-forked: give the parent the child's true reports
# ---------------------------------------------------------------------------------------

_EXIT_RE = re.compile(r"CRASHED with signal (\d+)|EXITED with status (\d+)")


def _install_forked_bridge() -> None:
    try:
        import pytest_forked
    except ImportError:
        return
    original = pytest_forked.forked_run_report
    if getattr(original, "_blackbox", False):
        return

    @functools.wraps(original)
    def forked_run_report(item: pytest.Item) -> list[Any]:
        reports = original(item)
        plugin = item.config.stash.get(PLUGIN_KEY, None)
        if plugin is None:
            return reports
        return _fix_forked_reports(plugin, item, reports)

    forked_run_report._blackbox = True  # type: ignore[attr-defined]
    pytest_forked.forked_run_report = forked_run_report


def _fix_forked_reports(plugin: BlackboxPlugin, item: pytest.Item, reports: list[Any]) -> list[Any]:
    """pytest-forked gives one report when the child did not hand its reports back: it
    crashed, or (pytest 9.2) its marshal could not serialize them. The store has the
    child's true reports; a crash gets the phase that died, properties and traceback."""
    if not (len(reports) == 1 and reports[0].when not in PHASES):
        return reports
    fallback = reports[0]
    config = item.config
    reader = plugin.session.reader()
    reader.poll()
    true_reports = []
    phases_done = []
    for phase, data in reader.phase_reports(item.nodeid):
        if isinstance(data, dict):
            if isinstance(data.get("longrepr"), list):
                # A skip's (path, lineno, reason): the store keeps sequences as lists.
                data["longrepr"] = tuple(data["longrepr"])
            rep = config.hook.pytest_report_from_serializable(config=config, data=data)
            if rep is not None:
                true_reports.append(rep)
                phases_done.append((phase, data))
    done = {r.when for r in true_reports}
    finished = "teardown" in done
    if finished:
        return true_reports
    m = _EXIT_RE.search(str(fallback.longrepr or ""))
    signal = int(m.group(1)) if m and m.group(1) else None
    exit_code = int(m.group(2)) if m and m.group(2) else None
    plugin.fill_crash_report(
        fallback,
        item.nodeid,
        worker=plugin.session.worker,
        child_pid=None,
        phases_done=phases_done,
        signal_hint=signal,
        exit_code=exit_code,
    )
    return [*true_reports, fallback]
