"""`Recorder.write(kind, fields)`: one method writes a record of any kind (docs/format.md,
"Adding a record kind"); what it writes reads back through `Store`, and a wrong kind or
field is an `InvalidRecordError` that names it."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from pytest_blackbox import BlackboxError, InvalidRecordError, Store, _native

RUN = "20261208-000000.000000-abcd"


def recorder(tmp_path: Path) -> tuple[Store, _native.Recorder]:
    (tmp_path / RUN).mkdir()
    return Store(tmp_path), _native.Recorder(str(tmp_path / RUN), "main")


def test_a_record_written_by_kind_reads_back(tmp_path: Path) -> None:
    store, rec = recorder(tmp_path)
    wall_ns = time.time_ns()
    rec.write(
        "crash",
        {
            "test": "t.py::test_\u00e9",
            "pid": 4243,
            "signal": 11,
            "exit_code": -11,
            "phase": "call",
            "detail": "Segmentation fault",
            "wall_ns": wall_ns,
        },
    )
    rec.write("resume", {"run": "20261207-000000-abcdef", "attempt": 2, "retry": True})
    rec.write(
        "intentional_exit", {"test": None, "phase": "teardown", "code": 0, "wall_ns": wall_ns}
    )
    rec.write(
        "process_info",
        {"env": {"CUDA_VISIBLE_DEVICES": "0"}, "mono_ns": time.monotonic_ns(), "wall_ns": wall_ns},
    )
    rec.close()
    records = [r for r in store.run(RUN).records() if r["kind"] != "process"]
    assert [r["kind"] for r in records] == ["crash", "resume", "intentional_exit", "process_info"]
    crash, resume, exit_, info = records
    # A crash keeps the pid of the process that died; a record without one gets its writer's.
    assert resume["pid"] == os.getpid()
    assert crash == {
        "kind": "crash",
        "pid": 4243,
        "test": "t.py::test_\u00e9",
        "worker": None,  # an option left out
        "signal": 11,
        "exit_code": -11,
        "phase": "call",
        "detail": "Segmentation fault",
        "wall_ns": wall_ns,
    }
    assert (resume["run"], resume["attempt"], resume["retry"]) == (
        "20261207-000000-abcdef",
        2,
        True,
    )
    assert (exit_["test"], exit_["phase"], exit_["code"]) == (None, "teardown", 0)
    assert (info["env"], info["memory_cgroup"]) == ({"CUDA_VISIBLE_DEVICES": "0"}, None)


def test_every_kind_a_session_writes_can_be_written_back(tmp_path: Path) -> None:
    """What `records()` gives, minus `kind` (and the reader's `pid`), writes the same record
    again: the fields are the record's own, by name (the two renames of JSON aside)."""
    store, rec = recorder(tmp_path)
    rec.run_start(["pytest"], "/r", "h")
    rec.start_test("t.py::test_a")
    rec.phase("t.py::test_a", "call", "passed", 0.5, {"k": [1, b"\x00"]})
    rec.fixture("db", "session", True, "t.py::test_a", 0.25)
    rec.timed("load", "t.py::test_a", 1.5)
    rec.end_test("t.py::test_a")
    rec.attachment("t.py::test_a", "faulthandler", "f.txt")
    rec.run_end(0)
    rec.close()
    first = store.run(RUN).records()
    for r in first:
        fields = {k: v for k, v in r.items() if k not in ("kind", "pid")}
        if r["kind"] == "attachment":
            fields["kind"] = fields.pop("attachment_kind")
        if r["kind"] in ("process", "run_start"):
            fields["pid"] = r["pid"]
        rec.write(r["kind"], fields)
    rec.close()
    again = store.run(RUN).records()[len(first) :]
    strip = [{k: v for k, v in r.items() if k != "pid"} for r in again]
    want = [{k: v for k, v in r.items() if k != "pid"} for r in first]
    # The new segment opens with its own process record, then the written ones.
    assert strip[1:] == want


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        ("run_ends", {}, r'record kind "run_ends": no such kind: use one of process, run_start'),
        (
            "run_end",
            {"exit_status": "x", "wall_ns": 1},
            r'record kind "run_end", field "exit_status": invalid type: string "x", expected i32',
        ),
        ("run_end", {"exit_status": 0}, r'record kind "run_end": missing field `wall_ns`'),
        (
            "run_end",
            {"exit_status": 0, "wall_ns": 1, "pid": 3},
            r'record kind "run_end": unknown field `pid`, expected',
        ),
        (
            "test_end",
            {"nodeid": "t", "mono_ns": -1},
            r'field "mono_ns": invalid value: integer `-1`, expected u64',
        ),
        (
            "intentional_exit",
            {"phase": "lunch", "code": 0, "wall_ns": 1},
            r'field "phase": unknown phase "lunch": use one of setup, call, teardown',
        ),
    ],
)
def test_a_wrong_kind_or_field_says_which(
    tmp_path: Path, kind: str, fields: dict[str, object], message: str
) -> None:
    _, rec = recorder(tmp_path)
    with pytest.raises(InvalidRecordError, match=re.escape(message)) as e:
        rec.write(kind, fields)
    assert isinstance(e.value, BlackboxError) and isinstance(e.value, ValueError)
    # Nothing was written.
    assert rec.segment_path is None
