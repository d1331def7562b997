"""The recorder never harms the run or the user: a store that cannot be recorded into (full,
read-only, missing, another user's, writable by others) leaves every test its outcome with
the plugin off and costs one warning; bad settings are usage errors before any test runs;
the store's files are private whatever the umask; a passing forked test leaves 8 KiB.

Tests that mount filesystems or use a second user (uid 65534 through ``setpriv``) need root
and skip without it."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import junit_outcomes, no_internal_error, run
from pytest_blackbox import Store

NOBODY = 65534
BLACKBOX = Path(sys.executable).with_name("blackbox")
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: mounts a tmpfs or bind mount, or uses uid 65534"
)

#: A suite of every outcome, through the stock fixture and the package's API.
SUITE = """
import pytest
import pytest_blackbox

def test_pass(record_property):
    record_property("model", "resnet50")

def test_fail(record_property):
    record_property("pcc", 0.5)
    assert 0, "wrong"

def test_skip():
    pytest.skip("not here")

@pytest.mark.xfail(strict=True)
def test_xfail():
    assert 0

def test_api():
    pytest_blackbox.record("k", 1)

def test_fixture(blackbox):
    blackbox.record("k", 2)

@pytest.fixture
def broken():
    raise RuntimeError("setup")

def test_error(broken):
    pass
"""


def outcomes(result: pytest.RunResult) -> dict[str, int]:
    """The test outcomes of a run (not its count of warnings)."""
    return {k: v for k, v in result.parseoutcomes().items() if k not in ("warnings", "warning")}


def warning_lines(result: pytest.RunResult) -> list[str]:
    out = result.stdout.lines + result.stderr.lines
    return [line for line in out if "not recording this run" in line]


@contextlib.contextmanager
def mounted(*args: str) -> Iterator[None]:
    target = args[-1]
    subprocess.run(["mount", *args], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", target], check=True)


def fill(path: Path) -> None:
    """Writes into ``path`` (a file) until its filesystem has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# A store that cannot be recorded into
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def broken_store(pytester: pytest.Pytester, cause: str) -> Iterator[tuple[Path, str]]:
    """A store dir that cannot be recorded into, and words the warning must hold."""
    store = pytester.path / "store"
    if cause == "missing":
        # Its parent is a file: it cannot be created.
        (pytester.path / "afile").write_text("")
        yield pytester.path / "afile" / "store", "afile"
    elif cause == "shared":
        store.mkdir()
        store.chmod(0o777)
        yield store, "writable by other users"
    elif cause == "foreign":
        store.mkdir(mode=0o700)
        os.chown(store, NOBODY, NOBODY)
        yield store, f"owned by uid {NOBODY}"
    elif cause == "readonly":
        src = pytester.path / "src"
        src.mkdir(mode=0o700)
        store.mkdir(mode=0o700)
        with mounted("--bind", "-o", "ro", str(src), str(store)):
            yield store, "Read-only file system"
    elif cause == "full":
        store.mkdir(mode=0o700)
        with mounted("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(store)):
            fill(store / "filler")
            yield store, "No space left"
    else:
        raise AssertionError(cause)


CAUSES = [
    "missing",
    "shared",
    pytest.param("foreign", marks=needs_root),
    pytest.param("readonly", marks=needs_root),
    pytest.param("full", marks=needs_root),
]


@pytest.mark.parametrize("how", [[], ["-n", "2"], ["--forked"]], ids=["plain", "xdist", "forked"])
@pytest.mark.parametrize("cause", CAUSES)
def test_a_store_that_cannot_record_costs_one_warning_and_no_test(
    pytester: pytest.Pytester, cause: str, how: list[str]
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    off = run(pytester, "--blackbox=off", *how)
    assert off.ret == 1
    off_outcomes = outcomes(off)
    with broken_store(pytester, cause) as (store, words):
        result = run(pytester, "--blackbox-dir", str(store), *how)
    no_internal_error(result)
    assert result.ret == 1
    assert outcomes(result) == off_outcomes
    lines = warning_lines(result)
    text = result.stdout.str() + result.stderr.str()
    assert len(lines) == 1, text
    assert words in lines[0] and str(store) in lines[0], lines[0]
    assert "--blackbox-dir" in lines[0] and "--blackbox=off" in lines[0], lines[0]
    # One clean line: no location in the plugin's source, nor a line of it under the warning.
    assert "plugin.py" not in text and "_settings.py" not in text, text


@pytest.mark.parametrize("flags", [["-p", "no:warnings"], ["-W", "error"]], ids=["nowarn", "error"])
def test_a_store_that_cannot_record_is_said_where_pytest_shows_no_warning(
    pytester: pytest.Pytester, flags: list[str]
) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    with broken_store(pytester, "shared") as (store, words):
        result = run(pytester, "--blackbox-dir", str(store), *flags)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    (line,) = warning_lines(result)
    assert words in line and "--blackbox=off" in line, line


@pytest.mark.parametrize("how", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_a_store_that_cannot_record_is_what_the_fixture_and_record_say(
    pytester: pytest.Pytester, how: list[str]
) -> None:
    # The plugin is on: "off" would send the user looking for a setting they never made.
    pytester.makepyfile(
        test_x="""
import pytest
import pytest_blackbox

def test_fixture(blackbox):
    pass

def test_record():
    with pytest.raises(pytest_blackbox.NotRecordingError) as e:
        pytest_blackbox.record("k", 1)
    print("RAISED:", e.value)
"""
    )
    with broken_store(pytester, "shared") as (store, words):
        result = run(pytester, "--blackbox-dir", str(store), "-rsP", *how)
    text = result.stdout.str()
    assert result.ret == 0, text
    (skip,) = [line for line in result.stdout.lines if line.startswith("SKIPPED")]
    (raised,) = [line for line in result.stdout.lines if line.startswith("RAISED:")]
    for line in (skip, raised):
        assert "is off" not in line and "turn" not in line, line
        assert "could not record" in line and words in line and str(store) in line, line
        assert "warning at the start of the run" in line, line


@pytest.mark.parametrize("where", ["option", "ini"])
def test_require_makes_a_store_that_cannot_record_a_usage_error(
    pytester: pytest.Pytester, where: str
) -> None:
    pytester.makepyfile(test_suite="def test_x():\n    open('ran', 'w').close()\n")
    with broken_store(pytester, "shared") as (store, words):
        if where == "ini":
            pytester.makeini("[pytest]\nblackbox = require\n")
            result = run(pytester, "--blackbox-dir", str(store))
        else:
            result = run(pytester, "--blackbox=require", "--blackbox-dir", str(store))
    assert result.ret == 4, result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines(["*--blackbox=require*"])
    assert words in result.stderr.str()
    assert not (pytester.path / "ran").exists()
    # A store that works: require records as on does.
    result = run(pytester, "--blackbox=require")
    assert result.ret == 0
    assert len(Store(pytester.path / ".blackbox").runs()) == 1


#: 40 tests of 120 KB each on a 2 MiB store: it fills after about a dozen.
BIG_SUITE = """
import pytest

@pytest.mark.parametrize("i", range(40))
def test_big(i, record_property):
    record_property("blob", str(i) * 120_000)
    assert i % 7 != 6
"""
#: Tests of the package's API that run after the store filled (the file sorts after
#: test_big.py): each passes on a healthy store, and a full one must not fail them.
LATER_SUITE = """
import pytest_blackbox

def test_later_record():
    pytest_blackbox.record("late", "x" * 200_000)

def test_later_append():
    pytest_blackbox.append("late", "x" * 200_000)

def test_later_fixture(blackbox):
    blackbox.record("late", "x" * 200_000)
    blackbox.append("later", "x" * 200_000)
"""


@needs_root
@pytest.mark.parametrize("how", [[], ["-n", "2"], ["--forked"]], ids=["plain", "xdist", "forked"])
def test_a_disk_that_fills_midway_keeps_what_was_committed(
    pytester: pytest.Pytester, how: list[str]
) -> None:
    pytester.makepyfile(test_big=BIG_SUITE, test_later=LATER_SUITE)
    off = run(pytester, "-p", "no:blackbox", *how, "test_big.py", "--junit-xml=off.xml")
    off_outcomes = junit_outcomes(pytester.path / "off.xml")
    # pytest-forked alone fails every test on pytest 9.2 (its marshal cannot send the
    # reports): the store gives the true ones while it has room, so under --forked a test
    # may have its outcome without the plugin or its true one (that of a plain run).
    run(pytester, "-p", "no:blackbox", "test_big.py", "--junit-xml=true.xml")
    true_outcomes = junit_outcomes(pytester.path / "true.xml")
    store = pytester.path / "store"
    store.mkdir(mode=0o700)
    with mounted("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(store)):
        result = run(pytester, "--blackbox-dir", str(store), *how, "--junit-xml=on.xml")
        no_internal_error(result)
        text = result.stdout.str() + result.stderr.str()
        got = junit_outcomes(pytester.path / "on.xml")
        big = {name: got[name] for name in off_outcomes}
        if how == ["--forked"]:
            for name, outcome in big.items():
                assert outcome in (off_outcomes[name], true_outcomes[name]), (name, text)
            # A passing test, as pytest-forked reports it without the plugin.
            later_ok = {"passed", off_outcomes["test_big[0]"]}
        else:
            assert big == off_outcomes, text
            assert result.ret == off.ret, text
            later_ok = {"passed"}
        assert len(got) == len(off_outcomes) + 3, got
        for name in ("test_later_record", "test_later_append", "test_later_fixture"):
            assert got[name] in later_ok, (name, text)
        # One warning for the run, whichever process hit the full disk (the main process,
        # each worker, every forked child), and none after it for what failed because of it
        # (the history's fold).
        full = [
            line
            for line in text.splitlines()
            if "blackbox:" in line and ("no room" in line or "No space left" in line)
        ]
        assert len(full) == 1, text
        assert "--blackbox-dir" in full[0] and "--blackbox=off" in full[0], full[0]
        # What was committed before the disk filled reads back whole.
        stats = subprocess.run(
            [str(BLACKBOX), "stats", "--json", "--dir", str(store)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert stats.returncode == 0, stats.stderr
        tests = json.loads(stats.stdout)["tests"]
        kept = [t for t in tests if t["properties"].get("blob")]
        assert 3 <= len(kept) < 40, len(kept)
        for t in kept:
            i = t["nodeid"].rsplit("[", 1)[1].rstrip("]")
            assert t["properties"]["blob"] == i * 120_000
        # No test is said to have crashed: each child ended its test (or recorded nothing).
        assert "CRASHED" not in text and not [t for t in tests if t["crashed"]], text


@needs_root
def test_require_keeps_raising_what_a_full_store_cannot_take(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="""
import pytest
import pytest_blackbox

def test_fill(record_property):
    for i in range(40):
        record_property(f"blob{i}", str(i) * 120_000)

def test_after():
    with pytest.raises(pytest_blackbox.StoreFullError):
        for i in range(40):
            pytest_blackbox.record(f"late{i}", "x" * 120_000)
"""
    )
    store = pytester.path / "store"
    store.mkdir(mode=0o700)
    with mounted("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(store)):
        result = run(pytester, "--blackbox=require", "--blackbox-dir", str(store))
    no_internal_error(result)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=2, warnings=1)


@needs_root
def test_a_history_of_another_user_is_refused_and_the_run_goes_on(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_x="def test_x(record_property):\n    record_property('k', 's3cret')\n")
    store = pytester.path / ".blackbox"
    store.mkdir(mode=0o700)
    history = store / "history.redb"
    history.touch()
    os.chown(history, NOBODY, NOBODY)
    history.chmod(0o666)
    result = run(pytester)
    no_internal_error(result)
    assert result.ret == 0
    text = result.stdout.str() + result.stderr.str()
    assert f"owned by uid {NOBODY}" in text and str(history) in text, text
    # One warning for the one cause: the summary's read, the fold and the fold of missing
    # runs are all refused alike (not "damaged" besides).
    assert text.count("BlackboxWarning") == 1, text
    assert text.count(f"owned by uid {NOBODY}") == 1, text
    assert "damaged" not in text, text
    assert history.stat().st_size == 0  # never written into
    # The run itself is recorded, privately: the other user reads none of it.
    (run_dir,) = [p for p in store.iterdir() if p.is_dir()]
    for path in [*run_dir.iterdir(), run_dir]:
        seen = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", str(path)],
            capture_output=True,
            check=False,
        )
        assert seen.returncode != 0 and b"s3cret" not in seen.stdout, path

    # A real history another user planted is not read either: its notes are not ours.
    pytester.makepyfile(
        test_flip="import pathlib\n\ndef test_flip():\n"
        "    assert pathlib.Path('round.txt').read_text() == '0'\n"
    )
    planted = pytester.path / "planted"
    for n in (0, 1):
        (pytester.path / "round.txt").write_text(str(n))
        made = run(pytester, f"--blackbox-dir={planted}", "test_flip.py")
        assert made.ret == n, made.stdout.str()
    made.stdout.fnmatch_lines(["1 flaky over the last 2 runs: *"])
    os.chown(planted / "history.redb", NOBODY, NOBODY)
    (pytester.path / "round.txt").write_text("0")
    result = run(pytester, f"--blackbox-dir={planted}", "test_flip.py")
    no_internal_error(result)
    assert result.ret == 0
    text = result.stdout.str() + result.stderr.str()
    assert "flaky over the last" not in text, text
    assert text.count("BlackboxWarning") == 1, text
    assert text.count(f"owned by uid {NOBODY}") == 1, text
    assert "damaged" not in text, text


# ---------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-o", "blackbox_keep=abc"], ["blackbox_keep", "whole number"]),
        (["--blackbox-keep=-1"], ["--blackbox-keep", "0 or more"]),
        (["--blackbox-keep=abc"], ["--blackbox-keep", "whole number"]),
        (["-o", "blackbox_keep=-2"], ["blackbox_keep", "0 or more"]),
        (["-o", "blackbox_history_keep=abc"], ["blackbox_history_keep", "whole number"]),
        (["--blackbox-history-keep=-1"], ["--blackbox-history-keep", "0 or more"]),
        (["-o", "blackbox_history_max_mb=0"], ["blackbox_history_max_mb", "above 0"]),
        (["--blackbox-history-max-mb=abc"], ["--blackbox-history-max-mb", "abc"]),
        (["--blackbox-history-max-mb=-5"], ["--blackbox-history-max-mb = -5", "above 0"]),
        (["-o", "blackbox_durability=fast"], ["blackbox_durability", "process or system"]),
        (["--blackbox-durability=fast"], ["--blackbox-durability", "process", "system"]),
        (["-o", "blackbox=maybe"], ["blackbox", "on or off", "require"]),
        (["--blackbox=maybe"], ["--blackbox", "on", "off", "require"]),
    ],
)
def test_a_bad_setting_is_a_usage_error_before_any_test(
    pytester: pytest.Pytester, args: list[str], says: list[str]
) -> None:
    pytester.makepyfile(test_x="def test_x():\n    open('ran', 'w').close()\n")
    result = run(pytester, *args)
    err = result.stderr.str()
    assert result.ret == 4, result.stdout.str() + err
    assert "Traceback" not in err and "INTERNALERROR" not in err, err
    for word in says:
        assert word in err, (word, err)
    assert not (pytester.path / "ran").exists()


def test_good_settings_are_taken(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    for _ in range(3):
        result = run(pytester, "--blackbox-keep=2", "-o", "blackbox_history_keep=0")
        assert result.ret == 0, result.stdout.str() + result.stderr.str()
    store = pytester.path / ".blackbox"
    assert len(Store(store).runs()) == 2
    assert not (store / "history.redb").exists()


# ---------------------------------------------------------------------------------------
# The store's files
# ---------------------------------------------------------------------------------------

UMASK_CONFTEST = """
import os
os.umask(0)
"""


@pytest.mark.parametrize("how", [[], ["-n", "2"], ["--forked"]], ids=["plain", "xdist", "forked"])
def test_every_file_of_the_store_is_private_whatever_the_umask(
    pytester: pytest.Pytester, how: list[str]
) -> None:
    pytester.makeconftest(UMASK_CONFTEST)
    pytester.makepyfile(
        test_x="""
import os
import pytest

@pytest.mark.parametrize("i", range(4))
def test_x(i, record_property):
    record_property("i", i)
    assert os.umask(0) == 0
"""
    )
    result = run(pytester, *how)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    store = pytester.path / ".blackbox"
    seen = []
    for path in [store, *store.rglob("*")]:
        st = path.lstat()
        assert not stat.S_ISLNK(st.st_mode), path
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        assert stat.S_IMODE(st.st_mode) == want, (path, oct(st.st_mode))
        seen.append(path.name)
    assert "history.redb" in seen and ".gitignore" in seen, seen
    assert any(n.startswith("seg-") for n in seen), seen


def test_a_passing_forked_test_leaves_8_kib_and_the_store_ignores_itself(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_x="""
import pytest

@pytest.mark.parametrize("i", range(20))
def test_x(i):
    pass
"""
    )
    git = shutil.which("git")
    if git:
        subprocess.run([git, "init", "-q", str(pytester.path)], check=True)
    result = run(pytester, "--forked", "-o", "blackbox_history_keep=0")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    store = pytester.path / ".blackbox"
    (run_dir,) = [p for p in store.iterdir() if p.is_dir()]
    files = sorted(run_dir.iterdir())
    segments = [p for p in files if p.name.startswith("seg-")]
    assert len(segments) == 21, files  # the parent's and one per child
    assert not [p for p in files if p.stat().st_size == 0], files  # no empty attachment
    children = sorted(segments, key=lambda p: p.stat().st_size)[:20]
    for seg in children:
        st = seg.stat()
        assert st.st_size <= 8192 and st.st_blocks * 512 <= 8192, (seg, st)
    assert (store / ".gitignore").read_text().splitlines()[-1] == "*"
    if git:
        status = subprocess.run(
            [git, "status", "--porcelain", "--untracked-files=all"],
            cwd=pytester.path,
            capture_output=True,
            text=True,
            check=True,
        )
        assert ".blackbox" not in status.stdout, status.stdout


# ---------------------------------------------------------------------------------------
# Values JSON has no number for
# ---------------------------------------------------------------------------------------


def test_nan_inf_and_big_ints_are_stored_as_values(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="""
from pytest_blackbox import record

def test_x():
    record("nan", float("nan"))
    record("inf", float("inf"))
    record("ninf", float("-inf"))
    record("big", 2**200)
    record("nbig", -(2**70))
    record("mixed", [1.5, float("nan"), 2**64])
"""
    )
    result = run(pytester, "-W", "error::pytest_blackbox.BlackboxWarning")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    stats = subprocess.run(
        [str(BLACKBOX), "stats", "--json", "--dir", str(pytester.path / ".blackbox")],
        capture_output=True,
        text=True,
        check=True,
    )
    props = json.loads(stats.stdout)["tests"][0]["properties"]
    assert props == {
        "nan": {"$float": "nan"},
        "inf": {"$float": "inf"},
        "ninf": {"$float": "-inf"},
        "big": {"$int": str(2**200)},
        "nbig": {"$int": str(-(2**70))},
        "mixed": [1.5, {"$float": "nan"}, {"$int": str(2**64)}],
    }
    # The Python Store: its JSON view says the same; properties() gives the values.
    run_ = Store(pytester.path / ".blackbox").latest()
    assert run_.tests[0].properties == props
    got = run_.properties(run_.tests[0].nodeid)
    assert math.isnan(got["nan"]) and got["inf"] == math.inf and got["ninf"] == -math.inf
    assert got["big"] == 2**200 and got["nbig"] == -(2**70)
    assert got["mixed"][0] == 1.5 and math.isnan(got["mixed"][1]) and got["mixed"][2] == 2**64
