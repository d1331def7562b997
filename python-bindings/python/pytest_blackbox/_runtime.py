"""Process-wide state: the runs this process records into, innermost last.

A pytest session (or ``start_run()``) pushes a :class:`Session`; ``record()`` and friends
write into the innermost one. A nested in-process pytest session (pytester) therefore gets
its own run, and the outer one resumes when it ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _native
from .errors import NotRecordingError

if TYPE_CHECKING:
    import pytest

    from ._native import _Durability, _Role


class Session:
    """One run this process records into."""

    def __init__(
        self,
        store_dir: Path,
        run_id: str,
        run_dir: Path,
        role: _Role,
        worker: str | None = None,
        durability: _Durability = "process",
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
        #: The running test of a session without hooks (a ``start_run()`` one): see
        #: :attr:`current_item`.
        self._current_item: pytest.Item | None = None
        self._current_nodeid: str | None = None
        self._reader: _native.RunReader | None = None
        self._reader_pid = 0

    # The running test: a pytest session's hooks keep it (set there at each test's start
    # and end, not here: no attribute of the session is set per test); a session without
    # hooks keeps what is assigned.

    @property
    def current_item(self) -> pytest.Item | None:
        hooks = self.hooks
        return hooks.current_item if hooks is not None else self._current_item

    @current_item.setter
    def current_item(self, item: pytest.Item | None) -> None:
        self._current_item = item

    @property
    def current_nodeid(self) -> str | None:
        hooks = self.hooks
        return hooks.current_nodeid if hooks is not None else self._current_nodeid

    @current_nodeid.setter
    def current_nodeid(self, nodeid: str | None) -> None:
        self._current_nodeid = nodeid

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


#: Why the pytest sessions of this process that have the plugin on record nothing (their
#: store could not record: the cause), innermost last.
unusable: list[str] = []


def not_recorded(cause: str) -> str:
    """What a session whose store could not record says of a record() or ``blackbox``."""
    return (
        f"pytest-blackbox is on but records nothing in this run: its store could not "
        f"record ({cause}), as its warning at the start of the run says"
    )


def require() -> Session:
    s = active()
    if s is None:
        if unusable:
            raise NotRecordingError(not_recorded(unusable[-1]))
        raise NotRecordingError(
            "no blackbox run is active in this process: call this inside a pytest run with "
            "the plugin on (not -p no:blackbox or --blackbox=off), or start one with "
            "pytest_blackbox.start_run()"
        )
    return s


class _PropertyIndex:
    """Where record() and append() find a key in an item's ``user_properties``: the first
    entry of each key, and the first whose value is a list, kept up to date as the list
    grows, so that mirroring costs the same however many keys and values the test already
    has. Others append to the list too (the stock ``record_property``, a user): their
    entries are indexed when next seen; a list changed in any other way is indexed again
    from scratch."""

    __slots__ = ("first", "first_list", "ours", "props", "seen")

    def __init__(self, props: list[Any]) -> None:
        self.props = props
        self.first: dict[Any, int] = {}
        self.first_list: dict[Any, int] = {}
        #: The list of each (key, [values]) entry this index made: nobody else holds it,
        #: so an append extends it where it is.
        self.ours: dict[Any, list[Any]] = {}
        self.seen = 0

    def _catch_up(self) -> None:
        props = self.props
        if len(props) < self.seen:
            self.__init__(props)  # type: ignore[misc]  # shrunk: start again
        for i in range(self.seen, len(props)):
            k, v = props[i]
            try:
                self.first.setdefault(k, i)
                if isinstance(v, list):
                    self.first_list.setdefault(k, i)
            except TypeError:  # a key someone else put there that is not hashable
                continue
        self.seen = len(props)

    def find(self, key: Any, *, list_only: bool) -> int | None:
        self._catch_up()
        i = (self.first_list if list_only else self.first).get(key)
        if i is not None and (
            self.props[i][0] != key or (list_only and not isinstance(self.props[i][1], list))
        ):
            self.__init__(self.props)  # type: ignore[misc]  # changed under us
            return self.find(key, list_only=list_only)
        return i

    def put(self, i: int, key: Any, value: Any) -> None:
        """``props[i] = (key, value)`` (``i == len(props)``: append), indexed."""
        props = self.props
        if i == len(props):
            props.append((key, value))
            self._catch_up()
        else:
            was_list = isinstance(props[i][1], list)
            props[i] = (key, value)
            if was_list and not isinstance(value, list) and self.first_list.get(key) == i:
                self.__init__(props)  # type: ignore[misc]  # a later list may be first now
        self.ours.pop(key, None)


_INDEX: pytest.StashKey[_PropertyIndex] | None = None


def _index(item: pytest.Item) -> _PropertyIndex:
    global _INDEX
    if _INDEX is None:
        import pytest

        _INDEX = pytest.StashKey[_PropertyIndex]()
    props = item.user_properties
    index = item.stash.get(_INDEX, None)
    if index is None or index.props is not props:
        index = _PropertyIndex(props)
        item.stash[_INDEX] = index
    return index


def set_user_property(item: Any, key: str, value: Any) -> None:
    """Mirror a record() into item.user_properties (last write of a key wins)."""
    index = _index(item)
    i = index.find(key, list_only=False)
    index.put(len(index.props) if i is None else i, key, value)


def append_user_property(item: Any, key: str, value: Any) -> None:
    """Mirror an append() into item.user_properties as one (key, [values]) entry. The
    list this makes is extended in place by the appends after it (a report made before
    holds the same list, as it holds the same item)."""
    index = _index(item)
    i = index.find(key, list_only=True)
    if i is not None and index.props[i][1] is index.ours.get(key):
        index.props[i][1].append(value)
        return
    values = [value] if i is None else [*index.props[i][1], value]
    index.put(len(index.props) if i is None else i, key, values)
    index.ours[key] = values


def closest_markers(
    items: Iterable[pytest.Item], name: str
) -> Iterator[tuple[pytest.Item, pytest.Mark]]:
    """Each item that has a ``name`` marker, with the one ``item.get_closest_marker(name)``
    gives (its own first, then its parents' up to the session), reading each node's
    ``own_markers`` once: the items of one module share its parents, where
    ``get_closest_marker`` walks them again for every item."""
    inherited: dict[int, pytest.Mark | None] = {}

    def own(node: Any) -> pytest.Mark | None:
        for mark in node.own_markers:
            if getattr(mark, "name", None) == name:
                return mark  # type: ignore[no-any-return]
        return None

    def above(node: Any) -> pytest.Mark | None:
        if node is None:
            return None
        key = id(node)  # the items hold their parents: no id is reused while we look
        if key not in inherited:
            mark = own(node)
            inherited[key] = mark if mark is not None else above(node.parent)
        return inherited[key]

    for item in items:
        mark = own(item)
        if mark is None:
            mark = above(item.parent)
        if mark is not None:
            yield item, mark


# The native record() and append() find the sessions through what is handed over here, once.
_native.register_runtime(
    sessions=_sessions,
    require=require,
    set_user_property=set_user_property,
    append_user_property=append_user_property,
)
