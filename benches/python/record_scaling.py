"""Does ``record()`` / ``append()`` cost more the more a test has recorded?

A test of a real pytest session (plugin on, plain mode) times, with ``perf_counter_ns``:
N ``record(f"k{i}", i)`` of distinct keys, and N ``append("k", i)`` to one key, for N of
10,000 and 20,000 (each in a test of its own, so it starts from an empty
``user_properties``). A cost flat in what the test already holds makes the 20,000 run take
2x the 10,000 one; one that grows with it (a scan or a copy per call) takes 4x. Also timed:
the same through the ``blackbox`` fixture and through the stock ``record_property``.
Rounds alternate the sizes; the figure is the fastest round of each (the machine is shared:
load only ever adds time, and a cost that grows with the test's size shows in every round).

The read side too: ``blackbox stats --json`` of a run whose one test recorded N distinct keys,
for N of 20,000 and 40,000 (the aggregate folds each key into the test's properties: a
lookup by a scan of them made 40,000 take 8x 20,000).

    python benches/python/record_scaling.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, table

SIZES = (10_000, 20_000)
#: The bound of the must-show: 20,000 within this factor of 10,000.
LIMIT = 2.5
#: Keys of the one test of a run that ``blackbox stats`` reads.
READ_SIZES = (20_000, 40_000)
BLACKBOX = Path(PYTHON).with_name("blackbox")
INNER = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider"]

READ_TEST_FILE = """
import os
from pytest_blackbox import record

def test_keys():
    for i in range(int(os.environ["SCALING_KEYS"])):
        record(f"k{i}", i)
"""

TEST_FILE = """
import json, os, time
import pytest
from pytest_blackbox import append, record

OUT = os.environ["SCALING_OUT"]

def _save(name, n, ns):
    with open(OUT, "a") as f:
        f.write(json.dumps({"what": name, "n": n, "ns": ns}) + "\\n")

@pytest.mark.parametrize("n", SIZES)
def test_record_distinct_keys(n):
    t = time.perf_counter_ns()
    for i in range(n):
        record(f"k{i}", i)
    _save("record(), distinct keys", n, time.perf_counter_ns() - t)

@pytest.mark.parametrize("n", SIZES)
def test_append_one_key(n):
    t = time.perf_counter_ns()
    for i in range(n):
        append("k", i)
    _save("append(), one key", n, time.perf_counter_ns() - t)

@pytest.mark.parametrize("n", SIZES)
def test_fixture_record(n, blackbox):
    t = time.perf_counter_ns()
    for i in range(n):
        blackbox.record(f"k{i}", i)
    _save("blackbox.record(), distinct keys", n, time.perf_counter_ns() - t)

@pytest.mark.parametrize("n", SIZES)
def test_fixture_append(n, blackbox):
    t = time.perf_counter_ns()
    for i in range(n):
        blackbox.append("k", i)
    _save("blackbox.append(), one key", n, time.perf_counter_ns() - t)

@pytest.mark.parametrize("n", SIZES)
def test_record_property(n, record_property):
    t = time.perf_counter_ns()
    for i in range(n):
        record_property(f"k{i}", i)
    _save("record_property, distinct keys", n, time.perf_counter_ns() - t)
"""


def one_round(work: Path, order: tuple[int, ...]) -> list[dict]:
    out = work / "out.jsonl"
    out.unlink(missing_ok=True)
    (work / "test_scaling.py").write_text(TEST_FILE.replace("SIZES", repr(order)))
    env = {"SCALING_OUT": str(out), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_scaling.py"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        sys.exit(f"the inner session failed:\n{r.stdout}\n{r.stderr}")
    return [json.loads(line) for line in out.read_text().splitlines()]


def read_stores(work: Path) -> dict[int, Path]:
    """A store for each of READ_SIZES: one run of one test that recorded that many keys."""
    (work / "test_keys.py").write_text(READ_TEST_FILE)
    stores = {}
    for n in READ_SIZES:
        store = work / f"store-{n}"
        r = subprocess.run(
            [*INNER, "test_keys.py", "--blackbox-dir", str(store), "-o", "blackbox_history_keep=0"],
            cwd=work,
            env={"SCALING_KEYS": str(n), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            sys.exit(f"the inner session failed:\n{r.stdout}\n{r.stderr}")
        stores[n] = store
    return stores


def time_read(store: Path) -> int:
    t = time.perf_counter_ns()
    subprocess.run(
        [str(BLACKBOX), "stats", "--json", "--dir", str(store)],
        capture_output=True,
        check=True,
    )
    return time.perf_counter_ns() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    times: dict[tuple[str, int], list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="bbx-scaling-") as tmp:
        for r in range(args.rounds):
            order = SIZES if r % 2 == 0 else SIZES[::-1]
            for row in one_round(Path(tmp), order):
                times.setdefault((row["what"], row["n"]), []).append(row["ns"])
    whats = list(dict.fromkeys(w for w, _ in times))
    rows = []
    ok = True
    for what in whats:
        small, big = (min(times[what, n]) for n in SIZES)
        ratio = big / small
        bounded = what.startswith(("record()", "append()"))
        ok &= ratio <= LIMIT or not bounded
        rows.append(
            [
                what,
                f"{small / 1e6:.1f} ms",
                f"{big / 1e6:.1f} ms",
                f"x{ratio:.2f}",
                f"{big / SIZES[1]:.0f} ns",
            ]
        )
    print(
        table(
            ["calls in one test", f"{SIZES[0]:,}", f"{SIZES[1]:,}", "ratio", "per call"],
            rows,
        )
    )
    print(f"fastest of {args.rounds} rounds; bound: x{LIMIT} for record() and append()")
    reads: dict[int, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="bbx-scaling-") as tmp:
        stores = read_stores(Path(tmp))
        for r in range(args.rounds):
            for n in READ_SIZES if r % 2 == 0 else READ_SIZES[::-1]:
                reads.setdefault(n, []).append(time_read(stores[n]))
    small, big = (min(reads[n]) for n in READ_SIZES)
    print(
        table(
            ["keys of one test", f"{READ_SIZES[0]:,}", f"{READ_SIZES[1]:,}", "ratio"],
            [
                [
                    "`blackbox stats --json`",
                    f"{small / 1e6:.1f} ms",
                    f"{big / 1e6:.1f} ms",
                    f"x{big / small:.2f}",
                ]
            ],
        )
    )
    print(f"fastest of {args.rounds} rounds (a flat cost per key: x2)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
