"""What tests call: record, append, transaction, timed, summary, start_run."""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, overload

from . import _native, _runtime
from .store import Summary, default_store_dir

_sessions = _runtime._sessions

__all__ = ["append", "record", "start_run", "summary", "timed", "transaction"]

F = TypeVar("F", bound=Callable[..., Any])


def record(key: str, value: Any, *, test: str | None = None) -> None:
    """Set ``key`` to ``value`` on the running test of this process (or on ``test``, a
    nodeid; or on the session when no test runs). Committed, and so crash-safe, on return.

    Values that are not plain (None, bool, int, float, str, bytes, list, dict) are stored as
    the nearest plain type or their repr, with one :class:`BlackboxWarning`.
    """
    # The per-record path: no helper calls beyond the native one.
    s = _sessions[-1] if _sessions else _runtime.require()
    if test is not None:
        s.recorder.record(key, value, str(test))
        return
    plain = s.recorder.record(key, value, s.current_nodeid)
    if s.current_item is not None:
        _runtime.set_user_property(s.current_item, key, plain)


def append(key: str, value: Any, *, test: str | None = None) -> None:
    """Append ``value`` to the list under ``key`` (e.g. one comparison result per call)."""
    s = _sessions[-1] if _sessions else _runtime.require()
    if test is not None:
        s.recorder.append(key, value, str(test))
        return
    plain = s.recorder.append(key, value, s.current_nodeid)
    if s.current_item is not None:
        _runtime.append_user_property(s.current_item, key, plain)


@contextmanager
def transaction() -> Iterator[None]:
    """Everything recorded inside commits together when the block ends: a crash inside it
    leaves none of it. An exception inside the block drops it and propagates."""
    s = _runtime.require()
    s.recorder.begin()
    try:
        yield
    except BaseException:
        s.recorder.rollback()
        raise
    s.recorder.commit()


def summary() -> Summary:
    """The aggregate of the whole run so far, across every process: fixture totals, tests,
    crashes, workers. The same numbers on any xdist worker."""
    s = _runtime.require()
    return Summary(s.reader().view())


def _record_timed(name: str, seconds: float) -> None:
    s = _runtime.active()
    if s is not None:
        s.recorder.timed(name, s.current_nodeid, seconds)


@overload
def timed(func: F, /) -> F: ...
@overload
def timed(*, name: str | None = None) -> Callable[[F], F]: ...


def timed(func: Any = None, /, *, name: str | None = None) -> Any:
    """Time each call of a function: ``@timed`` or ``@timed(name="load model")``.

    Works on plain functions, coroutines, and generator functions (a yield fixture: the
    part before ``yield`` is timed as ``name``, the part after as ``name[teardown]``).
    Put it under ``@pytest.fixture``. Outside a run it only calls through.
    """

    def decorate(f: Any) -> Any:
        label = name or getattr(f, "__qualname__", getattr(f, "__name__", repr(f)))
        if inspect.isasyncgenfunction(f):

            @functools.wraps(f)
            async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                agen = f(*args, **kwargs)
                first = True
                resumed = None  # the teardown runs from when the fixture resumes
                try:
                    async for item in agen:
                        if first:
                            _record_timed(label, time.perf_counter() - t0)
                            first = False
                        yield item
                        resumed = time.perf_counter()
                finally:
                    if resumed is not None:
                        _record_timed(f"{label}[teardown]", time.perf_counter() - resumed)

            return agen_wrapper
        if inspect.iscoroutinefunction(f):

            @functools.wraps(f)
            async def coro_wrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await f(*args, **kwargs)
                finally:
                    _record_timed(label, time.perf_counter() - t0)

            return coro_wrapper
        if inspect.isgeneratorfunction(f):

            @functools.wraps(f)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                gen = f(*args, **kwargs)
                try:
                    value = next(gen)
                except StopIteration as stop:
                    _record_timed(label, time.perf_counter() - t0)
                    return stop.value
                _record_timed(label, time.perf_counter() - t0)
                try:
                    yield value
                except GeneratorExit:  # closed without a teardown: nothing to time
                    gen.close()
                    raise
                # The teardown runs from when the fixture resumes, not from its setup.
                t0 = time.perf_counter()
                try:
                    next(gen)
                except StopIteration as stop:
                    return stop.value
                finally:
                    _record_timed(f"{label}[teardown]", time.perf_counter() - t0)

            return gen_wrapper

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                _record_timed(label, time.perf_counter() - t0)

        return wrapper

    if func is not None:
        return decorate(func)
    return decorate


def start_run(
    store_dir: str | os.PathLike[str] | None = None, *, durability: str = "process"
) -> _runtime.Session:
    """Start recording a run from a script (outside pytest): ``record`` and friends then
    write into it. Returns the session; ``stop_run(session)`` ends it."""
    store = Path(store_dir) if store_dir is not None else default_store_dir()
    run_id, run_dir = _native.new_run(str(store))
    session = _runtime.Session(store, run_id, Path(run_dir), "other", None, durability)
    _runtime.push(session)
    return session


def stop_run(session: _runtime.Session) -> None:
    """End a run started by :func:`start_run` (marks its segment closed cleanly)."""
    session.recorder.close()
    _runtime.pop(session)
