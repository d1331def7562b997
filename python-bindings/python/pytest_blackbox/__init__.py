"""pytest-blackbox: a crash-safe flight recorder for pytest runs.

``record``/``append`` attach values to the running test and are committed (crash-safe) on
return; ``summary()`` reads the whole run across every process; ``Store`` reads finished or
live runs. The pytest plugin is on by default.
"""

from __future__ import annotations

from ._native import __version__
from .api import append, record, start_run, stop_run, summary, timed, transaction
from .errors import (
    BlackboxError,
    BlackboxWarning,
    DamagedStoreError,
    InvalidKeyError,
    NoStoreError,
    NoSuchRunError,
    NotRecordingError,
    RecordTooLargeError,
    StoreFullError,
    TransactionError,
)
from .store import CrashInfo, FixtureInfo, Run, Store, Summary, TestInfo, WorkerInfo

__all__ = [
    "BlackboxError",
    "BlackboxWarning",
    "CrashInfo",
    "DamagedStoreError",
    "FixtureInfo",
    "InvalidKeyError",
    "NoStoreError",
    "NoSuchRunError",
    "NotRecordingError",
    "RecordTooLargeError",
    "Run",
    "Store",
    "StoreFullError",
    "Summary",
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
