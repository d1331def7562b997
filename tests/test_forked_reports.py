"""--forked on today's pytest: the parent reports what the child really reported.

pytest-forked 1.7.5 on pytest 9.2 cannot marshal the reports (NodeId) and reports every
test as "EXITED with status 3"; the child records each phase's report in the store and the
parent gives pytest those. `make test` runs this file on pytest 9.2.x and 9.1.x.
"""

from __future__ import annotations

import pytest

from conftest import REPORTS_CONFTEST, junit_outcomes, no_internal_error, reports, run

SUITE = """
import pytest
from pytest_blackbox import record

def test_passes(record_property):
    record_property("answer", 42)
    print("hello from the child")

def test_fails():
    record("before", "assert")
    assert 1 + 1 == 3, "arithmetic is broken"

@pytest.mark.skip(reason="not today")
def test_skipped():
    pass

@pytest.mark.xfail(reason="known bug", strict=True)
def test_xfails():
    assert False

@pytest.fixture
def broken():
    raise RuntimeError("setup is broken")

def test_setup_error(broken):
    pass
"""


@pytest.mark.parametrize("xdist", [False, True], ids=["forked", "xdist_forked"])
def test_parent_reports_the_childs_true_outcomes(pytester: pytest.Pytester, xdist: bool) -> None:
    pytester.makeconftest(REPORTS_CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    xml = pytester.path / "junit.xml"
    args = ["--forked", f"--junit-xml={xml}", "-rA"] + (["-n", "2"] if xdist else [])
    result = run(pytester, *args)
    no_internal_error(result)
    result.assert_outcomes(passed=1, failed=1, skipped=1, xfailed=1, errors=1)
    out = result.stdout.str()
    assert "EXITED with status" not in out
    assert "CRASHED" not in out

    by_test = {}
    for r in reports(pytester):
        by_test.setdefault(r.nodeid.split("::")[-1], {})[r.when] = r
    passes = by_test["test_passes"]
    assert set(passes) == {"setup", "call", "teardown"}
    assert passes["call"].outcome == "passed"
    assert passes["call"].props == {"answer": "42"}
    assert any("hello from the child" in text for _, text in passes["call"].sections)
    fails = by_test["test_fails"]["call"]
    assert fails.outcome == "failed"
    assert "arithmetic is broken" in fails.longrepr
    assert "assert 1 + 1 == 3" in fails.longrepr
    assert by_test["test_skipped"]["setup"].outcome == "skipped"
    assert by_test["test_xfails"]["call"].outcome == "skipped"  # pytest's xfail encoding
    setup_error = by_test["test_setup_error"]["setup"]
    assert setup_error.outcome == "failed"
    assert "setup is broken" in setup_error.longrepr

    assert junit_outcomes(xml) == {
        "test_passes": "passed",
        "test_fails": "failure",
        "test_skipped": "skipped",
        "test_xfails": "skipped",
        "test_setup_error": "error",
    }
