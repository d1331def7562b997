"""Process-wide state: the runs this process records into, innermost last.

A pytest session (or ``start_run()``) pushes a :class:`Session`; ``record()`` and friends
write into the innermost one. A nested in-process pytest session (pytester) therefore gets
its own run, and the outer one resumes when it ends.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _native
from .errors import NotRecordingError

if TYPE_CHECKING:
    import pytest


class Session:
    """One run this process records into."""

    def __init__(
        self,
        store_dir: Path,
        run_id: str,
        run_dir: Path,
        role: str,
        worker: str | None = None,
        durability: str = "process",
    ) -> None:
        self.store_dir = Path(store_dir)
        self.run_id = run_id
        self.run_dir = Path(run_dir)
        self.role = role
        self.worker = worker
        self.durability = durability
        self.recorder = _native.Recorder(str(run_dir), role, worker, durability)
        #: The pid that created this session; a different os.getpid() means we were forked.
        self.pid = os.getpid()
        #: What records the tests of the pytest session that records here (a
        #: _native.TestHooks, which knows that session's config; None for start_run()).
        self.hooks: _native.TestHooks | None = None
        self.current_item: pytest.Item | None = None
        self.current_nodeid: str | None = None
        self._reader: _native.RunReader | None = None
        self._reader_pid = 0

    def reader(self) -> _native.RunReader:
        """A follower of this run, private to this process (rebuilt after a fork)."""
        if self._reader is None or self._reader_pid != os.getpid():
            self._reader = _native.RunReader(str(self.run_dir))
            self._reader_pid = os.getpid()
        return self._reader

    def nodeid_for(self, test: str | None) -> str | None:
        return str(test) if test is not None else self.current_nodeid


#: The native record() and append() hold this very list: mutate it, never rebind it.
_sessions: list[Session] = []


def push(session: Session) -> None:
    _sessions.append(session)


def pop(session: Session) -> None:
    if session in _sessions:
        _sessions.remove(session)


def active() -> Session | None:
    return _sessions[-1] if _sessions else None


def require() -> Session:
    s = active()
    if s is None:
        raise NotRecordingError(
            "no blackbox run is active in this process: call this inside a pytest run with "
            "the plugin on (not -p no:blackbox or --blackbox=off), or start one with "
            "pytest_blackbox.start_run()"
        )
    return s


def set_user_property(item: Any, key: str, value: Any) -> None:
    """Mirror a record() into item.user_properties (last write of a key wins)."""
    props = item.user_properties
    for i, (k, _) in enumerate(props):
        if k == key:
            props[i] = (key, value)
            return
    props.append((key, value))


def append_user_property(item: Any, key: str, value: Any) -> None:
    """Mirror an append() into item.user_properties as one (key, [values]) entry."""
    props = item.user_properties
    for i, (k, v) in enumerate(props):
        if k == key and isinstance(v, list):
            props[i] = (key, [*v, value])
            return
    props.append((key, [value]))
