"""Hangs: the time limit of tests (``--blackbox-timeout``, ini ``blackbox_timeout``, marker
``blackbox_timeout(seconds)``) and pytest-timeout's timers.

The watchdog itself is native (``core/src/watchdog.rs``): the recorder arms it when a test
starts and disarms it when the test ends, with atomic stores only, and its own thread
(which needs no GIL) ends a test that runs past its limit: it records the timeout, has
faulthandler write every Python thread's traceback into the run folder (the dump signal
registered here) and ends the process. This module only hands the limits to the recorder
once per session (no hook runs per test for them) and tells it when pytest-timeout arms
and cancels its timer, so that what pytest-timeout ends is recorded as a timeout too.
"""

from __future__ import annotations

import faulthandler
import math
import os
import signal
from typing import TYPE_CHECKING, Any

import pytest

from . import _native, _runtime, _settings

if TYPE_CHECKING:
    from .plugin import BlackboxPlugin

HELP_TIMEOUT = (
    "End a test that runs longer than SECONDS (setup, call and teardown together) with "
    "pytest-blackbox's native watchdog: its traceback and data are kept and the run goes "
    "on (--forked, -n N). 0 (default): no limit."
)
MARKER = "blackbox_timeout"
MARKER_HELP = (
    "blackbox_timeout(seconds): the time limit of this test for pytest-blackbox's "
    "watchdog (0: none), instead of --blackbox-timeout."
)
#: The signal the watchdog raises on its own thread to have faulthandler write every
#: Python thread's traceback (a real-time signal: no library of ours or pytest's uses it).
DUMP_SIGNAL = signal.SIGRTMAX - 3
#: The name this module is registered under, as a pytest plugin (from plugin.py).
NAME = "blackbox-timeout"
LIMITS_KEY = pytest.StashKey["Limits"]()
#: What a limit may be, as a usage error says.
SAY = "the time limit in seconds, a number >= 0 (0: none)"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("blackbox")
    group.addoption(
        "--blackbox-timeout",
        default=None,
        metavar="SECONDS",
        dest="blackbox_timeout",
        help=HELP_TIMEOUT,
    )
    _settings.addini_number(parser, "blackbox_timeout", HELP_TIMEOUT, "float", 0.0)


def seconds(value: object, where: str) -> float:
    """A limit in seconds from the command line, the ini file or a marker: a finite number
    >= 0, else a usage error that says so."""
    try:
        s = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        s = math.nan
    if isinstance(value, bool) or not math.isfinite(s) or s < 0:
        raise pytest.UsageError(f"{where} = {value!r}: give {SAY}")
    return s


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """The marker, and the limit checked (a bad one is a usage error), in every process."""
    config.addinivalue_line("markers", MARKER_HELP)
    value, where = _settings.raw(config, "blackbox-timeout", SAY)
    config.stash[LIMITS_KEY] = Limits(seconds(value, where))
    warn_if_pytest_timeout_under_forked(config)


def warn_if_pytest_timeout_under_forked(config: pytest.Config) -> None:
    """One warning, in the process that starts the session, when pytest-timeout's limit
    covers the whole protocol under ``--forked``: pytest-timeout arms its timer there in
    pytest-forked's parent, so a test that runs past it ends the parent, not the test."""
    if hasattr(config, "workerinput") or not config.pluginmanager.has_plugin("timeout"):
        return
    if not config.getoption("forked", False) or config.getini("timeout_func_only"):
        return
    limit = _pytest_timeout_limit(config)
    if limit is None or limit <= 0:
        return
    msg = (
        f"blackbox: pytest-timeout's limit ({limit:g} s) with --forked: pytest-timeout arms "
        "its timer in pytest-forked's parent, so a test that runs past it ends that parent "
        "(pytest itself, or an xdist worker), not the test: its thread method exits with "
        "status 1, its signal method is an INTERNALERROR, and the tests after it do not run "
        "there; pytest-blackbox's watchdog ends the forked test a second later and records "
        "it as a timeout. Set "
        "timeout_func_only = true (pytest-timeout then times the test function in the forked "
        "child) or use --blackbox-timeout SECONDS, which ends the hung test alone under "
        "--forked"
    )
    # Said at once (not in the warnings summary, which a parent this ends never prints).
    _settings.warn(msg, 2)


def _pytest_timeout_limit(config: pytest.Config) -> float | None:
    """pytest-timeout's limit of every test, where it looks (option, environment, ini);
    None when unset (pytest-timeout itself reports a bad value)."""
    for value in (
        config.getoption("timeout", None),
        os.environ.get("PYTEST_TIMEOUT"),
        config.getini("timeout"),
    ):
        if value is None or value == "":
            continue
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The markers' limits, handed to the recorder once: no hook runs per test for them."""
    limits = config.stash.get(LIMITS_KEY, None)
    plugin = _recording(config)
    if limits is None or plugin is None:
        return
    per_test = {}
    for item, marker in _runtime.closest_markers(items, MARKER):
        if len(marker.args) != 1 or marker.kwargs:
            raise pytest.UsageError(
                f"{item.nodeid}: use @pytest.mark.{MARKER}(seconds), one number"
            )
        per_test[item.nodeid] = seconds(marker.args[0], f"{item.nodeid}: {MARKER}")
    limits.any = limits.default > 0 or any(s > 0 for s in per_test.values())
    plugin.session.recorder.set_timeouts(limits.default or None, per_test)
    dump_into(config, plugin._fh_file)


def dump_into(config: pytest.Config, fh: Any) -> None:
    """Has faulthandler write every thread's traceback into ``fh`` (this process's
    faulthandler file in the run folder) when the watchdog fires. plugin.py calls it again
    when a forked child opens its own file."""
    limits = config.stash.get(LIMITS_KEY, None)
    if fh is None or limits is None or not limits.any or fh is limits.dump_file:
        return
    faulthandler.register(DUMP_SIGNAL, file=fh, all_threads=True, chain=False)
    _native.watchdog_dump_signal(DUMP_SIGNAL, fh.fileno())
    limits.dump_file = fh


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    limits = config.stash.get(LIMITS_KEY, None)
    if limits is not None and limits.dump_file is not None:
        faulthandler.unregister(DUMP_SIGNAL)
        _native.watchdog_dump_signal(0)
        limits.dump_file = None


# -- pytest-timeout (its hooks exist only where it is installed) ---------------------------


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """pytest-timeout arms its timer: if it ends the test, that is a timeout of its limit.
    Returns None, so that pytest-timeout's own implementation arms it."""
    plugin = _recording(item.config)
    if plugin is not None:
        plugin.session.recorder.external_timer(item.nodeid, float(settings.timeout))


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    plugin = _recording(item.config)
    if plugin is not None:
        plugin.session.recorder.external_timer(item.nodeid, None)


def _recording(config: pytest.Config) -> BlackboxPlugin | None:
    from .plugin import PLUGIN_KEY  # not at import: plugin.py imports this module

    return config.stash.get(PLUGIN_KEY, None)


class Limits:
    """The time limits of a session's tests."""

    def __init__(self, default: float) -> None:
        self.default = default
        #: Whether any test of the session has a limit.
        self.any = default > 0
        #: The file faulthandler dumps into when the watchdog fires.
        self.dump_file: Any = None


def _stop_thread() -> None:
    _native.watchdog_before_fork()


def _start_thread() -> None:
    _native.watchdog_after_fork_in_parent()


# The watchdog thread is stopped before a fork and started again in the parent when a test
# is armed (a child starts its own on its first armed test): the process forks with no
# thread of ours, as with the follow thread (Python 3.12+ warns otherwise).
os.register_at_fork(before=_stop_thread, after_in_parent=_start_thread)
