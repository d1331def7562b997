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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

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


def _whole(config: pytest.Config, name: str) -> int:
    say = "a whole number, 0 or more"
    value, where = raw(config, name, say)
    try:
        n = int(str(value).strip())
    except ValueError:
        n = -1
    if n < 0 or isinstance(value, bool):
        raise pytest.UsageError(f"{where} = {value!r}: use {say}")
    return n


def size_mb(config: pytest.Config, name: str) -> float:
    """A size in MiB above 0 (``--blackbox-history-max-mb``)."""
    say = "a size in MiB above 0"
    value, where = raw(config, name, say)
    try:
        mb = float(str(value).strip())
    except ValueError:
        mb = -1.0
    if not mb > 0 or isinstance(value, bool):
        raise pytest.UsageError(f"{where} = {value!r}: use {say}")
    return mb


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


def store_unusable(settings: Settings | None, error: BlackboxError) -> None:
    """The store cannot be recorded into: a usage error under ``--blackbox=require``, else
    one warning (or, where warnings are errors, one line on stderr) and the tests run."""
    cause = str(error)
    if settings is not None and settings.mode == "require":
        raise pytest.UsageError(
            f"pytest-blackbox cannot record this run, and --blackbox=require asks it to: {cause}"
        )
    msg = (
        f"blackbox: not recording this run: {cause}. The tests run as with the plugin off; "
        "choose another store with --blackbox-dir DIR (or BLACKBOX_DIR), or turn recording "
        "off with --blackbox=off"
    )
    try:
        warnings.warn(msg, BlackboxWarning, stacklevel=2)
    except BlackboxWarning:
        sys.stderr.write(msg + "\n")
