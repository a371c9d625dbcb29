"""Open a real report in headless Chromium: it must draw every plot, show every image, run no
injected script and log no console error. Saves a full-page screenshot to test-artifacts/.

Skips only when Chromium, chromedriver or selenium are not installed
(apt-get install chromium chromium-driver; pip install selenium).
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import optuna
import pytest
from report_fixtures import HOSTILE, make_study

from gentune.report import write_report

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
)
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Chromium is not installed (apt-get install chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, name = make_study(tmp, name=HOSTILE, n_trials=20, hostile=True, text=True)
    return write_report(storage, name, tmp / "report.html")[0]


@pytest.fixture(scope="module")
def browser(report, tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Leave any alert open so that test_injected_names_show_as_text can see it.
    options.set_capability("unhandledPromptBehavior", "ignore")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.get(report.as_uri())
    # Plotly draws synchronously on load; wait until every plot container has its SVG.
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _no_alert(driver) -> bool:
    try:
        driver.switch_to.alert  # noqa: B018 - raises when there is none
    except NoAlertPresentException:
        return True
    return False


def test_no_console_errors(browser):
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


def test_every_plot_draws(browser):
    containers = browser.find_elements(By.CSS_SELECTOR, "div.plot")
    assert len(containers) >= 6
    for div in containers:
        svgs = div.find_elements(By.CSS_SELECTOR, ".main-svg")
        assert svgs, f"plot {div.get_attribute('id')} drew nothing"
        assert div.size["height"] > 100 and div.size["width"] > 100
    drawn = browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")
    assert len(drawn) >= len(containers)
    # Every figure has data on it, not just axes: scatter points, bars, lines or contours.
    marks = browser.execute_script(
        "return Array.from(document.querySelectorAll('div.plot')).map(function (d) {"
        "  return d.querySelectorAll('path.point, path.js-line, g.bars path, g.contourlevel,"
        "  .parcoords-lines, .trace').length; });"
    )
    assert all(n > 0 for n in marks), marks


def test_gallery_images_load(browser):
    images = browser.find_elements(By.CSS_SELECTOR, ".gallery img")
    assert len(images) >= 5  # real data, best trials, progress strip
    widths = [browser.execute_script("return arguments[0].naturalWidth", img) for img in images]
    assert all(w > 0 for w in widths), widths


def test_injected_names_show_as_text(browser):
    assert _no_alert(browser)
    title = browser.find_element(By.ID, "study-title")
    assert title.is_displayed()
    assert HOSTILE in title.text
    assert HOSTILE in browser.title
    texts = [p.text for p in browser.find_elements(By.CSS_SELECTOR, "#samples pre")]
    assert HOSTILE in texts


def test_table_sorts_by_clicked_header(browser):
    table = browser.find_element(By.ID, "trial-table")
    headers = table.find_elements(By.CSS_SELECTOR, "th")
    fid_col = [h.text for h in headers].index("fid")

    def column():
        cells = table.find_elements(By.CSS_SELECTOR, f"tbody tr td:nth-child({fid_col + 1})")
        return [float(c.get_attribute("data-v")) for c in cells if c.get_attribute("data-v")]

    headers[fid_col].click()
    ascending = column()
    assert len(ascending) >= 10 and ascending == sorted(ascending)
    headers[fid_col].click()
    assert column() == sorted(ascending, reverse=True)
    # Blank cells (trials without a value) stay at the bottom either way.
    last_row = table.find_elements(By.CSS_SELECTOR, "tbody tr")[-1]
    assert last_row.find_elements(By.CSS_SELECTOR, "td")[fid_col].text == ""


def test_full_page_screenshot(browser):
    # Back to trial-number order and to the top of the page for the picture.
    browser.find_element(By.CSS_SELECTOR, "#trial-table th").click()
    browser.execute_script("window.scrollTo(0, 0)")
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    out = REPO / "test-artifacts" / "report.png"
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    assert out.stat().st_size > 50_000


@pytest.mark.parametrize(
    "shape",
    [
        dict(n_objectives=2, n_trials=10, n_pruned=2, text=True),
        dict(n_trials=3, n_failed=1, n_pruned=2),
        dict(n_trials=5, n_pruned=1, params=("lr",), images=False),
    ],
    ids=["two-objectives", "none-completed", "one-param"],
)
def test_other_study_shapes_render_cleanly(browser, tmp_path, shape):
    """Runs last: it navigates the shared browser away from the main report."""
    storage, name = make_study(tmp_path, **shape)
    browser.get(write_report(storage, name, tmp_path / "report.html")[0].as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    for div in browser.find_elements(By.CSS_SELECTOR, "div.plot"):
        assert div.find_elements(By.CSS_SELECTOR, ".main-svg"), div.get_attribute("id")
    assert browser.find_elements(By.CSS_SELECTOR, "#trial-table tbody tr")
