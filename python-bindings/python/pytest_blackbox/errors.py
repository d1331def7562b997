"""The exceptions and the warning of pytest_blackbox: one tree under BlackboxError.

Defined here once; the native module raises these very classes, handed to it below at
import (it never imports the package itself).
"""

from __future__ import annotations

from . import _native

__all__ = [
    "BlackboxError",
    "BlackboxWarning",
    "DamagedStoreError",
    "InvalidKeyError",
    "InvalidRecordError",
    "NoStoreError",
    "NoSuchRunError",
    "NotRecordingError",
    "RecordTooLargeError",
    "StoreFullError",
    "StoreRefusedError",
    "SystemResourceError",
    "TransactionError",
]


class BlackboxError(Exception):
    """Base of every error pytest_blackbox raises."""


class StoreFullError(BlackboxError, OSError):
    """The disk (or a quota or file-size limit) has no room; what was committed is kept."""


class StoreRefusedError(BlackboxError, PermissionError):
    """A path of the store is not private to this user (owned by another, writable by
    others, a symlink or FIFO where a file should be): nothing is written there."""


class RecordTooLargeError(BlackboxError, ValueError):
    """One record is larger than a segment frame may hold (64 MiB)."""


class InvalidKeyError(BlackboxError, TypeError):
    """A property key given to ``record``/``append`` is not a str: pass ``str(key)``."""


class InvalidRecordError(BlackboxError, ValueError):
    """``Recorder.write`` was given a record kind there is none of, or fields that kind does
    not have (or lacks, or of the wrong type): the message names the kind and the field."""


class DamagedStoreError(BlackboxError):
    """A segment is damaged, foreign or of a newer format version."""


class NoStoreError(BlackboxError, FileNotFoundError):
    """There is no store (or no run in it) where one was expected."""


class NoSuchRunError(BlackboxError, KeyError):
    """The store has no run with that id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NotRecordingError(BlackboxError, RuntimeError):
    """record()/append() was called with no active run in this process."""


class TransactionError(BlackboxError, RuntimeError):
    """A transaction was opened inside another, or used after a fork."""


class SystemResourceError(BlackboxError, OSError):
    """The system refused what the recorder needs: a fatal-signal handler, a thread (the
    watchdog's, a follower's), the current directory."""


class BlackboxWarning(UserWarning):
    """A value was not a plain type and was stored as the nearest one (or its repr)."""


_native.register_errors(
    base=BlackboxError,
    store_full=StoreFullError,
    record_too_large=RecordTooLargeError,
    damaged=DamagedStoreError,
    no_store=NoStoreError,
    no_such_run=NoSuchRunError,
    refused=StoreRefusedError,
    transaction=TransactionError,
    invalid_key=InvalidKeyError,
    invalid_record=InvalidRecordError,
    system=SystemResourceError,
    warning=BlackboxWarning,
)
