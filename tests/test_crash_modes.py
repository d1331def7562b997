"""A test records properties and dies: the report, JUnit XML and the store still have them.

Every way to die (segfault, abort, SIGKILL, os._exit) in every mode where a parent process
survives to report (--forked, -n 2, -n 2 --forked).
"""

from __future__ import annotations

import pytest

from conftest import (
    DEATHS,
    REPORTS_CONFTEST,
    junit_outcomes,
    junit_properties,
    no_internal_error,
    reports_of,
    run,
    store,
)

SUITE = """
import ctypes, os, signal
from pytest_blackbox import record, append

def test_before(record_property):
    record_property("ok", 1)

def test_dies(record_property):
    record("model", "resnet50")
    record_property("pcc", 0.99)
    append("comparison", {{"name": "out0", "pcc": 0.99}})
    {death}

def test_after():
    record("after", True)
"""

SIGNALS = {"segv": 11, "abort": 6, "sigkill": 9, "exit": None}
PARENT_MODES = {
    "forked": ["--forked"],
    "xdist": ["-n", "2"],
    "xdist_forked": ["-n", "2", "--forked"],
}


@pytest.mark.parametrize("death", sorted(DEATHS))
@pytest.mark.parametrize("mode", sorted(PARENT_MODES))
def test_crashed_test_keeps_its_properties(
    pytester: pytest.Pytester, mode: str, death: str
) -> None:
    pytester.makeconftest(REPORTS_CONFTEST)
    pytester.makepyfile(test_suite=SUITE.format(death=DEATHS[death]))
    xml = pytester.path / "junit.xml"
    result = run(pytester, *PARENT_MODES[mode], f"--junit-xml={xml}")
    no_internal_error(result)
    assert result.ret == 1

    # The report pytest (and every plugin) saw carries what the test recorded.
    failed = [r for r in reports_of(pytester, "test_dies") if r.outcome == "failed"]
    assert len(failed) == 1, reports_of(pytester, "test_dies")
    crash = failed[0]
    assert crash.props["model"] == "'resnet50'"
    assert crash.props["pcc"] == "0.99"
    assert crash.props["comparison"] == "[{'name': 'out0', 'pcc': 0.99}]"
    assert crash.when == "call", "the crash report names the phase that died"
    if death == "exit":
        assert "call exited with status 3" in crash.longrepr
    else:
        # xdist's controller reads its worker's exit status (SIGKILL included).
        assert f"call crashed with {_name(SIGNALS[death])}" in crash.longrepr, crash.longrepr
    if death in ("segv", "abort"):
        assert "Python traceback at the crash" in crash.longrepr
        assert "test_dies" in crash.longrepr.split("Python traceback at the crash")[1]

    # JUnit XML has them as <property> of that <testcase>.
    props = junit_properties(xml)
    assert props["test_dies"] == {
        "model": "resnet50",
        "pcc": "0.99",
        "comparison": "[{'name': 'out0', 'pcc': 0.99}]",
    }
    assert props["test_before"] == {"ok": "1"}
    outcomes = junit_outcomes(xml)
    assert outcomes["test_dies"] == "failure"
    assert outcomes["test_before"] == outcomes["test_after"] == "passed"

    # The store attributes the crash to the test, its process and worker.
    run_ = store(pytester).latest()
    crashes = [c for c in run_.crashes if c.nodeid and c.nodeid.endswith("::test_dies")]
    assert len(crashes) == 1, run_.crashes
    c = crashes[0]
    assert c.pid and c.phase == "call"
    if mode.startswith("xdist"):
        assert c.worker in ("gw0", "gw1", "gw2", "gw3")
    assert c.signal == SIGNALS[death]
    if death == "exit":
        assert c.exit_code == 3
    tests = {t.nodeid.split("::")[-1]: t for t in run_.tests}
    assert tests["test_dies"].outcome == "crashed"
    assert tests["test_dies"].properties["model"] == "resnet50"
    # The tests after it (on a restarted worker, or in the next child) record normally.
    assert tests["test_after"].outcome == "passed"
    assert run_.properties(tests["test_after"].nodeid) == {"after": True}
    assert tests["test_before"].outcome == "passed"


def _name(sig: int | None) -> str:
    return {11: "SIGSEGV", 6: "SIGABRT", 9: "SIGKILL"}.get(sig or 0, "?")


def test_the_born_case_forked_abort_repro(pytester: pytest.Pytester) -> None:
    """`pytest test_forked_abort_repro.py::test_simulated_abort --forked
    --junit-xml=abort.xml`, then `grep property abort.xml` finds them."""
    pytester.makepyfile(
        test_forked_abort_repro="""
        import os
        from pytest_blackbox import record, append

        def test_simulated_abort(record_property):
            record("model", "resnet50")
            record_property("pcc", 0.99)
            append("comparison", {"output": 0, "pcc": 0.99, "atol": 1e-3})
            os.abort()
        """
    )
    result = run(
        pytester,
        "test_forked_abort_repro.py::test_simulated_abort",
        "--forked",
        "--junit-xml=abort.xml",
    )
    no_internal_error(result)
    lines = [ln for ln in (pytester.path / "abort.xml").read_text().split("<") if "property " in ln]
    assert any('name="model" value="resnet50"' in ln for ln in lines), lines
    assert any('name="pcc" value="0.99"' in ln for ln in lines), lines
    assert any('name="comparison"' in ln for ln in lines), lines
    result.stdout.fnmatch_lines(["*CRASHED*test_simulated_abort*SIGABRT in call*"])


def test_crash_in_setup_and_teardown_names_the_phase(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(REPORTS_CONFTEST)
    pytester.makepyfile(
        test_phases="""
        import os, pytest
        from pytest_blackbox import record

        @pytest.fixture
        def dies_in_setup():
            record("where", "setup")
            os.abort()

        @pytest.fixture
        def dies_in_teardown():
            yield
            record("where", "teardown")
            os.abort()

        def test_setup_dies(dies_in_setup):
            pass

        def test_teardown_dies(dies_in_teardown):
            record("call", "done")
        """
    )
    xml = pytester.path / "junit.xml"
    result = run(pytester, "--forked", f"--junit-xml={xml}")
    no_internal_error(result)
    setup = next(r for r in reports_of(pytester, "test_setup_dies") if r.outcome == "failed")
    assert setup.when == "setup"
    assert "blackbox: setup crashed with SIGABRT" in setup.longrepr
    teardown = next(r for r in reports_of(pytester, "test_teardown_dies") if r.outcome == "failed")
    assert teardown.when == "teardown"
    assert "setup passed, call passed, teardown crashed with SIGABRT" in teardown.longrepr
    props = junit_properties(xml)
    assert props["test_setup_dies"] == {"where": "setup"}
    assert props["test_teardown_dies"] == {"call": "done", "where": "teardown"}
