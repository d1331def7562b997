"""End-to-end: what the plugin costs a real pytest run.

A generated suite of 5,000 quick tests (50 files of 100), each using 3 fixtures (a plain
one, one that depends on it, and a yield fixture), runs with the plugin on (its default
settings, a store of its own) and off (``-p no:blackbox``): plain, ``-n 2``, and
``--forked`` (500 tests). Each configuration first runs once on and once off untimed (warm
caches; the store then holds a previous run, as it does for a user, and the plugin reads
it at start-up), then 9 timed pairs (3 for --forked) in alternating order. Wall time is
the target; the CPU time of the process tree is shown beside it, as it suffers less from
a loaded machine.

Wall time is measured around the pytest process. Peak RSS of the controller (the pytest
process the user started) is its own VmHWM from /proc/self/status, written at exit by a tiny
plugin (``-p bench_rss``) loaded in both modes; each xdist worker writes its own too.

Last, plain and ``-n 2`` run once off, once on and once with empty hooks of blackbox's
shape (``-p bench_hooks_floor``, plugin off: the floor pluggy's dispatch sets) under
callgrind (every process and thread): an instruction count, which the machine's load does
not move (about 15 minutes on 2 cores; ``--no-instructions`` skips it).

    python benches/python/e2e.py [--reps N] [--tests N] [--only 'plain,-n 2'] [--no-instructions]
        [--instructions-only] [--baseline DIR]

``--instructions-only`` skips the timed runs; ``--baseline DIR`` also counts, in the same
callgrind round and on the same store, the plugin of another build: DIR holds a copy of its
``pytest_blackbox`` package (with its ``_native`` module), put first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, Report, median, table, verdict

CONFTEST = """
import pytest


@pytest.fixture
def base():
    return 1


@pytest.fixture
def derived(base):
    return base + 1


@pytest.fixture
def resource():
    yield 3
"""

TEST_FILE_HEAD = """
def check(a, b, c):
    assert a + b + c == 6
"""

TEST_FUNC = """

def test_{i}(base, derived, resource):
    check(base, derived, resource)
"""

RSS_PLUGIN = '''
"""Writes the peak RSS (VmHWM, KiB) of the controller at exit and of each xdist worker at
its unconfigure into $BENCH_RSS_DIR/<role>-<pid>. VmHWM belongs to this program's own
memory map; getrusage's ru_maxrss would also carry the high-water mark of the process that
forked us, across execve."""
import atexit
import os

_PID = os.getpid()


def _write(role):
    d = os.environ.get("BENCH_RSS_DIR")
    if not d or os.getpid() != _PID:
        return
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    with open(os.path.join(d, f"{role}-{os.getpid()}"), "w") as f:
        f.write(str(kib))


def pytest_unconfigure(config):
    if hasattr(config, "workerinput"):
        _write("worker")


if not os.environ.get("PYTEST_XDIST_WORKER"):
    atexit.register(_write, "controller")
'''


#: The floor of any plugin hooked in where blackbox records: empty hook implementations of
#: the same shape as ``_TestRecording``'s (pytest_runtest_setup; the makereport and
#: fixture-setup wrappers), loaded with the plugin off. What pluggy's dispatch of those
#: public hooks costs by itself, measured beside off and on in the instruction count.
HOOKS_FLOOR_PLUGIN = """
import pytest


class _SameShape:
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        pass

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        return report

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_fixture_setup(self, fixturedef, request):
        try:
            return (yield)
        finally:
            pass


def pytest_configure(config):
    config.pluginmanager.register(_SameShape(), "bench-hooks-floor")
"""


def generate(root: Path, files: int, per_file: int) -> Path:
    root.mkdir(parents=True)
    (root / "conftest.py").write_text(CONFTEST)
    for f in range(files):
        body = TEST_FILE_HEAD + "".join(TEST_FUNC.format(i=i) for i in range(per_file))
        (root / f"test_gen_{f:03d}.py").write_text(body)
    return root


def run_measured(
    cmd_suite: Path, args: list[str], on: bool, store: Path, tmp: Path, ok: tuple[int, ...]
) -> Any:
    """One pytest process: its wall time, the controller's and the workers' peak RSS."""
    rss_dir = tmp / "rss"
    shutil.rmtree(rss_dir, ignore_errors=True)
    rss_dir.mkdir()
    cmd = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "bench_rss"]
    cmd += ["--blackbox-dir", str(store)] if on else ["-p", "no:blackbox"]
    cmd += [*args, str(cmd_suite)]
    path = os.pathsep.join(p for p in (str(tmp / "plugins"), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, BENCH_RSS_DIR=str(rss_dir))
    _user_env(env)
    out_path = tmp / "out.txt"
    t0 = time.perf_counter()
    with open(out_path, "w") as out:
        pid = os.posix_spawn(cmd[0], cmd, env, file_actions=_redirect(out.fileno()))
        _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    text = out_path.read_text()

    def rss(role: str) -> int | None:
        found = [int(f.read_text()) for f in rss_dir.glob(f"{role}-*")]
        return max(found) if found else None

    code = os.waitstatus_to_exitcode(status)
    if code not in ok:
        raise RuntimeError(f"{' '.join(cmd)} exited with {code}:\n{text[-3000:]}")
    return {
        "wall_s": wall,
        # CPU of pytest and the children it reaped (xdist workers, forked children).
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_kib": rss("controller"),
        "worker_rss_kib": rss("worker"),
        "tail": text.strip().splitlines()[-1],
    }


def _user_env(env: dict[str, str]) -> None:
    """The environment of a user's pytest run. Without PYTHONDONTWRITEBYTECODE (set on
    this machine, and in many containers): pytest compiles every plugin module with its
    assertion rewriting and caches the result in __pycache__ only where bytecode may be
    written; the untimed first runs write it, as a user's first run does. With it set, each
    run would parse and compile pytest_blackbox (about 30 ms), xdist and pytest-forked
    again."""
    for name in ("BLACKBOX_DIR", "PYTEST_ADDOPTS", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)


def _redirect(fd: int) -> list[tuple[Any, ...]]:
    return [
        (os.POSIX_SPAWN_DUP2, fd, 1),
        (os.POSIX_SPAWN_DUP2, fd, 2),
    ]


# name, arguments, suite, exit codes accepted with the plugin off. pytest-forked 1.7.5 on
# pytest 9.2 reports every test as "EXITED with status 3" (its marshal cannot serialize the
# reports): off, --forked ends with failures; the plugin on gives pytest the true reports.
CONFIGS = [
    ("plain", [], "big", (0,)),
    ("-n 2", ["-n", "2"], "big", (0,)),
    ("--forked", ["--forked"], "small", (0, 1)),
]


def count_instructions(
    tmp: Path,
    suite: Path,
    tests: int,
    name: str,
    args: list[str],
    out: Report,
    baseline: str | None = None,
) -> dict[str, int]:
    """pytest on the whole suite under callgrind, off and on (the two at once), every
    process of the run counted (xdist workers too) and each thread apart: instructions do
    not depend on the machine's load, so this overhead is steady where wall time is not.
    Same hash seed in both, each on a fresh copy of one store holding a previous run (as in
    the timed runs). The pytest process's main thread is shown on its own (in a plain run
    the tests run there), and so is the plugin's follow thread (it reads the run on another
    core, polling by wall time, which valgrind stretches)."""
    template = tmp / f"store-instructions-{name.strip('-').replace(' ', '')}"
    run_measured(suite, args, True, template, tmp, (0,))  # the previous run it reads
    env = dict(os.environ)
    _user_env(env)
    env["PYTHONHASHSEED"] = "0"
    plugins = tmp / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "bench_hooks_floor.py").write_text(HOOKS_FLOOR_PLUGIN)
    # In every mode, so that the three import the same paths.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugins), env.get("PYTHONPATH")) if p)
    if baseline:
        # The template run above imported (so byte-compiled) this build's package only: a
        # fresh copy of the baseline would pay the compilation of every module in its count
        # (the first --baseline round counted the baseline about 290 M high).
        subprocess.run([PYTHON, "-m", "compileall", "-q", baseline], check=True)
    procs = {}
    errors: dict[str, str] = {}
    modes = ("off", "floor", "on") + (("baseline",) if baseline else ())
    for mode in modes:
        store = template.with_name(f"{template.name}-{mode}")
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(template, store)
        cg_dir = tmp / f"callgrind-{template.name}-{mode}"
        shutil.rmtree(cg_dir, ignore_errors=True)
        cg_dir.mkdir()
        cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes", "--trace-children=yes"]
        cmd += [f"--callgrind-out-file={cg_dir}/cg.%p", PYTHON, "-m", "pytest", "-q"]
        cmd += ["-p", "no:cacheprovider", *args]
        if mode in ("on", "baseline"):
            cmd += ["--blackbox-dir", str(store)]
        else:
            cmd += ["-p", "no:blackbox"] + (["-p", "bench_hooks_floor"] if mode == "floor" else [])
        mode_env = env
        if mode == "baseline" and baseline:
            mode_env = dict(env, PYTHONPATH=os.pathsep.join((baseline, env["PYTHONPATH"])))
        p = subprocess.Popen(
            [*cmd, str(suite)],
            cwd=tmp,
            env=mode_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs[mode] = (p, cg_dir)
        if "-n" in args:
            # Three xdist runs under valgrind at once starve their workers on 2 cores, and
            # xdist's shutdown then kills a worker before valgrind writes its counts.
            errors[mode] = p.communicate()[1]
    for mode, (p, _) in procs.items():  # wait for all
        if mode not in errors:
            errors[mode] = p.communicate()[1]
    counts: dict[str, int] = {}
    for mode, (p, cg_dir) in procs.items():
        main = follow = total = 0
        bad = []
        python_pids = set()
        # One file per process and thread: cg.<pid>-<thread>. valgrind runs pytest as the
        # process it started; its main thread is -01, and the plugin's follow thread, the
        # first it starts (at configure, before xdist's execnet threads), is -02.
        for f in sorted(cg_dir.glob("cg.*-*")):
            text = f.read_text(errors="replace")
            found = re.search(r"^totals: (\d+)", text, re.M)
            if not found:
                bad.append(f.name)
                continue
            n = int(found.group(1))
            pid, thread = f.name.split("-")
            if thread == "01" and "python" in text[:2000]:  # its header names the command
                python_pids.add(pid)
            if f.name == f"cg.{p.pid}-01":
                main = n
            elif mode in ("on", "baseline") and f.name == f"cg.{p.pid}-02":
                follow = n
                continue
            total += n
        want = 3 if "-n" in args else 1
        if p.returncode != 0 or not main or bad or len(python_pids) < want:
            out(
                f"   instructions ({name}): callgrind run failed (exit {p.returncode}, "
                f"{len(python_pids)} of {want} pytest processes counted, no totals in "
                f"{bad or 'none'}): {errors[mode][-500:]}"
            )
            return {}
        counts[mode], counts[f"{mode}_main_thread"] = total, main
        counts[f"{mode}_follow_thread"] = follow
    every = (counts["on"] / counts["off"] - 1) * 100
    main = (counts["on_main_thread"] / counts["off_main_thread"] - 1) * 100
    floor = (counts["floor"] / counts["off"] - 1) * 100
    out(
        f"   instructions (callgrind, {name}, {tests:,} tests, one run each), every process "
        f"and thread but the follow thread: off {counts['off'] / 1e9:.3f} G, on "
        f"{counts['on'] / 1e9:.3f} G: {every:+.1f}%; the pytest process's main thread alone "
        f"{main:+.1f}%; the follow thread {counts['on_follow_thread'] / 1e6:.0f} M (it polls "
        "every 0.2 s of wall time, which valgrind stretches, so its count is not steady). "
        "Steady on a loaded machine, but the target is wall time"
    )
    out(
        f"   of which pluggy's dispatch of the hooks blackbox uses (empty implementations of "
        f"the same shape, plugin off: {counts['floor'] / 1e9:.3f} G): {floor:+.1f}%; "
        f"blackbox's own work beyond it {(counts['on'] / counts['floor'] - 1) * 100:+.1f}% "
        f"({(counts['on'] - counts['floor']) / tests / 1e3:.0f} k instructions a test)"
    )
    if baseline:
        was = (counts["baseline"] / counts["off"] - 1) * 100
        out(
            f"   the baseline build ({baseline}), same round: on {counts['baseline'] / 1e9:.3f} G: "
            f"{was:+.1f}%; this build {(counts['on'] - counts['baseline']) / 1e6:+.0f} M against it"
        )
    return counts


def run(
    reps: int = 9,
    tests: int = 5000,
    out: Report | None = None,
    only: str = "",
    instructions: bool = True,
    timed: bool = True,
    baseline: str | None = None,
) -> dict[str, Any]:
    """``reps`` timed pairs for plain and -n 2; --forked (slower per test) gets 3.
    ``only``: comma-separated configuration names (plain, -n 2, --forked)."""
    out = out or Report()
    configs = [c for c in CONFIGS if not only or c[0] in only.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bb-e2e-"))
    try:
        (tmp / "plugins").mkdir()
        (tmp / "plugins" / "bench_rss.py").write_text(RSS_PLUGIN)
        suites = {
            "big": generate(tmp / "suite_big", tests // 100, 100),
            "small": generate(tmp / "suite_small", max(1, tests // 1000), 100),
        }
        results: dict[str, dict[str, list[dict[str, Any]]]] = {}
        if not timed:
            counted = {}
            for name, args, which, _ in configs:
                if name in ("plain", "-n 2"):
                    counted[name] = count_instructions(
                        tmp, suites[which], tests, name, args, out, baseline
                    )
            return {"instructions": counted}
        for name, args, which, ok_off in configs:
            store = tmp / f"store-{name.strip('-').replace(' ', '')}"
            suite = suites[which]
            for on in (True, False):  # warm-up: caches, and a previous run in the store
                run_measured(suite, args, on, store, tmp, (0,) if on else ok_off)
            res: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
            for r in range(reps if which == "big" else min(reps, 3)):
                for on in (True, False) if r % 2 == 0 else (False, True):
                    ok = (0,) if on else ok_off
                    res["on" if on else "off"].append(run_measured(suite, args, on, store, tmp, ok))
            results[name] = res
        wall_rows, rss_rows = [], []
        targets: dict[str, bool | None] = {}
        for name, _, which, _ in configs:
            res = results[name]
            n = tests if which == "big" else max(1, tests // 1000) * 100
            label = f"{name} ({n:,} tests, {len(res['on'])} pairs)"

            def med(key: str, mode: str, res: Any = res) -> float:
                return median([x[key] for x in res[mode] if x[key] is not None])

            def low(key: str, mode: str, res: Any = res) -> float:
                return min(x[key] for x in res[mode])

            over = (med("wall_s", "on") / med("wall_s", "off") - 1) * 100
            # Each on run against the off run next to it in time: slow drift cancels out.
            paired = median(
                [(a["wall_s"] / b["wall_s"] - 1) * 100 for a, b in zip(res["on"], res["off"])]
            )
            # The fastest run of each mode: the same work, least slowed by the machine (this
            # one flips between speeds 30% apart for seconds at a time, see README.md).
            best = (low("wall_s", "on") / low("wall_s", "off") - 1) * 100
            over_cpu = (med("cpu_s", "on") / med("cpu_s", "off") - 1) * 100
            wall_rows.append(
                [
                    label,
                    f"{med('wall_s', 'off'):.2f} s",
                    f"{med('wall_s', 'on'):.2f} s",
                    f"{over:+.1f}%",
                    f"{paired:+.1f}%",
                    f"{best:+.1f}%",
                    f"{med('cpu_s', 'off'):.2f} s",
                    f"{med('cpu_s', 'on'):.2f} s",
                    f"{over_cpu:+.1f}%",
                ]
            )
            r_off, r_on = med("rss_kib", "off") / 1024, med("rss_kib", "on") / 1024
            has_workers = any(x["worker_rss_kib"] for x in res["on"])
            k_off = med("worker_rss_kib", "off") / 1024 if has_workers else None
            k_on = med("worker_rss_kib", "on") / 1024 if has_workers else None
            rss_rows.append(
                [
                    label,
                    f"{r_off:.1f} MB",
                    f"{r_on:.1f} MB",
                    f"{r_on - r_off:+.1f} MB",
                    f"{k_off:.1f} MB" if k_off else "-",
                    f"{k_on:.1f} MB" if k_on else "-",
                    f"{k_on - k_off:+.1f} MB" if k_on and k_off else "-",
                ]
            )
            if name in ("plain", "-n 2"):
                # Met or missed when the three estimators agree; where they do not, the
                # machine's noise is larger than the difference and the run says so.
                estimates = (over, paired, best)
                targets[f"{name}: wall-time overhead <= 5% (median, paired, fastest)"] = (
                    True if max(estimates) <= 5 else False if min(estimates) > 5 else None
                )
            targets[f"{name}: controller peak RSS grows <= 30 MB"] = r_on - r_off <= 30
        out(
            f"3. end-to-end: {tests:,} generated tests x 3 fixtures, plugin off (-p no:blackbox) "
            "and on, alternating, after one untimed run of each"
        )
        out(
            table(
                [
                    "configuration",
                    "wall off",
                    "wall on",
                    "overhead",
                    "(paired)",
                    "(fastest)",
                    "CPU off",
                    "CPU on",
                    "CPU overhead",
                ],
                wall_rows,
            )
        )
        out(
            "   wall: medians, the median of each on/off pair's ratio, and the fastest on run "
            "against the fastest off run; CPU: user+sys of pytest and the children it reaped "
            "(workers), medians"
        )
        for name, *_ in configs:
            res = results[name]
            for mode in ("off", "on"):
                runs = " ".join(f"{x['wall_s']:.2f}" for x in res[mode])
                out(f"   {name} {mode:>3}: wall {runs} s; says {res[mode][-1]['tail']!r}")
        out(
            table(
                [
                    "peak RSS (VmHWM)",
                    "controller off",
                    "on",
                    "growth",
                    "worker off",
                    "on",
                    "growth",
                ],
                rss_rows,
            )
        )
        counted = {}
        if instructions and shutil.which("valgrind"):
            for name, args, which, _ in configs:
                if name in ("plain", "-n 2"):
                    counted[name] = count_instructions(
                        tmp, suites[which], tests, name, args, out, baseline
                    )
        for what, ok in targets.items():
            out(f"   target: {what}: {verdict(ok) if ok is not None else 'not resolved (noise)'}")
        return {"results": results, "targets": targets, "instructions": counted}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--tests", type=int, default=5000)
    ap.add_argument("--only", default="", help="e.g. 'plain,-n 2' (default: all)")
    ap.add_argument("--no-instructions", action="store_true", help="skip the callgrind count")
    ap.add_argument("--instructions-only", action="store_true", help="only the callgrind count")
    ap.add_argument(
        "--baseline",
        default=None,
        metavar="DIR",
        help="also count the plugin of another build: DIR holds a copy of its pytest_blackbox",
    )
    a = ap.parse_args()
    run(
        a.reps,
        a.tests,
        only=a.only,
        instructions=not a.no_instructions,
        timed=not a.instructions_only,
        baseline=a.baseline,
    )


if __name__ == "__main__":
    main()
