"""`blackbox report --html` in a real browser.

Headless Chromium opens the report of a sample run (three xdist-like workers and one worker
process SIGKILLed in the middle of a test): the page renders with no console error and no
network request, every test is a bar, the crash is a red bar, hovering a bar shows the test,
and a nodeid or property holding markup shows as text. A screenshot goes to
tests/artifacts/report.png.

The store is written by the Rust example `sample_run` (built on demand with cargo), and the
report by the CLI binary at target/release/blackbox (`make develop` builds it); this test does
not import pytest_blackbox.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import crashing_sessions, run_pytest

ROOT = Path(__file__).resolve().parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
if not TARGET.is_absolute():
    TARGET = ROOT / TARGET
BLACKBOX = TARGET / "release" / "blackbox"
SAMPLE_RUN = TARGET / "release" / "examples" / "sample_run"
ARTIFACTS = ROOT / "tests" / "artifacts"
HOSTILE_NODEID = "tests/test_escape.py::test_html[<script>alert(1)</script>]"
HOSTILE_PROPERTY = "<img src=x onerror=alert(2)>"
CRASH_RED = "rgb(217, 45, 32)"

pytestmark = pytest.mark.chromium


def _run(
    *args: str | Path, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BLACKBOX_DIR"}
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not BLACKBOX.exists():
        pytest.skip(
            f"{BLACKBOX} is not built: run `make develop` "
            "(or `cargo build --release -p blackbox-core --bin blackbox`)"
        )
    if not SAMPLE_RUN.exists():
        cargo = shutil.which("cargo")
        if cargo is None:
            pytest.skip(f"{SAMPLE_RUN} is not built and cargo is not on PATH to build it")
        built = subprocess.run(
            [cargo, "build", "--release", "-q", "-p", "blackbox-core", "--example", "sample_run"],
            cwd=ROOT,
            env={**os.environ, "CARGO_TARGET_DIR": str(TARGET)},
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        assert built.returncode == 0, built.stderr
    store = tmp_path_factory.mktemp("report") / ".blackbox"
    made = _run(SAMPLE_RUN, store, "--tests", "90", "--workers", "4")
    assert made.returncode == 0, made.stderr
    return store


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (requirements-dev.txt)"
    )
    binary = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
    )
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("chromium and chromium-driver are not installed: run `make system-deps`")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=driver_path)
    )
    try:
        yield driver
    finally:
        driver.quit()


def test_report_renders_every_test_as_a_bar_with_details_on_hover(
    sample_store: Path, browser, tmp_path: Path
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    stats = _run(BLACKBOX, "stats", "--json", "--dir", sample_store)
    assert stats.returncode == 0, stats.stderr
    view = json.loads(stats.stdout)
    tests = view["tests"]
    crashed = [i for i, t in enumerate(tests) if t["crashed"]]
    assert len(tests) == 92 and len(crashed) == 1, [t["outcome"] for t in tests]

    page = tmp_path / "report.html"
    made = _run(BLACKBOX, "report", "--html", page, "--dir", sample_store)
    assert made.returncode == 0, made.stderr
    assert made.stderr == ""
    html = page.read_text(encoding="utf-8")
    # Self-contained: nothing to fetch, and record text never becomes markup.
    assert re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html) is None
    assert "<script>alert(1)" not in html and HOSTILE_PROPERTY not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the failed-tests table
    assert "\\u003cscript\\u003ealert(1)" in html  # the tooltip data

    browser.get(page.as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - reading it is the check
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0

    bars = browser.find_elements(By.CSS_SELECTOR, "#timeline-svg rect.bar")
    assert len(bars) == len(tests)
    red = browser.find_elements(By.CSS_SELECTOR, "#timeline-svg rect.bar.o-crashed")
    assert [int(b.get_attribute("data-i")) for b in red] == crashed
    assert browser.execute_script("return getComputedStyle(arguments[0]).fill", red[0]) == CRASH_RED
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline-svg .crash-mark")) == 1
    lanes = browser.find_elements(By.CSS_SELECTOR, "#timeline-svg .lane-label")
    assert [e.text for e in lanes] == ["gw0", "gw1", "gw2", "gw3", "gw4"]
    fixture_bars = browser.find_elements(By.CSS_SELECTOR, "#fixtures-svg rect.fbar")
    # The fixtures `blackbox fixtures` lists (pytest's own left out unless they cost 1%).
    listed = json.loads(_run(BLACKBOX, "fixtures", "--json", "--dir", sample_store).stdout)
    assert "tmp_path" in {f["name"] for f in view["fixtures"]}
    assert "tmp_path" not in {f["name"] for f in listed["fixtures"]}
    assert len(fixture_bars) == min(20, len(listed["fixtures"]) + len(listed["timed"])) > 0
    crash_rows = browser.find_elements(By.CSS_SELECTOR, "#crashes .crash")
    assert len(crash_rows) == len(view["crashes"]) == 1
    assert tests[crashed[0]]["nodeid"] in crash_rows[0].text

    # Hover: the markup in a nodeid and a property is shown as text, and nothing runs.
    tip = browser.find_element(By.ID, "tip")
    hostile = next(i for i, t in enumerate(tests) if t["nodeid"] == HOSTILE_NODEID)
    bar = browser.find_element(By.CSS_SELECTOR, f'#timeline-svg rect.bar[data-i="{hostile}"]')
    ActionChains(browser).move_to_element(bar).perform()
    WebDriverWait(browser, 5).until(lambda d: tip.is_displayed())
    assert HOSTILE_NODEID in tip.text and HOSTILE_PROPERTY in tip.text
    markup = "return document.querySelectorAll('#tip *:not(div):not(span)').length"
    assert browser.execute_script(markup) == 0

    # The screenshot: the whole page, the crashed test's tooltip showing.
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(max(height + 140, 1000), 4000))
    ActionChains(browser).move_to_element(red[0]).perform()
    WebDriverWait(browser, 5).until(lambda d: tests[crashed[0]]["nodeid"] in tip.text)
    text = tip.text
    assert "crashed" in text and "gw4" in text and "input_shape" in text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []


@pytest.fixture(scope="module")
def forked_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the second of two `--forked` sessions (history.redb holds both)."""
    if not BLACKBOX.exists():
        pytest.skip(f"{BLACKBOX} is not built: run `make develop`")
    root = tmp_path_factory.mktemp("forked-report")
    crashing_sessions(root, "--forked")
    page = root / "report.html"
    made = _run(BLACKBOX, "report", "--html", page, cwd=root)
    assert made.returncode == 0 and made.stderr == "", made.stderr
    assert "5 tests, 2 crashes" in made.stdout
    return page


def _visible_in(shot_size: tuple[int, int], element: Any) -> bool:
    r = element.rect
    return (
        element.is_displayed()
        and r["width"] > 0
        and r["height"] > 0
        and r["x"] + r["width"] <= shot_size[0] + 1
        and r["y"] + r["height"] <= shot_size[1] + 1
    )


def test_report_of_a_forked_run_tells_the_crash_story(forked_report: Path, browser) -> None:
    from selenium.webdriver.common.by import By

    html = forked_report.read_text(encoding="utf-8")
    assert re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html) is None
    browser.set_window_size(1400, 1000)
    browser.get(forked_report.as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(height + 140, 6000))
    size = tuple(browser.execute_script("return [window.innerWidth, window.innerHeight]"))
    find = browser.find_elements

    # Badges: outcomes once each, no "1 crash" beside "2 crashed"; counts in plain English.
    chips = [c.text for c in find(By.CSS_SELECTOR, ".chips .chip")]
    assert chips == ["5 tests", "2 passed", "1 failed", "2 crashed"], chips
    assert (
        "python -m pytest -p no:cacheprovider --forked"
        in browser.find_element(By.TAG_NAME, "header").text
    )

    # The crash section: each crash with the end of its traceback inline.
    crashes = find(By.CSS_SELECTOR, "#crashes .crash")
    assert len(crashes) == 2
    segv = next(c for c in crashes if "test_segv" in c.find_element(By.TAG_NAME, "h3").text)
    tb = segv.find_element(By.CSS_SELECTOR, "pre.tb")
    assert re.search(r'File ".*test_suite\.py", line \d+ in test_segv', tb.text), tb.text
    assert "SIGSEGV" in segv.text and "worker main" in segv.text
    exited = next(c for c in crashes if c is not segv)
    assert "exited with status 3" in exited.text and "No Python traceback" in exited.text

    # Slowest tests, properties of failed and crashed tests in sight, recent runs.
    slow = find(By.CSS_SELECTOR, "#slowest tbody tr")
    assert len(slow) == 5 and "test_ok" in slow[0].text
    rows = {
        r.find_element(By.CSS_SELECTOR, "td.id").text: r
        for r in find(By.CSS_SELECTOR, "#not-passed tbody tr")
    }
    segv_row = rows["test_suite.py::test_segv"]
    props = segv_row.find_element(By.CSS_SELECTOR, ".props")
    assert "model = resnet50" in props.text and "pcc = 0.5" in props.text
    assert "input_shape = [1,3,224,224]" in rows["test_suite.py::test_fail"].text
    strip = segv_row.find_elements(By.CSS_SELECTOR, ".strip i")
    assert [s.get_attribute("class") for s in strip] == ["o-crashed", "o-crashed"]
    assert [
        s.get_attribute("class")
        for s in rows["test_suite.py::test_fail"].find_elements(By.CSS_SELECTOR, ".strip i")
    ] == ["o-failed", "o-failed"]

    # One lane for the main process, with the forked children's tests on it.
    lanes = [e.text for e in find(By.CSS_SELECTOR, "#timeline-svg .lane-label")]
    assert lanes == ["main"]
    assert [e.text for e in find(By.CSS_SELECTOR, "#timeline-svg .lane-sub")] == ["5 forked"]
    assert len(find(By.CSS_SELECTOR, "#timeline-svg rect.bar")) == 5

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report-forked.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    # Everything checked above is on the screenshot, not hidden or outside it.
    for element in [*crashes, tb, props, *strip, slow[0], *find(By.CSS_SELECTOR, ".chip")]:
        assert _visible_in(size, element), element.text


FLIPPING_SUITE = """
import pathlib
ROUND = int(pathlib.Path(__file__).with_name("round.txt").read_text())

def test_flips():
    assert ROUND % 2 == 0

def test_steady():
    pass
"""


def _strips(section: str) -> dict[str, list[tuple[str, str]]]:
    """Each row's test and its strip: (run id, outcome) per square, oldest first."""
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", section, re.S):
        nodeid = re.search(r'<td class="id mono">(.*?)</td>', row)
        if nodeid:
            rows[nodeid.group(1)] = re.findall(r'<i class="[^"]*" title="([^":]+): ([^"]+)"', row)
    return rows


def _section(html: str, name: str) -> str:
    found = re.search(rf'<section id="{name}">(.*?)</section>', html, re.S)
    return found.group(1) if found else ""


def test_a_report_strips_flaky_tests_with_the_runs_up_to_its_own(tmp_path: Path) -> None:
    """Four sessions of a test that fails every other run: each run's report shows it as
    flaky (also where it passed), over that run and the ones before it, never a later one."""
    if not BLACKBOX.exists():
        pytest.skip(f"{BLACKBOX} is not built: run `make develop`")
    (tmp_path / "test_suite.py").write_text(FLIPPING_SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    for n in range(4):
        (tmp_path / "round.txt").write_text(str(n))
        status, out = run_pytest(tmp_path)
        assert status == (1 if n % 2 else 0), out
    runs = sorted(p.name for p in (tmp_path / ".blackbox").iterdir() if p.is_dir())
    assert len(runs) == 4
    flips = "test_suite.py::test_flips"
    outcome = ["passed", "failed"] * 2
    for i, run_id in enumerate(runs):
        page = tmp_path / f"{run_id}.html"
        made = _run(BLACKBOX, "report", "--html", page, "--run", run_id, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        html = page.read_text(encoding="utf-8")
        expect = list(zip(runs[: i + 1], outcome[: i + 1]))
        flaky = _section(html, "flaky")
        if i == 0:
            assert flaky == "", "one run cannot show a flip"
        else:
            # Flaky, with its strip, whether it passed (rounds 2) or failed this run.
            assert f"Flaky over the last {i + 1} runs (1)" in flaky, flaky
            assert _strips(flaky) == {flips: expect}, (i, flaky)
            assert f'<td class="outcome o-{outcome[i]}">{outcome[i]}</td>' in flaky
        failed = _strips(_section(html, "not-passed"))
        if outcome[i] == "failed":
            assert failed == {flips: expect}, (i, failed)
        else:
            assert failed == {}
        # `show --run` tells the same runs, newest first.
        shown = _run(BLACKBOX, "show", flips, "--run", run_id, "--json", cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        points = json.loads(shown.stdout)["history"]["runs"]
        assert [(p["run"], p["outcome"]) for p in points] == expect[::-1], (i, points)


def test_a_report_of_5000_tests_is_small_and_renders_fast(
    browser, tmp_path: Path, sample_store: Path
) -> None:
    """The figures docs/cli.md gives: file size and time to load in headless Chromium."""
    import time

    store = tmp_path / ".blackbox"
    made = _run(SAMPLE_RUN, store, "--tests", "5000", "--workers", "4")
    assert made.returncode == 0, made.stderr
    page = tmp_path / "report.html"
    assert _run(BLACKBOX, "report", "--html", page, "--dir", store).returncode == 0
    size = page.stat().st_size
    browser.get("about:blank")
    start = time.perf_counter()
    browser.get(page.as_uri())  # returns once the page has loaded
    loaded = time.perf_counter() - start
    bars = browser.execute_script(
        "return document.querySelectorAll('#timeline-svg rect.bar').length"
    )
    print(f"5,000-test report: {size / 1e6:.2f} MB, loaded in {loaded:.2f} s")
    assert bars == 5002
    assert size < 2_000_000, size
    assert loaded < 2.0, loaded
