"""pytest-blackbox: a crash-safe flight recorder for pytest runs.

``record``/``append`` attach values to the running test and are committed (crash-safe) on
return; ``summary()`` reads the whole run across every process; ``Store`` reads finished or
live runs. The pytest plugin is on by default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._native import __version__
from .api import append, record, start_run, stop_run, summary, timed, transaction
from .errors import (
    BlackboxError,
    BlackboxWarning,
    DamagedStoreError,
    InvalidKeyError,
    InvalidRecordError,
    NoStoreError,
    NoSuchRunError,
    NotRecordingError,
    RecordTooLargeError,
    StoreFullError,
    StoreRefusedError,
    SystemResourceError,
    TransactionError,
)

if TYPE_CHECKING:
    from .store import CrashInfo, FixtureInfo, Run, Store, Summary, TestInfo, WorkerInfo

#: The read API, imported on first use: its dataclasses are built at import (code compiled
#: then), which every pytest process would pay for, most of them never reading a run.
_FROM_STORE = frozenset(
    ("CrashInfo", "FixtureInfo", "Run", "Store", "Summary", "TestInfo", "WorkerInfo")
)


if not TYPE_CHECKING:  # type checkers see the imports above, and no catch-all

    def __getattr__(name: str) -> Any:
        if name in _FROM_STORE:
            from . import store

            value = getattr(store, name)
            globals()[name] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(globals()) | _FROM_STORE)


__all__ = [
    "BlackboxError",
    "BlackboxWarning",
    "CrashInfo",
    "DamagedStoreError",
    "FixtureInfo",
    "InvalidKeyError",
    "InvalidRecordError",
    "NoStoreError",
    "NoSuchRunError",
    "NotRecordingError",
    "RecordTooLargeError",
    "Run",
    "Store",
    "StoreFullError",
    "StoreRefusedError",
    "Summary",
    "SystemResourceError",
    "TestInfo",
    "TransactionError",
    "WorkerInfo",
    "__version__",
    "append",
    "record",
    "start_run",
    "stop_run",
    "summary",
    "timed",
    "transaction",
]
