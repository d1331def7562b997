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
