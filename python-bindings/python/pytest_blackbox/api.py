"""What tests call: record, append, transaction, timed, summary, start_run."""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from . import _native, _runtime

if TYPE_CHECKING:
    from ._native import _Durability
    from .store import Summary

__all__ = ["append", "record", "start_run", "summary", "timed", "transaction"]

F = TypeVar("F", bound=Callable[..., Any])


# record() and append() are native (documented in _native.pyi): the per-record path, with
# no Python frame between the caller and the store. Like the rest of this module they write
# into the innermost session of _runtime, and mirror into the running item's
# user_properties with _runtime.set_user_property / append_user_property.
record = _native.record
append = _native.append


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
    from .store import Summary  # not at import: its dataclasses cost every process

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
        qualname: str = getattr(f, "__qualname__", getattr(f, "__name__", repr(f)))
        label = name or qualname
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
    store_dir: str | os.PathLike[str] | None = None, *, durability: _Durability = "process"
) -> _runtime.Session:
    """Start recording a run from a script (outside pytest): ``record`` and friends then
    write into it. Returns the session; ``stop_run(session)`` ends it."""
    from .store import default_store_dir

    store = Path(store_dir) if store_dir is not None else default_store_dir()
    run_id, run_dir = _native.new_run(str(store))
    session = _runtime.Session(store, run_id, Path(run_dir), "other", None, durability)
    _runtime.push(session)
    return session


def stop_run(session: _runtime.Session) -> None:
    """End a run started by :func:`start_run` (marks its segment closed cleanly)."""
    session.recorder.close()
    _runtime.pop(session)
