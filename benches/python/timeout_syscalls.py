"""System calls of a plain pytest run of N trivial tests, without and with the watchdog
(``--blackbox-timeout``), counted by ``strace -f -c`` over every thread of the process.

Arming and disarming the watchdog is atomic stores in ``Recorder::start_test`` /
``end_test``: no system call per test. What the watchdog adds is its thread's start and
its own wake-ups (one ``futex`` wait every 100 ms while it runs), whatever the number of
tests. Run: ``.venv/bin/python benches/python/timeout_syscalls.py [N]``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = """
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_quick(i):
    pass
"""


def counts(out: Path) -> dict[str, int]:
    """{syscall: calls} of an ``strace -c`` summary."""
    table: dict[str, int] = {}
    for line in out.read_text().splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if m and m.group(2) != "total":
            table[m.group(2)] = int(m.group(1))
    return table


def run(suite: Path, limit: float, threads: bool) -> tuple[dict[str, int], float]:
    """strace -c of one run: every thread (``-f``) or the tests' (main) thread only."""
    out = suite / f"strace-{limit}-{threads}.txt"
    t0 = time.monotonic()
    subprocess.run(
        [
            "strace", *(["-f"] if threads else []), "-c", "-o", str(out),
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            f"--blackbox-timeout={limit}", f"--blackbox-dir={suite / f'store-{limit}-{threads}'}",
            str(suite / "test_quick.py"),
        ],
        cwd=suite, check=True, capture_output=True,
    )  # fmt: skip
    return counts(out), time.monotonic() - t0


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    if shutil.which("strace") is None:
        sys.exit("strace is not installed (apt-get install strace)")
    with tempfile.TemporaryDirectory() as d:
        suite = Path(d)
        (suite / "test_quick.py").write_text(SUITE.format(n=n))
        for threads in (False, True):
            (off, t_off), (on, t_on) = run(suite, 0, threads), run(suite, 60, threads)
            report(n, "every thread (strace -f)" if threads else "the tests' thread", off, on,
                   t_off, t_on)  # fmt: skip


def report(
    n: int, what: str, off: dict[str, int], on: dict[str, int], t_off: float, t_on: float
) -> None:
    total_off, total_on = sum(off.values()), sum(on.values())
    print(
        f"{n} tests, {what}: {total_off} system calls without the watchdog ({t_off:.1f} s "
        f"under strace), {total_on} with it ({t_on:.1f} s); {total_on - total_off:+d}"
    )
    print(f"  {'syscall':<20}{'off':>10}{'on':>10}{'diff':>8}")
    for name in sorted(set(off) | set(on), key=lambda k: -abs(on.get(k, 0) - off.get(k, 0))):
        a, b = off.get(name, 0), on.get(name, 0)
        if a != b:
            print(f"  {name:<20}{a:>10}{b:>10}{b - a:>+8}")


if __name__ == "__main__":
    main()
