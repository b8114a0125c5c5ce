"""The HTML report in a real headless Chromium: grids render, clicking a cell changes the head view,
token text is shown literally and never executed. A screenshot is kept in test-artifacts/.

Needs Debian's chromium + chromedriver (``apt-get install -y chromium chromium-driver``) and the
``selenium`` package; skipped with a message otherwise. Selenium is given the driver and browser
paths explicitly, so it never tries to download anything.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from headlab.measure.maps import write_html_report
from headlab.report.synthetic import write_synthetic_scan

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1700",
]

EVIL = "<script>alert(1)</script>"
IMG = '<img src=x onerror="window.__pwned=1">'
TOKENS = ["The", " cat", " &", f" {EVIL}", " \"quoted\" & 'single'", " sat", "\n", IMG, " on", " the", " mat", "."] * 4


@pytest.fixture(scope="module")
def driver():
    if not (CHROMIUM and DRIVER):
        pytest.skip(
            "chromium/chromedriver not found: install with `apt-get update && apt-get install -y chromium chromium-driver`"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed: pip install selenium")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    profile = tempfile.mkdtemp(prefix="headlab-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scan")
    tm = write_synthetic_scan(folder, TOKENS, n_layers=6, n_heads=4, model=f"evil{EVIL}model")
    meta = json.loads((folder / "meta.json").read_text())
    meta["command"] = f"headlab scan --text '{EVIL}' --html"
    (folder / "meta.json").write_text(json.dumps(meta))
    return write_html_report(folder, head_maps=[tm])


def _open(driver, page):
    driver.get(page.as_uri())
    return driver.execute_script("return document.body.getAttribute('data-ready')")


def test_grid_and_head_view_render(driver, report):
    assert _open(driver, report) == "1"
    cards = driver.find_elements("css selector", "#atlas-grids .gcard[data-metric]")
    assert [c.get_attribute("data-metric") for c in cards] == ["sink", "entropy", "prev_token", "distance", "induction"]
    for c in cards:
        assert len(c.find_elements("css selector", ".cell")) == 6 * 4
    # colours come from the data: the sink grid is not one flat colour
    colours = {c.value_of_css_property("background-color") for c in cards[0].find_elements("css selector", ".cell")}
    assert len(colours) > 2
    title = driver.find_element("id", "head-title").text
    assert title.startswith("L0H0")
    canvas = driver.find_element("id", "map-canvas")
    assert int(canvas.get_attribute("width")) >= 12 * 4  # exact map, scaled up
    rows = driver.find_elements("css selector", "#topk-table tr")
    assert len(rows) == 1 + 5  # header + top-5 keys
    assert driver.find_elements("css selector", "#compare-body .gcard")  # before / after / diff grids
    assert "headlab scan --text" in driver.find_element("id", "prov-command").text
    logs = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not logs, logs


def test_click_changes_head_view(driver, report):
    assert _open(driver, report) == "1"
    before = driver.find_element("id", "topk-table").text
    cell = driver.find_element("css selector", '#atlas-grids .gcard[data-metric="sink"] .cell[data-layer="3"][data-head="2"]')
    cell.click()
    view = driver.find_element("id", "head-view")
    assert (view.get_attribute("data-layer"), view.get_attribute("data-head")) == ("3", "2")
    assert driver.find_element("id", "head-title").text.startswith("L3H2")
    assert "sel" in cell.get_attribute("class").split()
    assert driver.find_element("id", "topk-table").text != before
    # clicking the map picks a query row: the top-k table follows
    q = driver.find_element("id", "query-input")
    assert q.get_attribute("value") == str(len(TOKENS) - 1)
    canvas = driver.find_element("id", "map-canvas")
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element_with_offset(canvas, 0, -canvas.size["height"] // 2 + 3).click().perform()
    assert driver.find_element("id", "query-input").get_attribute("value") == "0"
    ARTIFACTS.mkdir(exist_ok=True)
    driver.execute_script("window.scrollTo({top: 0, behavior: 'instant'})")
    driver.save_screenshot(str(ARTIFACTS / "report_atlas.png"))
    driver.execute_script("document.getElementById('head').scrollIntoView({behavior: 'instant'})")
    driver.save_screenshot(str(ARTIFACTS / "report_head.png"))


def test_token_text_is_shown_literally_and_never_runs(driver, report):
    from selenium.common.exceptions import NoAlertPresentException

    assert _open(driver, report) == "1"
    driver.find_element("css selector", '.cell[data-layer="1"][data-head="1"]').click()
    driver.execute_script("var i = document.getElementById('query-input'); i.value = '8'; i.dispatchEvent(new Event('change'))")
    context = driver.find_element("id", "query-context").text
    assert EVIL in context and IMG in context and "\"quoted\" & 'single'" in context
    assert EVIL in driver.find_element("id", "prov-command").text
    assert EVIL in driver.find_element("id", "model-name").text
    assert driver.execute_script("return window.__pwned") is None
    assert driver.execute_script("return document.images.length") == 0
    assert driver.execute_script("return document.scripts.length") == 2
    with pytest.raises(NoAlertPresentException):
        _ = driver.switch_to.alert.text
