"""Where the time of one ``pytest_blackbox.record`` call goes, layer by layer.

Each line times one call shape in the same process, interleaved over several rounds (the
median is kept), so the differences between lines are the cost of a layer:

- record() is the native function _native.record (the session lookup and the vectorcall
  convention); Recorder.record() is the method the plugin's record_property and the
  blackbox fixture call (PyO3's calling convention: a tuple, and a dict for keywords);
- record(dict) vs record(None): encoding a 4-entry dict straight from the objects (plain
  values take this fast path; anything else goes through the conversion to a Value);
- to_plain(dict): that conversion there and back, without a store;
- Recorder.timed(): a record of fixed shape with no Value: the floor of the native call,
  the lock, the encoding and the commit.

    python benches/python/profile_record.py [--n 100000]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt_time, median


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()

    import pytest_blackbox
    from pytest_blackbox import _native

    session = pytest_blackbox.start_run(tempfile.mkdtemp(prefix="bb-profile-"))
    rec = session.recorder
    record = pytest_blackbox.record
    nodeid = "tests/test_models.py::test_infer[resnet50-batch7]"
    value = {"i": 7, "pcc": 0.99, "passed": True, "model": "resnet50"}
    store: dict[Any, Any] = {}

    def dict_put(key: str, value: Any, *, test: str) -> None:
        store[test, key] = value

    shapes = {
        "record(key, dict, test=nodeid)": lambda: record("metric", value, test=nodeid),
        "record(key, None, test=nodeid)": lambda: record("metric", None, test=nodeid),
        "Recorder.record(key, dict, nodeid)": lambda: rec.record("metric", value, nodeid),
        "Recorder.record(key, None, nodeid)": lambda: rec.record("metric", None, nodeid),
        "Recorder.record(key, 1, nodeid)": lambda: rec.record("metric", 1, nodeid),
        "Recorder.timed(name, nodeid, 0.5)": lambda: rec.timed("metric", nodeid, 0.5),
        "to_plain(dict) (no store)": lambda: _native.to_plain(value),
        "to_plain(None) (no store)": lambda: _native.to_plain(None),
        "dict put (the floor)": lambda: dict_put("metric", value, test=nodeid),
        "empty lambda (loop + call)": lambda: None,
    }
    results: dict[str, list[float]] = {k: [] for k in shapes}
    gc.collect()
    gc.freeze()
    for _ in range(a.rounds):
        for name, fn in shapes.items():
            t0 = time.perf_counter_ns()
            for _ in range(a.n):
                fn()
            results[name].append((time.perf_counter_ns() - t0) / 1e9 / a.n)
    base = median(results["empty lambda (loop + call)"])
    print(f"{'call':40} {'median':>10} {'minus loop':>11}")
    for name, xs in results.items():
        m = median(xs)
        print(f"{name:40} {fmt_time(m):>10} {fmt_time(max(m - base, 0.0)):>11}")


if __name__ == "__main__":
    main()
