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

import pytest

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


def _run(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
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
    assert len(fixture_bars) == min(20, len(view["fixtures"]) + len(view["timed"])) > 0
    crash_rows = browser.find_elements(By.CSS_SELECTOR, "#crashes tbody tr")
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
