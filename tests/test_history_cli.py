"""Reading history across runs on real sessions run several times: `blackbox flaky`,
`history NODEID`, `slower`, the terminal summary's flaky line, `Store.history`; runs killed
during their fold; `blackbox combine` of three stores written by three sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import no_internal_error, run, store
from pytest_blackbox import Store

BLACKBOX = str(Path(sys.executable).with_name("blackbox"))

#: A suite whose round number (round.txt) decides: one test flips outcome, one crashes
#: pytest itself every other run (last, so the others ran), one gets 3x slower from round 3.
SUITE = """
import os, time, pathlib
import pytest
ROUND = int(pathlib.Path(__file__).with_name("round.txt").read_text())

@pytest.fixture
def slow_setup():
    time.sleep(0.15 if ROUND >= 3 else 0.05)

def test_flips():
    assert ROUND % 2 == 0

def test_steady():
    pass

def test_gets_slower(slow_setup):
    time.sleep(0.15 if ROUND >= 3 else 0.05)

def test_zz_crashes_every_other_run():
    if ROUND % 2 == 1:
        os.abort()
"""

FLIPS = "test_suite.py::test_flips"
CRASHES = "test_suite.py::test_zz_crashes_every_other_run"
SLOWER = "test_suite.py::test_gets_slower"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BLACKBOX, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def run_rounds(pytester: pytest.Pytester, rounds: int, *args: str) -> list[pytest.RunResult]:
    pytester.makepyfile(test_suite=SUITE)
    results = []
    for n in range(rounds):
        (pytester.path / "round.txt").write_text(str(n))
        result = run(pytester, *args)
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
        assert result.ret == (-6 if n % 2 else 0), result.stdout.str()
        results.append(result)
    return results


def test_flaky_history_and_slower_over_six_sessions(pytester: pytest.Pytester) -> None:
    results = run_rounds(pytester, 6)
    # The last session folds the dead one before it (its pytest died with SIGABRT).
    (pytester.path / "round.txt").write_text("0")
    last = run(pytester)
    no_internal_error(last)
    runs = store(pytester).runs()
    assert len(runs) == 7

    # The terminal summary: one line when the run had flaky tests, none in the first run.
    first = results[0].stdout.str()
    assert "flaky over the last" not in first
    for result in (results[2], results[4], last):
        lines = [ln for ln in result.stdout.lines if "flaky over the last" in ln]
        assert len(lines) == 1, result.stdout.str()
    last.stdout.fnmatch_lines(["2 flaky over the last 7 runs: blackbox flaky --dir *"])
    results[2].stdout.fnmatch_lines(["2 flaky over the last 3 runs: blackbox flaky --dir *"])

    # blackbox flaky: the flipping and the crashing test, counts, last flip, crashes, strip.
    p = cli("flaky", "--json", cwd=pytester.path)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert [r["id"] for r in report["runs"]] == runs[::-1]
    assert report["last"] == 20
    by_id = {t["nodeid"]: t for t in report["tests"]}
    assert set(by_id) == {FLIPS, CRASHES}
    flips = by_id[FLIPS]
    # Rounds 0..5 then 0 again: newest first P F P F P F P.
    assert flips["strip"] == ["passed", "failed"] * 3 + ["passed"]
    assert flips["outcomes"] == {"passed": 4, "failed": 3}
    assert flips["flips"] == 6
    assert flips["last_flip"] == {"run": runs[-1], "from": "failed", "to": "passed"}
    assert flips["crashed"] == 0
    crash = by_id[CRASHES]
    assert crash["outcomes"] == {"passed": 4, "crashed": 3}
    assert crash["crashed_runs"] == [runs[5], runs[3], runs[1]]
    assert crash["strip"] == ["passed", "crashed"] * 3 + ["passed"]
    text = cli("flaky", cwd=pytester.path)
    assert text.returncode == 0
    assert "2 flaky over the last 7 runs" in text.stdout
    assert "PFPFPFP" in text.stdout and "PCPCPCP" in text.stdout
    assert "failed -> passed" in cli("flaky", "--wide", cwd=pytester.path).stdout
    # --last 1: one run cannot show a flip.
    one = json.loads(cli("flaky", "--json", "--last", "1", cwd=pytester.path).stdout)
    assert one["tests"] == [] and len(one["runs"]) == 1

    # blackbox history NODEID: the crashing test in each run.
    h = json.loads(cli("history", CRASHES, "--json", cwd=pytester.path).stdout)
    assert [r["run"] for r in h["runs"]] == runs[::-1]
    assert [r["outcome"] for r in h["runs"]] == ["passed", "crashed"] * 3 + ["passed"]
    crashed = h["runs"][1]
    assert crashed["crashed"] is True and crashed["signal_name"] == "SIGABRT"
    assert crashed["pid"] and crashed["host"]
    assert h["flaky"] is True and (h["passes"], h["failures"]) == (4, 3)
    text = cli("history", CRASHES, cwd=pytester.path).stdout
    assert "ran in 7 of the last 7 runs, passed 4, crashed 3, 6 flips (flaky)" in text, text
    assert "SIGABRT" in text
    one = cli("history", FLIPS, "--last", "1", cwd=pytester.path).stdout
    assert "ran in 1 of the last 1 run, passed 1, 0 flips" in one, one
    missing = cli("history", "test_suite.py::nope", cwd=pytester.path)
    assert missing.returncode == 0 and "did not run" in missing.stdout

    # blackbox slower over the newest 6 runs: rounds 0 (the 7th session), 5, 4 (medians
    # 0.15 s) against rounds 3, 2, 1 (0.05 s).
    s = json.loads(cli("slower", "--json", "--last", "6", cwd=pytester.path).stdout)
    assert [r["id"] for r in s["recent"]] == runs[-1:-4:-1]
    assert [r["id"] for r in s["baseline"]] == runs[-4:-7:-1]
    slow = [i for i in s["slower"] if i["kind"] == "test"]
    assert [i["name"] for i in slow] == [SLOWER], s
    assert 2.0 < slow[0]["ratio"] < 4.0, slow
    assert slow[0]["recent_runs"] == [r["id"] for r in s["recent"]]
    # The fixture that got slower too, by its mean setup.
    fixtures = [i for i in s["slower"] if i["kind"] == "fixture"]
    assert [(i["name"], i["scope"]) for i in fixtures] == [("slow_setup", "function")], s
    assert 2.0 < fixtures[0]["ratio"] < 4.0, fixtures
    assert s["last"] == 6
    text = cli("slower", "--last", "6", cwd=pytester.path).stdout
    assert SLOWER in text and "slower by more than 1.5x" in text
    assert "slow_setup (function)" in text
    two = cli("slower", "--last", "2", cwd=pytester.path).stdout
    assert f"the newest 1 run ({runs[-1]}) against the 1 before ({runs[-2]})" in two, two

    # --wide: whole nodeids in every table, also when piped, so they can be copied.
    for args in (["flaky"], ["history", CRASHES], ["slower", "--last", "6"]):
        wide = cli(*args, "--wide", cwd=pytester.path)
        assert wide.returncode == 0, wide.stderr
        assert (SLOWER if args[0] == "slower" else CRASHES) in wide.stdout, wide.stdout
    # Piped (100 columns), the last flip gives way before the test's name does.
    piped = subprocess.run(
        [BLACKBOX, "flaky"],
        cwd=pytester.path,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    row = next(ln for ln in piped.splitlines() if "PCPCPCP" in ln)
    name, rest = row.split("  ", 1)
    assert len(row) <= 100 and len(name) > 30, piped
    assert "… " in rest, piped  # LAST FLIP, shortened

    # The same from Python, key for key.
    hist = Store(pytester.path / ".blackbox").history
    assert hist.flaky() == report
    assert hist.test(CRASHES) == h
    assert hist.slower(last=6) == s

    # Usage errors exit 2, errors 1.
    assert cli("history", cwd=pytester.path).returncode == 2
    assert cli("slower", "--threshold", "0.5", cwd=pytester.path).returncode == 2
    assert cli("flaky", "--last", "0", cwd=pytester.path).returncode == 2
    assert cli("flaky", "--dir", str(pytester.path / "nowhere"), cwd=pytester.path).returncode == 1


#: A test that hangs every other run: the watchdog ends its worker (a timeout, not a crash
#: signal), and the next test still runs.
HANGS = """
import pathlib, time
ROUND = int(pathlib.Path(__file__).with_name("round.txt").read_text())

def test_hangs_every_other_run():
    if ROUND % 2 == 1:
        time.sleep(600)

def test_steady():
    pass
"""
HANGS_ID = "test_hangs.py::test_hangs_every_other_run"


def test_a_test_that_times_out_every_other_run_is_flaky(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_hangs=HANGS)
    results = []
    for n in range(4):
        (pytester.path / "round.txt").write_text(str(n))
        result = run(pytester, "-n", "2", "--blackbox-timeout=1")
        no_internal_error(result)
        assert result.ret == (1 if n % 2 else 0), result.stdout.str()
        results.append(result)
    runs = store(pytester).runs()
    assert len(runs) == 4
    assert "flaky over the last" not in results[0].stdout.str()
    results[1].stdout.fnmatch_lines(["1 flaky over the last 2 runs: blackbox flaky --dir *"])
    results[3].stdout.fnmatch_lines(["1 flaky over the last 4 runs: blackbox flaky --dir *"])

    report = json.loads(cli("flaky", "--json", cwd=pytester.path).stdout)
    (t,) = report["tests"]
    assert t["nodeid"] == HANGS_ID
    assert t["strip"] == ["timeout", "passed", "timeout", "passed"]
    assert t["outcomes"] == {"passed": 2, "timeout": 2}
    assert t["flips"] == 3
    assert t["last_flip"] == {"run": runs[3], "from": "passed", "to": "timeout"}
    # A recurring hang counts with the crashes.
    assert (t["crashed"], t["crashed_runs"]) == (2, [runs[3], runs[1]])
    text = cli("flaky", cwd=pytester.path).stdout
    assert "1 flaky over the last 4 runs" in text and "TPTP" in text and "T timeout" in text, text

    # history: each run, with the xdist worker that ran the test.
    h = json.loads(cli("history", HANGS_ID, "--json", cwd=pytester.path).stdout)
    assert [r["outcome"] for r in h["runs"]] == t["strip"]
    assert (h["passes"], h["failures"], h["flips"], h["flaky"]) == (2, 2, 3, True)
    workers = [r["worker"] for r in h["runs"]]
    assert all(w and w.startswith("gw") for w in workers), workers
    text = cli("history", HANGS_ID, cwd=pytester.path).stdout
    assert "ran in 4 of the last 4 runs, passed 2, timed out 2, 3 flips (flaky)" in text, text
    for w in set(workers):
        assert w in text, text


def test_no_flaky_line_without_flaky_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_ok():\n    pass\n")
    for _ in range(2):
        result = run(pytester)
        assert result.ret == 0
        assert "flaky over the last" not in result.stdout.str()


def test_runs_killed_during_their_fold_get_in_next_time(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session SIGKILLed at a random point of its end (its run recorded its end, then the
    fold runs): the next session folds it. Every run ends in history exactly once."""
    pytester.makepyfile(
        test_many="import pytest\n\n@pytest.mark.parametrize('i', range(1500))\n"
        "def test_n(i):\n    pass\n"
    )
    pytester.makeconftest(
        """
import os, random, signal, threading, pytest

@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config):
    if os.environ.get("KILL_AT_END"):
        delay = random.uniform(0, float(os.environ["KILL_AT_END"]))
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
"""
    )
    killed = 0
    for _ in range(6):
        monkeypatch.setenv("KILL_AT_END", "0.15")
        result = run(pytester, "-q")
        killed += result.ret == -9
    assert killed >= 3
    monkeypatch.delenv("KILL_AT_END")
    assert run(pytester, "-q").ret == 0
    s = store(pytester)
    folded = [
        r["id"]
        for r in json.loads(cli("flaky", "--json", "--last", "100", cwd=pytester.path).stdout)[
            "runs"
        ]
    ]
    assert sorted(folded) == s.runs(), "every run in history once"
    # Each run, the killed ones too, holds the suite's last test, passed.
    h = json.loads(
        cli(
            "history", "test_many.py::test_n[1499]", "--json", "--last", "100", cwd=pytester.path
        ).stdout
    )
    outcomes = {x["run"]: x["outcome"] for x in h["runs"]}
    for r in s.runs():
        assert outcomes.get(r) == "passed", (r, h)


def test_combine_three_shards(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Three sessions, each with its own store (as three CI jobs would), combined as
    README's CI example does: each job's `.blackbox` uploaded, downloaded into
    `artifacts/shard-N/`, then `blackbox combine --dir all artifacts/*`."""
    pytester.makepyfile(test_suite=SUITE)
    shards = []
    for n in range(3):
        (pytester.path / "round.txt").write_text(str(n))
        dest = tmp_path / "artifacts" / f"shard-{n}"
        result = run(pytester, f"--blackbox-dir={dest}")
        assert result.ret == (-6 if n % 2 else 0)
        shards.append(dest)
    # A damaged input: a store whose history file is garbage.
    bad = tmp_path / "artifacts" / "broken"
    bad.mkdir(parents=True)
    (bad / "history.redb").write_bytes(b"not a database" * 100)
    target = tmp_path / "all"
    p = subprocess.run(
        f"{BLACKBOX} combine --dir all artifacts/*",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 1, p.stderr
    assert "skipped artifacts/broken/history.redb: not combined: " in p.stderr, p.stderr
    for n in range(3):
        assert f"(shard shard-{n}): 1 runs copied" in p.stdout, p.stdout
    runs = Store(target).runs()
    assert len(runs) == 3
    before = {f.relative_to(target): f.read_bytes() for f in target.rglob("*") if f.is_file()}

    # Combining twice changes nothing.
    again = cli("combine", "--dir", str(target), *map(str, shards), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("0 runs copied, 0 from its history, 1 already in") == 3
    after = {f.relative_to(target): f.read_bytes() for f in target.rglob("*") if f.is_file()}
    assert after == before

    # flaky, history and report cover all shards; runs keep their host and shard.
    report = json.loads(cli("flaky", "--json", "--dir", str(target), cwd=tmp_path).stdout)
    assert sorted(r["shard"] for r in report["runs"]) == ["shard-0", "shard-1", "shard-2"]
    assert {r["host"] for r in report["runs"]} == {os.uname().nodename}
    assert {t["nodeid"] for t in report["tests"]} == {FLIPS, CRASHES}
    h = json.loads(cli("history", CRASHES, "--json", "--dir", str(target), cwd=tmp_path).stdout)
    assert [(r["shard"], r["outcome"]) for r in h["runs"]] == [
        ("shard-2", "passed"),
        ("shard-1", "crashed"),
        ("shard-0", "passed"),
    ]
    for run_id in runs:
        page = tmp_path / f"{run_id}.html"
        p = cli("report", "--html", str(page), "--run", run_id, "--dir", str(target), cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert "test_flips" in page.read_text()


def test_combine_takes_the_store_inside_a_folder_and_refuses_what_is_not_one(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytester.makepyfile(test_a="def test_ok():\n    pass\n")
    job = tmp_path / "shard-1"
    assert run(pytester, f"--blackbox-dir={job / '.blackbox'}").ret == 0
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not a store\n")
    target = tmp_path / "all"
    p = subprocess.run(
        [BLACKBOX, "combine", "--dir", str(target), str(job), str(notes)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.umask(0),
    )
    assert p.returncode == 1, p.stderr
    assert f"{job} (shard shard-1): 1 runs copied" in p.stdout, p.stdout
    assert f"skipped {notes}: not a blackbox store" in p.stderr, p.stderr
    assert str(notes) not in p.stdout
    (run_id,) = Store(target).runs()
    # The shard file combine writes is private, as every file of the store, whatever the umask.
    shard = target / run_id / "shard"
    assert shard.read_text() == "shard-1\n"
    assert shard.stat().st_mode & 0o777 == 0o600


def damage_segments(run_dir: Path) -> None:
    """Garbage over the first records of each segment of a run (the header stays)."""
    for seg in run_dir.glob("*.seg"):
        with seg.open("r+b") as f:
            f.seek(4096 + 8)
            f.write(b"\xff" * 64)


def test_combine_brings_damaged_and_pruned_runs_in_from_the_source_history(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    # Three sessions keeping one run folder: history holds all three, the folder the newest.
    kept = tmp_path / "kept"
    for n in (0, 2, 4):
        (pytester.path / "round.txt").write_text(str(n))
        assert run(pytester, f"--blackbox-dir={kept}", "--blackbox-keep=1").ret == 0
    ids = json.loads(cli("flaky", "--json", "--dir", str(kept), cwd=tmp_path).stdout)["runs"]
    ids = [r["id"] for r in ids][::-1]
    (newest,) = Store(kept).runs()
    assert len(ids) == 3 and ids[-1] == newest
    damage_segments(kept / newest)
    # A store with a damaged run and no history: that run cannot come in.
    lost = tmp_path / "lost"
    (pytester.path / "round.txt").write_text("0")
    assert run(pytester, f"--blackbox-dir={lost}").ret == 0
    (lost_run,) = Store(lost).runs()
    (lost / "history.redb").unlink()
    damage_segments(lost / lost_run)

    target = tmp_path / "all"
    p = cli("combine", "--dir", str(target), str(kept), str(lost), cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    assert "(shard kept): 0 runs copied, 3 from its history, 0 already in" in p.stdout, p.stdout
    assert "(shard lost): 0 runs copied, 0 from its history, 0 already in" in p.stdout, p.stdout
    warned = [ln for ln in p.stderr.splitlines() if "damaged" in ln]
    assert len(warned) == 2, p.stderr
    assert f"skipped {kept / newest}: damaged: " in warned[0], warned
    assert warned[0].endswith("the run came in from the source's history.redb"), warned
    assert f"skipped {lost / lost_run}: damaged: " in warned[1], warned
    assert warned[1].endswith("; not combined"), warned
    h = json.loads(cli("history", FLIPS, "--json", "--dir", str(target), cwd=tmp_path).stdout)
    assert [(r["run"], r["shard"], r["outcome"]) for r in h["runs"]] == [
        (i, "kept", "passed") for i in ids[::-1]
    ]
    # Again: all three are there already, the damaged one too; the lost one is said again.
    again = cli("combine", "--dir", str(target), str(kept), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "(shard kept): 0 runs copied, 0 from its history, 3 already in" in again.stdout
