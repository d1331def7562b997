"""history.redb: the controller folds each finished run in at session end; a run whose
pytest died is folded in by the next session."""

from __future__ import annotations

import pytest

from conftest import no_internal_error, run, store
from pytest_blackbox import _native


def test_finished_and_crashed_runs_reach_history(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_ok():\n    pass\n")
    for args in ([], ["-n", "2"]):
        result = run(pytester, *args)
        no_internal_error(result)
        assert result.ret == 0
    history = pytester.path / ".blackbox" / "history.redb"
    assert history.is_file()
    finished = store(pytester).runs()
    # Folding again replaces: each run is in history already.
    for run_id in finished:
        again = _native.fold_history(str(pytester.path / ".blackbox"), run_id)
        assert again["replaced"] is True and again["tests"] == 1

    pytester.makepyfile(test_a="import os\n\ndef test_dies():\n    os.abort()\n")
    assert run(pytester).ret == -6
    crashed = store(pytester).latest().id
    pytester.makepyfile(test_a="def test_ok():\n    pass\n")
    assert run(pytester).ret == 0  # folds the crashed run on its way in
    again = _native.fold_history(str(pytester.path / ".blackbox"), crashed)
    assert again["replaced"] is True
    assert again["crashes"] == 1


def test_history_can_be_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_ok():\n    pass\n")
    assert run(pytester, "--blackbox-history-keep=0").ret == 0
    assert not (pytester.path / ".blackbox" / "history.redb").exists()


def test_the_ini_size_cap_reaches_the_fold_and_pruned_runs_stay_out(
    pytester: pytest.Pytester,
) -> None:
    """`blackbox_history_max_mb` prunes the oldest runs at each session's end, and a pruned
    run's folder is never folded back in (it was, at every session's end, and pruned again)."""
    pytester.makeini("[pytest]\nblackbox_history_max_mb = 1\n")
    pytester.makepyfile(
        test_many="import pytest\n\n@pytest.mark.parametrize('i', range(2000))\n"
        "def test_n(i, record_property):\n    record_property('i', i)\n"
    )
    for _ in range(5):
        result = run(pytester, "-q")
        no_internal_error(result)
        assert result.ret == 0
    folders = store(pytester).runs()
    assert len(folders) == 5
    held = [r["id"] for r in store(pytester).history.flaky(last=100)["runs"]]
    # The cap pruned (the default of 256 MiB keeps all five), the oldest first.
    assert 0 < len(held) < 5, held
    assert held == folders[::-1][: len(held)]
    path = pytester.path / ".blackbox" / "history.redb"
    assert path.stat().st_size <= (1 << 20) + (600 << 10), path.stat().st_size
    # What a session's end does after its own fold: nothing is left to fold.
    missing = _native.fold_missing(str(pytester.path / ".blackbox"), None, 200, 1.0)
    assert missing == []
    assert [r["id"] for r in store(pytester).history.flaky(last=100)["runs"]] == held
