"""Print runs of a store through the Python API: ``python summary.py STORE RUN_ID...``.

run.sh uses it when the ``blackbox`` CLI is not there; it is also what reading a run from
Python looks like."""

from __future__ import annotations

import sys

from pytest_blackbox import Store


def crash_site(traceback: str, nodeid: str) -> str | None:
    """The innermost frame of the crashing thread that is in the test's file."""
    test_file = nodeid.split("::", 1)[0]
    crashing = traceback.split("Current thread", 1)[-1]
    frames = [line.strip() for line in crashing.splitlines() if line.strip().startswith("File ")]
    return next((f for f in frames if test_file and test_file in f), None)


def main(store_dir: str, run_ids: list[str]) -> None:
    store = Store(store_dir)
    for run_id in run_ids or store.runs()[-1:]:
        run = store.run(run_id)
        workers = [w.id for w in run.workers if w.tests]
        print(
            f"run {run.id}: {len(run.tests)} tests in {len(workers)} process(es), "
            f"{len(run.crashes)} crashed, exit status {run.info.get('exit_status')}"
        )
        for t in sorted(run.tests, key=lambda t: t.nodeid):
            died = f"  {t.signal_name}" if t.crashed else ""
            ms = t.duration_s * 1000
            print(f"  {t.outcome:8} {ms:7.1f} ms  {t.worker or '':4} {t.nodeid}{died}")
        print("  slowest fixtures, summed over every process:")
        for f in run.fixtures[:5]:
            print(
                f"    {f.name:10} {f.scope:8} {f.setups:2}x  total {f.total_s * 1000:6.1f} ms"
                f"  max {f.max_s * 1000:5.1f} ms"
            )
        for t in run.timed[:3]:
            print(f"  @timed {t.name}: {t.setups}x, total {t.total_s * 1000:.1f} ms")
        for c in run.crashes:
            who = c.worker or f"pid {c.pid}"
            print(f"  CRASHED {c.nodeid} ({who}): {c.signal_name} in {c.phase}")
            print(f"    recorded before it died: {run.properties(c.nodeid or '')}")
            where = crash_site(c.traceback or "", c.nodeid or "")
            if where:
                print(f"    where (faulthandler): {where}")
        print()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
