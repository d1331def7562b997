"""The plugin's settings, checked at configure, and what it does when its store fails.

Every option and ini value is read and checked once, in ``pytest_configure``, before any
test runs: a bad one is a ``pytest.UsageError`` naming the option and what it accepts.

A store that cannot be recorded into (a full disk, a read-only or missing directory, one
refused as not private to this user) never stops the run: the session goes on as with the
plugin off, after one warning that says why and how to choose (``--blackbox-dir``) or turn
off (``--blackbox=off``). ``--blackbox=require`` (ini ``blackbox = require``) makes it a
usage error instead, for CI that insists on a record.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pytest

from .errors import BlackboxError, BlackboxWarning

if TYPE_CHECKING:
    from ._native import _Durability

#: ``--blackbox`` / ini ``blackbox``: the words accepted, and what each means.
MODES = {
    "on": "on",
    "true": "on",
    "yes": "on",
    "1": "on",
    "off": "off",
    "false": "off",
    "no": "off",
    "0": "off",
    "require": "require",
}
#: ``--blackbox-durability`` / ini ``blackbox_durability``: the words accepted, each as the
#: recorder takes it.
DURABILITIES: dict[str, _Durability] = {"process": "process", "system": "system"}


def addini_number(
    parser: pytest.Parser, name: str, help: str, kind: Literal["int", "float"], default: float
) -> None:
    """An ini value that is a number: typed where pytest types it (8.4 and later), else a
    string; the readers (``_whole``, ``_timeout.seconds``) convert and check either."""
    if pytest.version_tuple >= (8, 4):
        parser.addini(name, help, type=kind, default=default)
    else:
        parser.addini(name, help, default=str(default))


def count(text: str) -> int:
    """argparse type of ``--blackbox-keep`` and ``--blackbox-history-keep``: a whole
    number, 0 or more (argparse names the option in its error)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number (use 0 or more)"
        ) from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative (use 0 or more)")
    return n


@dataclass(frozen=True)
class Settings:
    #: on, off or require.
    mode: str
    durability: _Durability
    #: Run folders kept (0: all).
    keep: int
    #: Runs kept in history.redb (0: no folding).
    history_keep: int

    @property
    def records(self) -> bool:
        return self.mode != "off"


def raw(config: pytest.Config, name: str, say: str) -> tuple[Any, str]:
    """The value of option ``name`` (command line first, then ini) and where it came from;
    ``say`` is what it accepts."""
    dest = name.replace("-", "_")
    value = config.getoption(dest, None)
    if value is not None:
        return value, f"--{name}"
    try:
        return config.getini(dest), f"ini {dest}"
    except (ValueError, TypeError, pytest.UsageError) as e:  # a typed ini value, not converted
        raise pytest.UsageError(f"ini {dest}: {e}; use {say}") from None


def _choice(config: pytest.Config, name: str, accepted: Any, say: str) -> str:
    value, where = raw(config, name, say)
    word = str(value).strip().lower()
    if word not in accepted:
        raise pytest.UsageError(f"{where} = {value!r}: use {say}")
    return word


#: The type of a numeric setting.
N = TypeVar("N", int, float)


def _number(
    config: pytest.Config, name: str, say: str, parse: Callable[[str], N], ok: Callable[[N], bool]
) -> N:
    """Option ``name`` as ``parse`` reads it, when ``ok`` takes it; else a usage error that
    names where it came from and says ``say``."""
    value, where = raw(config, name, say)
    try:
        n: N | None = parse(str(value).strip())
    except ValueError:
        n = None
    if n is None or isinstance(value, bool) or not ok(n):
        raise pytest.UsageError(f"{where} = {value!r}: use {say}")
    return n


def _whole(config: pytest.Config, name: str) -> int:
    return _number(config, name, "a whole number, 0 or more", int, lambda n: n >= 0)


def size_mb(config: pytest.Config, name: str) -> float:
    """A size in MiB above 0 (``--blackbox-history-max-mb``)."""
    return _number(config, name, "a size in MiB above 0", float, lambda mb: mb > 0)


def validate(config: pytest.Config) -> Settings:
    """Reads and checks every setting of the plugin: a bad one is a usage error."""
    return Settings(
        mode=MODES[
            _choice(
                config,
                "blackbox",
                MODES,
                "on or off, or require (a store that cannot record is then an error)",
            )
        ],
        durability=DURABILITIES[
            _choice(config, "blackbox-durability", DURABILITIES, "process or system")
        ],
        keep=_whole(config, "blackbox-keep"),
        history_keep=_whole(config, "blackbox-history-keep"),
    )


#: How every warning about a store that cannot record ends.
CHOOSE = (
    "choose another store with --blackbox-dir DIR (or BLACKBOX_DIR), or turn recording off "
    "with --blackbox=off"
)


def store_unusable(config: pytest.Config, settings: Settings | None, error: BlackboxError) -> str:
    """The store cannot be recorded into: a usage error under ``--blackbox=require``, else
    one warning and the tests run. Returns what the warning said of the cause (for the
    ``blackbox`` fixture and ``record()``, which cannot record either)."""
    cause = str(error)
    if settings is not None and settings.mode == "require":
        raise pytest.UsageError(
            f"pytest-blackbox cannot record this run, and --blackbox=require asks it to: {cause}"
        )
    first(type(error).__name__)
    say(
        config,
        f"blackbox: not recording this run: {cause}. The tests run as with the plugin off; "
        + CHOOSE,
    )
    return cause


def store_failed_message(cause: str) -> str:
    """The warning of a store that fails in the middle of the run (a full disk)."""
    return f"blackbox: {cause}. The tests run on, not recorded from here; {CHOOSE}"


#: The kinds of store error said in this process (a forked child inherits them: its parent
#: said them). A full disk fails every later write too: the user hears it once.
_said: set[str] = set()


def first(kind: str) -> bool:
    """Whether store errors of ``kind`` (an exception class name) are news: none was said,
    and no full store was (what fails after a store filled fails because it filled: the
    history's fold, a run folder's clean-up)."""
    if kind in _said or "StoreFullError" in _said:
        return False
    _said.add(kind)
    return True


def say(config: pytest.Config, msg: str) -> None:
    """One warning about the run, not about a line of code: through pytest's own channel for
    them (``config.issue_config_time_warning``, as pytest-xdist and pytest-asyncio warn at
    configure), so that ``-W`` and ``filterwarnings`` apply and the warnings summary counts
    it, located at "pytest-blackbox" with no source line under it. Where warnings are errors,
    or pytest shows none (``-p no:warnings``), one line on stderr: the run goes on."""
    if config.pluginmanager.is_blocked("warnings"):
        sys.stderr.write(msg + "\n")
        return
    try:
        _issue(config, BlackboxWarning(msg))
    except BlackboxWarning:
        sys.stderr.write(msg + "\n")


def warn(msg: str, stacklevel: int) -> None:
    """A warning at the caller ``stacklevel`` frames up (in a test: the line that recorded),
    or one line on stderr where warnings are errors: a hook must not raise."""
    try:
        warnings.warn(msg, BlackboxWarning, stacklevel=stacklevel + 1)
    except BlackboxWarning:
        sys.stderr.write(msg + "\n")


def _issue(config: pytest.Config, warning: Warning) -> None:
    config.issue_config_time_warning(warning, stacklevel=2)


# The frame that issues the warning is its location: named for the plugin, in no source
# file (a location in plugin.py showed that line of ours under the warning).
_issue.__code__ = _issue.__code__.replace(co_filename="pytest-blackbox", co_firstlineno=1)
