"""Read path: the aggregate of a finished run of 8 writers x 125,000 records.

The run is written by 8 processes at once, each an xdist-like worker recording 15,625 tests
of 8 records (test start, fixture setup, setup/call/teardown phase reports, a property, a
fixture teardown, test end) through the same native Recorder the plugin uses. The very same
records (read back with ``Run.records()``) then go into sqlite3 (one table) and lmdb (one
key per record, the record as JSON), and each reader builds the run's aggregate: per test
its outcome, duration, phases and properties; per fixture setups, total, mean and max.

- blackbox, Python: ``pytest_blackbox.Store(dir).latest()`` (a Run: the view kept native,
  its summary as dicts and dataclasses; its ``tests`` are made on first access, each with
  the fields it left out filled on first use), the same with ``.tests`` accessed, and
  ``_native.RunReader(run_dir).view()`` alone (the whole view as dicts);
- blackbox, CLI: ``target/release/blackbox stats --json --dir DIR`` (a process: start-up,
  read, aggregate and the JSON text on a pipe);
- sqlite3: GROUP BY over the one table (tests, fixtures, workers), rows fetched to Python;
- lmdb: a full cursor scan, json.loads of each record and the aggregate in Python dicts.

Readers alternate, each run several times on warm page caches; medians are reported.

Then (2b) a run of 20,000 tests that each recorded one property: every test's properties
from Python (``Store(dir).latest()``, its ``tests``, ``properties(nodeid)`` of each) against
the same properties as JSON lines, ``json.loads`` of each line into a dict per test, and
the same lines in lmdb (one key a line), a cursor scan and ``json.loads`` of each value;
with each reader's CPU time (``time.process_time``: less moved by other processes' load
than wall time) and the CPU time its reads spent in the cyclic GC (``gc.callbacks``).

    python benches/python/read_path.py [--reps N] [--records-per-writer N] [--properties-only]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, REPO, Report, fmt_ratio, fmt_time, median, table

WRITERS = 8
RECORDS_PER_TEST = 8
CLI = REPO / "target" / "release" / "blackbox"


def writer(run_dir: str, k: int, records: int) -> None:
    """One worker's records: ``records // 8`` tests of 8 records."""
    from pytest_blackbox import _native

    rec = _native.Recorder(run_dir, "worker", f"gw{k}")
    for t in range(records // RECORDS_PER_TEST):
        nodeid = f"tests/test_mod{k}_{t // 100:03d}.py::test_case[{t % 100}]"
        failed = t % 97 == 0
        rec.start_test(nodeid)
        rec.fixture("db" if t % 2 else "tmp_model", "function", True, nodeid, 1e-4 * (t % 7))
        rec.phase(nodeid, "setup", "passed", 2e-4, None)
        rec.phase(nodeid, "call", "failed" if failed else "passed", 1e-3 * (t % 11), None)
        rec.record("pcc", {"value": 0.99 - (t % 13) * 1e-3, "ok": not failed}, nodeid)
        rec.fixture("db" if t % 2 else "tmp_model", "function", False, nodeid, 5e-5)
        rec.phase(nodeid, "teardown", "passed", 1e-4, None)
        rec.end_test(nodeid)
    rec.close()


def build_store(store: Path, per_writer: int) -> Path:
    import pytest_blackbox

    session = pytest_blackbox.start_run(store)
    session.recorder.run_start(["pytest", "-n", str(WRITERS)], str(store), "bench")
    procs = [
        subprocess.Popen(
            [PYTHON, __file__, "--writer", str(session.run_dir), str(k), str(per_writer)]
        )
        for k in range(WRITERS)
    ]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"writer exited with {p.returncode}")
    session.recorder.run_end(0)
    pytest_blackbox.stop_run(session)
    return session.run_dir


COLUMNS = "seg, kind, test, name, scope, setup, phase, outcome, duration_s, key, value"


def rows_of(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    rows = []
    for r in records:
        value = r.get("value")
        rows.append(
            (
                r["pid"],
                r["kind"],
                r.get("test", r.get("nodeid")),
                r.get("name"),
                r.get("scope"),
                r.get("setup"),
                r.get("phase"),
                r.get("outcome"),
                r.get("duration_s"),
                r.get("key"),
                None if value is None else json.dumps(value),
            )
        )
    return rows


def build_sqlite(path: Path, records: list[dict[str, Any]]) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(
        "CREATE TABLE records (seg INTEGER, kind TEXT, test TEXT, name TEXT, scope TEXT, "
        "setup INTEGER, phase TEXT, outcome TEXT, duration_s REAL, key TEXT, value TEXT)"
    )
    with con:
        con.executemany(
            f"INSERT INTO records ({COLUMNS}) VALUES ({', '.join('?' * 11)})", rows_of(records)
        )
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def build_lmdb(path: Path, records: list[dict[str, Any]]) -> None:
    import lmdb

    env = lmdb.open(str(path), map_size=4 << 30, sync=False, metasync=False)
    with env.begin(write=True) as txn:
        for i, r in enumerate(records):
            txn.put(i.to_bytes(8, "big"), json.dumps(r).encode())
    env.sync(True)
    env.close()


# ---------------------------------------------------------------------------------------
# Readers return what they built; count() then checks, outside the timing, that all agree
# on the number of tests and fixture setups. What a reader built is freed outside the
# timing too.
# ---------------------------------------------------------------------------------------


def read_blackbox_store(store: Path) -> Any:
    import pytest_blackbox

    return pytest_blackbox.Store(store).latest()


def read_blackbox_store_tests(store: Path) -> Any:
    import pytest_blackbox

    run = pytest_blackbox.Store(store).latest()
    _ = run.tests  # built on first access: here, inside the timing
    return run


def read_blackbox_view(run_dir: Path) -> Any:
    from pytest_blackbox import _native

    return _native.RunReader(str(run_dir)).view()


def read_blackbox_cli(store: Path) -> Any:
    cmd = [str(CLI), "stats", "--json", "--dir", str(store)]
    return subprocess.run(cmd, stdout=subprocess.PIPE, check=True).stdout


def count(built: Any) -> tuple[int, int]:
    if isinstance(built, bytes):  # the CLI's JSON
        built = json.loads(built)
    if isinstance(built, dict):  # a view
        return len(built["tests"]), sum(f["setups"] for f in built["fixtures"])
    if isinstance(built, tuple):  # sqlite3 and lmdb: (tests, fixture setups by fixture)
        return len(built[0]), sum(built[1])
    return len(built.tests), sum(f.setups for f in built.fixtures)  # a Run


SQL_TESTS = """
SELECT test,
       max(CASE outcome WHEN 'failed' THEN 3 WHEN 'skipped' THEN 1 WHEN 'passed' THEN 0 END)
           FILTER (WHERE kind = 'test_phase'),
       sum(duration_s) FILTER (WHERE kind = 'test_phase'),
       group_concat(phase || ':' || outcome || ':' || duration_s)
           FILTER (WHERE kind = 'test_phase'),
       json_group_object(key, json(value)) FILTER (WHERE kind = 'property_set'),
       max(seg)
FROM records WHERE test IS NOT NULL AND kind IN ('test_phase', 'property_set')
GROUP BY test
"""
SQL_FIXTURES = """
SELECT name, scope, count(*) FILTER (WHERE setup), sum(duration_s) FILTER (WHERE setup),
       avg(duration_s) FILTER (WHERE setup), max(duration_s) FILTER (WHERE setup),
       sum(duration_s) FILTER (WHERE NOT setup)
FROM records WHERE kind = 'fixture' GROUP BY name, scope ORDER BY 4 DESC
"""
SQL_WORKERS = "SELECT seg, count(DISTINCT test) FROM records WHERE kind = 'test_start' GROUP BY seg"


def read_sqlite(path: Path) -> Any:
    con = sqlite3.connect(path)
    tests = con.execute(SQL_TESTS).fetchall()
    tests = [(t, o, d, p.split(","), json.loads(props), w) for t, o, d, p, props, w in tests]
    fixtures = con.execute(SQL_FIXTURES).fetchall()
    workers = con.execute(SQL_WORKERS).fetchall()
    con.close()
    return tests, [f[2] for f in fixtures], workers


def read_lmdb(path: Path) -> Any:
    import lmdb

    env = lmdb.open(str(path), readonly=True, lock=False)
    tests: dict[str, dict[str, Any]] = {}
    fixtures: dict[tuple[str, str], list[float]] = {}
    loads = json.loads
    with env.begin(buffers=True) as txn:
        for _, v in txn.cursor():
            r = loads(bytes(v))
            kind = r["kind"]
            if kind == "test_phase":
                t = tests.setdefault(r["nodeid"], {"phases": [], "properties": {}})
                t["phases"].append((r["phase"], r["outcome"], r["duration_s"]))
            elif kind == "property_set":
                t = tests.setdefault(r["test"], {"phases": [], "properties": {}})
                t["properties"][r["key"]] = r["value"]
            elif kind == "fixture":
                f = fixtures.setdefault((r["name"], r["scope"]), [0, 0.0, 0.0, 0.0])
                if r["setup"]:
                    f[0] += 1
                    f[1] += r["duration_s"]
                    f[2] = max(f[2], r["duration_s"])
                else:
                    f[3] += r["duration_s"]
    env.close()
    for t in tests.values():
        ph = t["phases"]
        t["duration_s"] = sum(p[2] for p in ph)
        t["outcome"] = "failed" if any(p[1] == "failed" for p in ph) else "passed"
    return tests, [int(f[0]) for f in fixtures.values()], fixtures


def run(reps: int = 3, per_writer: int = 125_000, out: Report | None = None) -> dict[str, Any]:
    out = out or Report()
    tmp = Path(tempfile.mkdtemp(prefix="bb-read-"))
    try:
        t0 = time.perf_counter()
        store = tmp / "store"
        run_dir = build_store(store, per_writer)
        built_bb = time.perf_counter() - t0
        from pytest_blackbox import _native

        records = _native.read_records(str(run_dir))
        t1 = time.perf_counter()
        build_sqlite(tmp / "records.sqlite", records)
        build_lmdb(tmp / "lmdb", records)
        built_peers = time.perf_counter() - t1
        n_records = len(records)
        del records
        seg_bytes = sum(f.stat().st_size for f in run_dir.iterdir() if f.suffix != ".txt")
        readers: dict[str, Any] = {
            "blackbox: Store(dir).latest()": lambda: read_blackbox_store(store),
            "  then .tests (a TestInfo per test)": lambda: read_blackbox_store_tests(store),
            "  its RunReader(run).view() alone": lambda: read_blackbox_view(run_dir),
            "blackbox stats --json (CLI)": (lambda: read_blackbox_cli(store))
            if CLI.exists()
            else None,
            "sqlite3: GROUP BY, fetchall": lambda: read_sqlite(tmp / "records.sqlite"),
            "lmdb: full scan + json.loads": lambda: read_lmdb(tmp / "lmdb"),
        }
        times: dict[str, list[float]] = {k: [] for k in readers}
        answers: dict[str, tuple[int, int]] = {}
        for _ in range(reps):
            for name, fn in readers.items():
                if fn is None:
                    continue
                t = time.perf_counter()
                built = fn()
                times[name].append(time.perf_counter() - t)
                answers[name] = count(built)
                del built
        base = median(times["blackbox: Store(dir).latest()"])
        rows = []
        for name, fn in readers.items():
            if fn is None:
                rows.append([name, "CLI not built", "", "", ""])
                continue
            m = median(times[name])
            tests, setups = answers[name]
            rows.append(
                [
                    name,
                    fmt_time(m),
                    f"{fmt_time(min(times[name]))} .. {fmt_time(max(times[name]))}",
                    fmt_ratio(m / base),
                    f"{tests:,} / {setups:,}",
                ]
            )
        out(
            f"2. read path: the aggregate of a run of {WRITERS} writers x {per_writer:,} "
            f"records ({n_records:,} records incl. run start/end, {seg_bytes / 2**20:.1f} MiB "
            f"of segments; written in {built_bb:.1f} s, copied to sqlite3 and lmdb in "
            f"{built_peers:.1f} s)"
        )
        out(
            table(
                ["reader", "median", "range", "vs Store.latest()", "tests / fixture setups"],
                rows,
            )
        )
        agree = len(set(answers.values())) == 1
        out(f"   every reader found the same tests and fixture setups: {agree}")
        return {
            "records": n_records,
            "segment_bytes": seg_bytes,
            "times": times,
            "answers": {k: list(v) for k, v in answers.items()},
            "cli_built": CLI.exists(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


PROPERTY_TESTS = 20_000


def build_property_run(store: Path, jsonl: Path, n: int) -> None:
    """A run of ``n`` tests that each recorded one property, and the same properties as a
    JSON-lines file (one ``{"test", "key", "value"}`` object a line, as a hand-made
    cross-process store writes them)."""
    import pytest_blackbox

    session = pytest_blackbox.start_run(store)
    session.recorder.run_start(["pytest"], str(store), "bench")
    with open(jsonl, "w") as f:
        for i in range(n):
            nodeid = f"tests/test_mod_{i // 100:03d}.py::test_case[{i % 100}]"
            value = {"value": 0.99 - (i % 13) * 1e-3, "ok": i % 97 != 0}
            session.recorder.record("pcc", value, nodeid)
            f.write(json.dumps({"test": nodeid, "key": "pcc", "value": value}) + "\n")
    session.recorder.run_end(0)
    pytest_blackbox.stop_run(session)


def build_property_lmdb(path: Path, jsonl: Path) -> None:
    """The JSON lines into lmdb: one key per line (its number), the line as its value."""
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 30, sync=False, metasync=False)
    with env.begin(write=True) as txn, open(jsonl, "rb") as f:
        for i, line in enumerate(f):
            txn.put(i.to_bytes(8, "big"), line.rstrip(b"\n"))
    env.sync(True)
    env.close()


def read_properties_blackbox(store: Path) -> dict[str, dict[str, Any]]:
    import pytest_blackbox

    run = pytest_blackbox.Store(store).latest()
    return {t.nodeid: run.properties(t.nodeid) for t in run.tests}


def read_properties_jsonl(path: Path) -> dict[str, dict[str, Any]]:
    loads = json.loads
    out: dict[str, dict[str, Any]] = {}
    with open(path) as f:
        for line in f:
            r = loads(line)
            out.setdefault(r["test"], {})[r["key"]] = r["value"]
    return out


def read_properties_lmdb(path: Path) -> dict[str, dict[str, Any]]:
    import lmdb

    loads = json.loads
    out: dict[str, dict[str, Any]] = {}
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin(buffers=True) as txn:
        for _, v in txn.cursor():
            r = loads(bytes(v))
            out.setdefault(r["test"], {})[r["key"]] = r["value"]
    env.close()
    return out


def run_properties(
    reps: int = 9, n: int = PROPERTY_TESTS, out: Report | None = None
) -> dict[str, Any]:
    """2b: every test's properties of a run, from Python, against a JSON-lines scan."""
    out = out or Report()
    tmp = Path(tempfile.mkdtemp(prefix="bb-props-"))
    try:
        build_property_run(tmp / "store", tmp / "props.jsonl", n)
        build_property_lmdb(tmp / "props.lmdb", tmp / "props.jsonl")
        readers = {
            "blackbox: Store(dir).latest(), .tests, .properties(t) each": lambda: (
                read_properties_blackbox(tmp / "store")
            ),
            "JSON lines: json.loads of each line, a dict per test": lambda: read_properties_jsonl(
                tmp / "props.jsonl"
            ),
            "lmdb: a cursor scan, json.loads of each value, a dict per test": lambda: (
                read_properties_lmdb(tmp / "props.lmdb")
            ),
        }
        times: dict[str, list[float]] = {k: [] for k in readers}
        cpu: dict[str, list[float]] = {k: [] for k in readers}
        in_gc: dict[str, list[float]] = {k: [] for k in readers}
        gc_clock = [0.0, 0.0]  # CPU time in the cyclic GC, when the running collection started

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_clock[1] = time.process_time()
            else:
                gc_clock[0] += time.process_time() - gc_clock[1]

        answers = {}
        gc.callbacks.append(on_gc)
        for _ in range(reps):
            for name, fn in readers.items():
                gc_clock[0] = 0.0
                c = time.process_time()
                t = time.perf_counter()
                got = fn()
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
                in_gc[name].append(gc_clock[0])
                answers[name] = got
                del got
        gc.callbacks.remove(on_gc)
        json_name = "JSON lines: json.loads of each line, a dict per test"
        base, base_cpu = median(times[json_name]), median(cpu[json_name])
        rows = [
            [
                name,
                fmt_time(median(ts)),
                f"{fmt_time(min(ts))} .. {fmt_time(max(ts))}",
                fmt_ratio(median(ts) / base),
                f"{fmt_time(median(cpu[name]))} ({fmt_ratio(median(cpu[name]) / base_cpu)})",
                fmt_time(median(in_gc[name])),
            ]
            for name, ts in times.items()
        ]
        out(f"2b. every test's properties of a run of {n:,} tests with one property each")
        out(
            table(
                ["reader", "median", "range", "vs JSON lines", "CPU (vs JSON)", "CPU in the GC"],
                rows,
            )
        )
        same = len({json.dumps(a, sort_keys=True) for a in answers.values()}) == 1
        out(f"   every reader found the same properties: {same}")
        return {"tests": n, "times": times, "cpu": cpu, "in_gc": in_gc, "same": same}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writer", nargs=3, metavar=("RUN_DIR", "K", "RECORDS"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--records-per-writer", type=int, default=125_000)
    ap.add_argument(
        "--properties-only", action="store_true", help="only 2b (20,000 tests' properties)"
    )
    a = ap.parse_args()
    if a.writer:
        run_dir, k, n = a.writer
        writer(run_dir, int(k), int(n))
        return
    os.environ.pop("BLACKBOX_DIR", None)
    if a.properties_only:
        run_properties()
        return
    run(a.reps, a.records_per_writer)
    run_properties()


if __name__ == "__main__":
    main()
