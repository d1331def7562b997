"""What a person reads after a run: the `blackbox` tables at 80 and 200 columns, on a pty
and with --wide; `blackbox show` and `blackbox crashes` with the traceback inline; the
store found from a subdirectory (CLI and `Store()`); forked children counted under their
worker; the terminal summary. Real pytest sessions (`--forked`, `-n 2`) with real crashes.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

from conftest import LONG_ID as LONG
from conftest import crashing_sessions, no_internal_error, run

BLACKBOX = str(Path(sys.executable).with_name("blackbox"))


def cli(*args: str, cwd: Path, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "BLACKBOX_DIR")}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run(
        [BLACKBOX, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def ok(*args: str, cwd: Path, columns: int | None = None) -> str:
    r = cli(*args, cwd=cwd, columns=columns)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return r.stdout


@pytest.fixture(scope="module")
def forked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `--forked` session, run twice (history.redb then holds two runs)."""
    root = tmp_path_factory.mktemp("forked")
    (root / "sub" / "deeper").mkdir(parents=True)
    out = crashing_sessions(root, "--forked", "-rA")
    view = json.loads(ok("stats", "--json", cwd=root / "sub" / "deeper"))
    return {"root": root, "sub": root / "sub" / "deeper", "out": out, "view": view}


def test_tables_fit_80_and_200_columns_and_wide_cuts_nothing(forked: dict[str, Any]) -> None:
    sub = forked["sub"]
    long_id = next(t["nodeid"] for t in forked["view"]["tests"] if LONG in t["nodeid"])
    for columns in (80, 200):
        for cmd in ("stats", "tests", "crashes", "fixtures"):
            text = ok(cmd, cwd=sub, columns=columns)
            too_wide = [line for line in text.splitlines() if len(line) > columns]
            assert too_wide == [], (cmd, columns, text)
        stats = ok("stats", cwd=sub, columns=columns)
        # Sentences keep their end; the run's duration is not run into the argv.
        assert "call exited with status 3 (os._exit)" in " ".join(stats.split())
        assert re.search(r"took \d", stats)
        assert "python -m pytest -p no:cacheprovider --forked -rA" in stats
        # The long nodeid is cut in its middle: its file and its end stay.
        line = next(li for li in stats.splitlines() if li.endswith("xx]"))
        assert "…" in line and re.search(r"\stest_s\S*…", line), line
    wide = ok("stats", "--wide", cwd=sub, columns=80)
    assert long_id in wide and "…" not in wide
    assert max(len(li) for li in wide.splitlines()) > 150
    # The whole path of the traceback file, on one line.
    tb = next(c for c in forked["view"]["crashes"] if c["signal"] == 11)["attachments"][0]
    assert tb in wide


def _on_a_pty(args: list[str], cwd: Path, columns: int) -> str:
    """`blackbox ARGS` with stdout on a pseudo-terminal `columns` wide (no COLUMNS)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "BLACKBOX_DIR")}
    proc = subprocess.Popen(
        [BLACKBOX, *args, "--color", "never"], cwd=cwd, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(leader)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_a_terminal_gets_tables_as_wide_as_it_is(forked: dict[str, Any]) -> None:
    long_id = next(t["nodeid"] for t in forked["view"]["tests"] if LONG in t["nodeid"])
    wide = _on_a_pty(["tests"], forked["sub"], 250)
    assert long_id in wide, wide
    narrow = _on_a_pty(["tests"], forked["sub"], 90)
    assert long_id not in narrow
    assert all(len(li) <= 90 for li in narrow.splitlines()), narrow


def test_show_tells_one_tests_whole_story(forked: dict[str, Any]) -> None:
    text = ok("show", "test_segv", cwd=forked["sub"], columns=100)
    lines = text.splitlines()
    assert lines[0] == "test_suite.py::test_segv"
    assert re.search(r"crashed \(SIGSEGV\) · took \S+ · worker main · pid \d+", text), text
    # Phases with outcome and duration; the one that died.
    assert re.search(r"setup\s+passed\s+\d", text) and re.search(r"call\s+crashed", text)
    # The crash, with the innermost frames of its traceback inline.
    assert "setup passed, call crashed with SIGSEGV" in text
    assert re.search(r'File ".*test_suite\.py", line \d+ in test_segv', text), text
    assert "more frames (--full shows them)" in text
    # Properties, fixtures with their times, history.
    assert "model = resnet50" in text and "pcc = 0.5" in text
    assert re.search(r"\d\S*s\s+\S+\s+function\s+db$", text, re.M), text
    assert re.search(r"^  CC  \(newest first", text, re.M), text
    assert "2 runs, 0 passes, 2 failures in the last 2 runs" in text
    full = ok("show", "test_segv", "--full", cwd=forked["sub"], columns=100)
    assert "more frames" not in full and full.count('File "') > text.count('File "')
    as_json = json.loads(ok("show", "test_suite.py::test_segv", "--json", cwd=forked["sub"]))
    assert as_json["test"]["outcome"] == "crashed"
    assert {f["name"] for f in as_json["fixtures"]} >= {"db", "record_property", "tmp_path"}
    assert [p["outcome"] for p in as_json["history"]["runs"]] == ["crashed", "crashed"]
    # A part of a nodeid that several tests have is refused, naming them.
    many = cli("show", "test_", cwd=forked["sub"])
    assert many.returncode == 1 and "give more of the nodeid" in many.stderr
    assert "test_suite.py::test_ok" in many.stderr


def test_crashes_show_the_last_frames_and_no_empty_file(forked: dict[str, Any]) -> None:
    text = ok("crashes", cwd=forked["sub"], columns=120)
    segv, exit_ = text.split("test_suite.py::test_exit")
    assert re.search(r'File ".*test_suite\.py", line \d+ in test_segv', segv), text
    assert "Current thread" in segv and "more frames (--full shows them)" in segv
    # os._exit leaves an empty faulthandler file: it is not listed.
    exit_attachments = next(c for c in forked["view"]["crashes"] if c["exit_code"] == 3)
    assert exit_attachments["attachments"], "the empty file exists"
    assert "call exited with status 3 (os._exit)" in exit_
    assert "faulthandler" not in exit_ and "traceback" not in exit_
    full = ok("crashes", "--full", cwd=forked["sub"], columns=120)
    assert "more frames" not in full and full.count('File "') > text.count('File "')


def test_forked_children_count_under_the_worker_that_forked_them(forked: dict[str, Any]) -> None:
    view = forked["view"]
    workers = {w["id"]: w for w in view["workers"]}
    assert list(workers) == ["main"], workers
    main = workers["main"]
    assert (main["tests"], main["crashes"], main["forked"]) == (5, 2, 5)
    assert len(main["pids"]) == 6
    dump = ok("dump", cwd=forked["sub"])
    heads = [li for li in dump.splitlines() if li.startswith("/")]
    finished = [h for h in heads if "closed (forked child, its test finished)" in h]
    died = [h for h in heads if "writer died" in h]
    assert (len(finished), len(died)) == (3, 2), heads
    assert any("closed cleanly" in h for h in heads)


def test_store_and_runs_are_found_from_a_subdirectory(forked: dict[str, Any]) -> None:
    sub, root = forked["sub"], forked["root"]
    code = (
        "from pytest_blackbox import Store\n"
        "s = Store()\n"
        "ids = s.runs()\n"
        "print(s.path)\n"
        "print(s.run(ids[0][:18]).id == ids[0], s.latest().id == ids[-1])\n"
        "try:\n"
        "    s.run(ids[0][:2])\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "BLACKBOX_DIR"}
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=sub, env=env, capture_output=True, text=True, check=True
    )
    path, found, ambiguous = r.stdout.splitlines()
    assert path == str(root / ".blackbox")
    assert found == "True True"
    assert ambiguous.startswith("NoSuchRunError run id") and "matches 2 runs" in ambiguous
    runs = ok("runs", "--json", cwd=sub)
    assert json.loads(runs)["store"] == str(root / ".blackbox")


def test_the_ini_blackbox_dir_is_where_readers_look(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nblackbox_dir = results/bb\n")
    pytester.makepyfile(test_one="def test_one(): pass")
    no_internal_error(run(pytester))
    sub = pytester.mkdir("pkg")
    stats = json.loads(ok("stats", "--json", cwd=sub))
    assert [t["nodeid"] for t in stats["tests"]] == ["test_one.py::test_one"]
    code = "from pytest_blackbox import Store; print(Store().path)"
    env = {k: v for k, v in os.environ.items() if k != "BLACKBOX_DIR"}
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=sub, env=env, capture_output=True, text=True, check=True
    )
    assert r.stdout.strip() == str(pytester.path / "results" / "bb")


def test_terminal_summary_counts_in_english_and_skips_stock_fixtures(
    forked: dict[str, Any], pytester: pytest.Pytester
) -> None:
    out = forked["out"]
    line = next(li for li in out.splitlines() if li.startswith("slowest fixtures"))
    assert "db " in line
    # pytest's own fixtures only where their setups cost more than 1% of the tests' time.
    view = forked["view"]
    test_time = sum(t["duration_s"] for t in view["tests"])
    for f in view["fixtures"]:
        if f["name"] in ("record_property", "tmp_path", "tmp_path_factory", "request"):
            costly = f["total_s"] + f["teardown_total_s"] > 0.01 * test_time
            assert (f" {f['name']} " in line) == costly, (f, test_time, line)
    assert "record_property" not in line, line
    assert re.search(r"run \S+: 5 tests, 2 crashed", out)
    fixtures = ok("fixtures", cwd=forked["sub"])
    assert "db" in fixtures and "record_property" not in fixtures
    assert "record_property" in ok("fixtures", "--all", cwd=forked["sub"])
    stats = ok("stats", cwd=forked["sub"])
    assert "6 processes" in stats
    pytester.makepyfile(test_single="def test_single(): pass")
    single = run(pytester)
    assert re.search(r"run \S+: 1 test, 0 crashed", single.stdout.str())
    assert " 1 process " in ok("stats", cwd=pytester.path).replace("·", " ")


def test_xdist_replacement_workers_that_ran_nothing_are_not_counted(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_x="""
        import os, pytest

        @pytest.mark.parametrize("i", range(8))
        def test_many(i):
            pass

        def test_dies():
            os._exit(3)
        """
    )
    result = run(pytester, "-n", "2")
    no_internal_error(result)
    view = json.loads(ok("stats", "--json", cwd=pytester.path))
    gw = [w for w in view["workers"] if w["id"].startswith("gw")]
    assert gw and all(w["tests"] > 0 or w["crashes"] > 0 for w in gw), gw
    assert sum(w["tests"] for w in view["workers"]) == 9
    line = next(li for li in result.stdout.lines if li.startswith("run "))
    assert f": 9 tests on {len(gw)} workers" in line, line
    # xdist started a replacement for the dead worker; the one that ran nothing is left out.
    from pytest_blackbox import Store

    roles = [s["role"] for s in Store(pytester.path / ".blackbox").latest().segments()]
    assert roles.count("worker") > len(gw), (roles, gw)
