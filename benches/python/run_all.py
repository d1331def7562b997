"""The Python and end-to-end benchmarks of `make bench`: write path, read path, pytest runs.

Prints each table as it is measured and writes them to benches/results/python.txt, with
the raw figures in benches/results/python.json. About 5 minutes on 2 cores.

    .venv/bin/python benches/python/run_all.py [--quick] [--only write,read,e2e]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import e2e
import read_path
import write_path
from common import RESULTS, Report, machine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes: a smoke test")
    ap.add_argument("--only", default="write,read,e2e", help="comma-separated sections")
    a = ap.parse_args()
    only = set(a.only.split(","))
    out = Report()
    out("pytest-blackbox Python and end-to-end benchmarks (benches/python/run_all.py)")
    out(machine() + " at start")
    out("Ratios compare figures of this one run; absolute times depend on the machine's load.")
    out()
    raw: dict[str, object] = {}
    t0 = time.perf_counter()
    if "write" in only:
        raw["write"] = write_path.run(rounds=3, quick=a.quick, out=out)
        out()
    if "read" in only:
        per_writer = 12_500 if a.quick else 125_000
        raw["read"] = read_path.run(reps=3, per_writer=per_writer, out=out)
        out()
        raw["read_properties"] = read_path.run_properties(out=out)
        out()
    if "e2e" in only:
        raw["e2e"] = e2e.run(reps=1 if a.quick else 9, tests=1000 if a.quick else 5000, out=out)
        out()
    out(f"{machine()} at end; {time.perf_counter() - t0:.0f} s in all")
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if a.quick else ""
    (RESULTS / f"python{suffix}.txt").write_text(out.text())
    (RESULTS / f"python{suffix}.json").write_text(json.dumps(raw, indent=1, default=str))
    print(f"written: {RESULTS / f'python{suffix}.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
