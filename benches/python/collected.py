"""The time of recording a collection of 100,000 nodeids (``Recorder.collected``, one
``Collected`` record set per run, docs/format.md), against a peer measured in the same run:
the same nodeids written as JSON lines to a file and flushed, what a plugin without a
store would do to keep them. The best of ``--reps`` runs of each, alternated.

Issue 14's target: at most 50 ms for 100k nodeids (the list is built by pytest anyway).
The size half of the target (at most 5% of a run) is checked by
tests/test_after_death.py, which is not timed. Run:
``.venv/bin/python benches/python/collected.py [--reps N] [--tests N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from pytest_blackbox import _native


def nodeids(n: int) -> list[str]:
    """docs/format.md's shape: 75-byte nodeids, 500 a module, 100 a class."""
    return [
        f"tests/unit/test_module_{i // 500:03d}.py::TestClass{i // 100 % 5}"
        f"::test_case[{i % 100}-float32]"
        for i in range(n)
    ]


def blackbox_once(tmp: Path, k: int, ids: list[str]) -> tuple[float, int]:
    run_dir = tmp / f"run{k}"
    run_dir.mkdir()
    rec = _native.Recorder(str(run_dir), "main")
    t0 = time.perf_counter()
    rec.collected(ids)
    took = time.perf_counter() - t0
    head = Path(rec.segment_path).read_bytes()[:4096]
    rec.close()
    return took, int.from_bytes(head[32:40], "little") - 4096


def json_lines_once(tmp: Path, k: int, ids: list[str]) -> tuple[float, int]:
    path = tmp / f"collected{k}.jsonl"
    t0 = time.perf_counter()
    with open(path, "w") as f:
        f.writelines(json.dumps(i) + "\n" for i in ids)
        f.flush()
    took = time.perf_counter() - t0
    return took, path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tests", type=int, default=100_000)
    args = ap.parse_args()
    ids = nodeids(args.tests)
    tmp = Path(tempfile.mkdtemp(prefix="bb-collected-"))
    try:
        bb, peer = [], []
        for k in range(args.reps):
            bb.append(blackbox_once(tmp, k, ids))
            peer.append(json_lines_once(tmp, k, ids))
        best_bb, size_bb = min(bb)
        best_peer, size_peer = min(peer)
        print(
            f"{args.tests:,} nodeids ({sum(map(len, ids)) / 1e6:.1f} MB of text), best of "
            f"{args.reps} on {os.cpu_count()} cores:\n"
            f"  Recorder.collected: {best_bb * 1e3:.1f} ms, {size_bb:,} bytes\n"
            f"  JSON lines, written and flushed: {best_peer * 1e3:.1f} ms, {size_peer:,} bytes\n"
            f"  ratio: {best_peer / best_bb:.2f}x the time, {size_peer / size_bb:.1f}x the bytes; "
            f"target <= 50 ms: {'met' if best_bb <= 0.050 else 'NOT met'}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
