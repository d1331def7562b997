"""Write path: ``pytest_blackbox.record`` against what a user would write instead.

Every backend stores the same records (a nodeid, a key and a small dict) through a function
called exactly like ``record(key, value, test=nodeid)``, in a fresh writer process of its
own. The writer times batches of calls, tells the parent through a pipe (its stdout) how
many calls have returned after every batch, and at the end SIGKILLs itself: no close, no
flush, no atexit. The parent then opens what is left and checks that every acknowledged
record is there with its value.

Rounds: every backend runs once per round, in a rotating order, so a change of the
machine's load between backends shows up as spread rather than as a ratio.

    python benches/python/write_path.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, Report, fmt_ratio, fmt_time, median, table, verdict

NODEIDS = [f"tests/test_models.py::test_infer[resnet50-batch{j}]" for j in range(500)]


def make_record(i: int) -> tuple[str, dict[str, Any], str]:
    """Record ``i``: (key, value, nodeid). A small dict, as a test would record."""
    value = {"i": i, "pcc": 0.99 + (i % 97) * 1e-5, "passed": True, "model": "resnet50"}
    return f"metric_{i}", value, NODEIDS[i % len(NODEIDS)]


# ---------------------------------------------------------------------------------------
# Backends: setup (in the writer) returns put(key, value, *, test); survivors (in the
# parent, after the writer died) returns {(nodeid, key): value} of what can be read back.
# ---------------------------------------------------------------------------------------


def setup_blackbox(d: Path) -> Callable[..., Any]:
    import pytest_blackbox

    pytest_blackbox.start_run(d)
    return pytest_blackbox.record


def setup_blackbox_native(d: Path) -> Callable[..., Any]:
    import pytest_blackbox

    # The Recorder method the plugin's record_property and blackbox fixture call. record()
    # itself is a native function (_native.record) that does not go through it.
    return pytest_blackbox.start_run(d).recorder.record


def survivors_blackbox(d: Path, acked: int) -> dict[tuple[str, str], Any]:
    import pytest_blackbox

    run = pytest_blackbox.Store(d).latest()
    found: dict[tuple[str, str], Any] = {}
    for nodeid in NODEIDS:
        for key, value in run.properties(nodeid).items():
            found[nodeid, key] = value
    return found


def setup_sqlite(d: Path) -> Callable[..., Any]:
    import sqlite3

    con = sqlite3.connect(d / "db.sqlite", isolation_level=None)  # autocommit
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: no fsync per commit
    con.execute("CREATE TABLE props (test TEXT, key TEXT, value TEXT, PRIMARY KEY (test, key))")
    sql = "INSERT OR REPLACE INTO props VALUES (?, ?, ?)"
    execute, dumps = con.execute, json.dumps

    def put(key: str, value: Any, *, test: str) -> None:
        execute(sql, (test, key, dumps(value)))

    return put


def survivors_sqlite(d: Path, acked: int) -> dict[tuple[str, str], Any]:
    import sqlite3

    con = sqlite3.connect(d / "db.sqlite")
    return {(t, k): json.loads(v) for t, k, v in con.execute("SELECT test, key, value FROM props")}


def setup_lmdb(d: Path) -> Callable[..., Any]:
    import lmdb

    env = lmdb.open(str(d / "lmdb"), map_size=1 << 30, sync=False, metasync=False)
    begin, dumps = env.begin, json.dumps

    def put(key: str, value: Any, *, test: str) -> None:
        with begin(write=True) as txn:
            txn.put(f"{test}\0{key}".encode(), dumps(value).encode())

    return put


def survivors_lmdb(d: Path, acked: int) -> dict[tuple[str, str], Any]:
    import lmdb

    env = lmdb.open(str(d / "lmdb"), map_size=1 << 30, readonly=True, lock=False)
    found = {}
    with env.begin() as txn:
        for k, v in txn.cursor():
            test, key = bytes(k).decode().split("\0")
            found[test, key] = json.loads(bytes(v))
    return found


def setup_diskcache(d: Path) -> Callable[..., Any]:
    import diskcache

    cache = diskcache.Cache(str(d / "cache"))
    set_ = cache.set

    def put(key: str, value: Any, *, test: str) -> None:
        set_((test, key), value)

    return put


def survivors_diskcache(d: Path, acked: int) -> dict[tuple[str, str], Any]:
    import diskcache

    cache = diskcache.Cache(str(d / "cache"))
    return {k: cache[k] for k in cache.iterkeys()}


def setup_jsonl(d: Path) -> Callable[..., Any]:
    fd = os.open(d / "records.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    write, dumps = os.write, json.dumps

    def put(key: str, value: Any, *, test: str) -> None:
        write(fd, (dumps({"test": test, "key": key, "value": value}) + "\n").encode())

    return put


def survivors_jsonl(d: Path, acked: int) -> dict[tuple[str, str], Any]:
    found = {}
    with open(d / "records.jsonl") as f:
        for line in f:
            r = json.loads(line)
            found[r["test"], r["key"]] = r["value"]
    return found


def setup_flock_json(d: Path) -> Callable[..., Any]:
    import fcntl

    path = d / "state.json"
    path.write_text("{}")

    def put(key: str, value: Any, *, test: str) -> None:
        # The usual cross-process dict: lock, read, change, rewrite (pytest-xdist's docs
        # suggest the same with filelock).
        with open(path, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            data = json.load(f)
            data.setdefault(test, {})[key] = value
            f.seek(0)
            f.truncate()
            json.dump(data, f)

    return put


def survivors_flock_json(d: Path, acked: int) -> dict[tuple[str, str], Any]:
    data = json.loads((d / "state.json").read_text())
    return {(t, k): v for t, props in data.items() for k, v in props.items()}


def setup_dict(d: Path) -> Callable[..., Any]:
    store: dict[tuple[str, str], Any] = {}

    def put(key: str, value: Any, *, test: str) -> None:
        store[test, key] = value

    return put


def survivors_dict(d: Path, acked: int) -> dict[tuple[str, str], Any]:
    return {}  # it lived in the writer's memory


# name: (label, setup, survivors, records per batch, batches per round)
BACKENDS: dict[str, tuple[str, Callable[..., Any], Callable[..., Any], int, int]] = {
    "blackbox": ("pytest_blackbox.record", setup_blackbox, survivors_blackbox, 20000, 5),
    "blackbox-native": (
        "  (the Recorder.record method)",
        setup_blackbox_native,
        survivors_blackbox,
        20000,
        5,
    ),
    "dict": ("in-memory dict (not crash-safe)", setup_dict, survivors_dict, 20000, 5),
    "jsonl": ("JSON lines, O_APPEND os.write", setup_jsonl, survivors_jsonl, 4000, 5),
    "lmdb": ("lmdb put+commit, sync off", setup_lmdb, survivors_lmdb, 4000, 5),
    "sqlite": ("sqlite3 WAL autocommit sync=NORMAL", setup_sqlite, survivors_sqlite, 1000, 5),
    "diskcache": ("diskcache Cache.set", setup_diskcache, survivors_diskcache, 200, 5),
    "flock-json": (
        "JSON file rewritten under flock",
        setup_flock_json,
        survivors_flock_json,
        40,
        5,
    ),
}


# ---------------------------------------------------------------------------------------
# The writer process
# ---------------------------------------------------------------------------------------


def child(name: str, d: Path, per_batch: int, batches: int) -> None:
    put = BACKENDS[name][1](d)
    recs = [make_record(i) for i in range(per_batch * batches)]
    # The records are the benchmark's, not the backend's: keep the cyclic GC off them.
    gc.collect()
    gc.freeze()
    clock = time.perf_counter_ns
    per_record = []
    done = 0
    for b in range(batches):
        chunk = recs[b * per_batch : (b + 1) * per_batch]
        t0 = clock()
        for key, value, test in chunk:
            put(key, value, test=test)
        t1 = clock()
        done += len(chunk)
        os.write(1, f"ack {done}\n".encode())  # every call before this has returned
        per_record.append((t1 - t0) / 1e9 / len(chunk))
    os.write(1, ("result " + json.dumps({"per_record": per_record}) + "\n").encode())
    os.kill(os.getpid(), signal.SIGKILL)


def run_writer(name: str, per_batch: int, batches: int) -> dict[str, Any]:
    d = Path(tempfile.mkdtemp(prefix=f"bb-write-{name}-"))
    try:
        cmd = [PYTHON, __file__, "--child", name, str(d), str(per_batch), str(batches)]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        acked, result = 0, None
        for line in p.stdout.splitlines():
            if line.startswith("ack "):
                acked = int(line[4:])
            elif line.startswith("result "):
                result = json.loads(line[7:])
        if p.returncode != -signal.SIGKILL or result is None:
            raise RuntimeError(f"writer {name} ended with {p.returncode}, not SIGKILL")
        found = BACKENDS[name][2](d, acked)
        survived = 0
        for i in range(acked):
            key, value, test = make_record(i)
            if found.get((test, key)) == value:
                survived += 1
        return {"per_record": result["per_record"], "acked": acked, "survived": survived}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run(rounds: int = 3, quick: bool = False, out: Report | None = None) -> dict[str, Any]:
    out = out or Report()
    names = list(BACKENDS)
    res: dict[str, dict[str, Any]] = {
        n: {"per_record": [], "acked": 0, "survived": 0, "batches": []} for n in names
    }
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            _, _, _, per_batch, batches = BACKENDS[name]
            if quick:
                per_batch = max(10, per_batch // 10)
            x = run_writer(name, per_batch, batches)
            res[name]["per_record"] += x["per_record"]
            res[name]["batches"].append(x["per_record"])
            res[name]["acked"] += x["acked"]
            res[name]["survived"] += x["survived"]
    bb = median(res["blackbox"]["per_record"])
    rows = []
    for name in names:
        label, _, _, per_batch, batches = BACKENDS[name]
        x = res[name]
        m = median(x["per_record"])
        x["median_s"] = m
        spread = f"{fmt_time(min(x['per_record']))} .. {fmt_time(max(x['per_record']))}"
        ratio = "" if name == "blackbox" else fmt_ratio(m / bb)
        rows.append(
            [
                label,
                fmt_time(m),
                spread,
                ratio,
                f"{x['survived']}/{x['acked']}",
                f"{len(x['per_record'])} x {per_batch if not quick else max(10, per_batch // 10)}",
            ]
        )
    out(
        "1. write path: one record (a nodeid, a key and a 4-entry dict) per call, "
        "one writer process per backend that SIGKILLs itself"
    )
    out(
        table(
            [
                "backend",
                "median/record",
                "batch range",
                "vs blackbox",
                "survived/acked",
                "batches x records",
            ],
            rows,
        )
    )
    flock = res["flock-json"]["batches"]
    if flock:
        firsts = [b[0] for b in flock]
        lasts = [b[-1] for b in flock]
        out(
            f"   JSON under flock grows with the file: first batch {fmt_time(median(firsts))}, "
            f"last batch {fmt_time(median(lasts))} per record"
        )
    d = median(res["dict"]["per_record"])
    lm = median(res["lmdb"]["per_record"])
    jl = median(res["jsonl"]["per_record"])
    t = res["blackbox"]
    targets = {
        "record median <= 1 µs": bb <= 1e-6,
        "lmdb / record >= 8x": lm / bb >= 8,
        "JSON lines / record >= 8x": jl / bb >= 8,
        "record / dict <= 3x": bb / d <= 3,
        "100% of acknowledged records survive": t["survived"] == t["acked"] > 0,
    }
    out(
        f"   record {fmt_time(bb)}; lmdb/record {fmt_ratio(lm / bb)}; JSON lines/record "
        f"{fmt_ratio(jl / bb)}; record/dict {fmt_ratio(bb / d)}"
    )
    for what, ok in targets.items():
        out(f"   target: {what}: {verdict(ok)}")
    for name in names:
        if name not in ("dict",) and res[name]["survived"] != res[name]["acked"]:
            out(f"   note: {name} lost {res[name]['acked'] - res[name]['survived']} acknowledged")
    return {"backends": res, "targets": targets}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=4, metavar=("NAME", "DIR", "PER_BATCH", "BATCHES"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a tenth of the records (smoke test)")
    a = ap.parse_args()
    if a.child:
        name, d, per_batch, batches = a.child
        child(name, Path(d), int(per_batch), int(batches))
        return
    run(a.rounds, a.quick)


if __name__ == "__main__":
    main()
