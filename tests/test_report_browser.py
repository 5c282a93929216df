"""The HTML report in a real headless Chromium: sorting, filtering, no console errors, no network requests.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them) and selenium (test extras);
skipped, saying what is missing, where they cannot be found.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from biobench import report
from biobench.store import Store
from tests.test_report_board import write


def _browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: pip install -e '.[test]'")
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("no headless Chromium here: apt-get install chromium chromium-driver (as .ci/run does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1600"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)


@pytest.fixture
def page(tmp_path):
    rng = np.random.default_rng(3)
    db = tmp_path / "r.sqlite"
    skill = {"a:x": (0.9, 0.55), "b:y": (0.7, 0.8), "c:z": (0.6, 0.7), "d:w": (0.5, 0.65)}
    with Store(db) as store:
        for model, (p_one, p_two) in skill.items():
            for task, p, n in (("one", p_one, 200), ("two", p_two, 150)):
                for n_train in (4, 16, -1):
                    for seed in (0, 1):
                        q = p * (0.6 + 0.1 * np.log2(16 if n_train < 0 else n_train) / 2)
                        write(store, task, model, (rng.random(n) < q).astype(float), seed=seed, n_train=n_train)
    rows = report.load(db)
    board = report.build(rows, db)
    path = tmp_path / "report.html"
    path.write_text(report.to_html(rows, board))
    return path, board


def test_report_sorts_filters_and_stays_offline_in_chromium(page, tmp_path):
    path, board = page
    driver = _browser()
    try:
        driver.get(path.as_uri())
        models = "return Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(r => r.dataset.model)"
        visible = "return Array.from(document.querySelectorAll('#leaderboard tbody tr')).filter(r => !r.hidden).map(r => r.dataset.model)"
        before = driver.execute_script(models)
        assert before == [f"{m} {meth}" for m, meth in board.rows]

        # Click the header of task 'two' (column 4: rank, model, method, one, two): best score first.
        two = board.columns[1]
        expected = [f"{m} {meth}" for m, meth in sorted(two.cells, key=lambda k: -two.cells[k].score)]
        assert expected != before, "the constructed data must order 'two' differently from the mean"
        driver.execute_script("document.querySelectorAll('#leaderboard thead th')[4].click()")
        assert driver.execute_script(models) == expected
        driver.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10_000
        driver.execute_script("document.querySelectorAll('#leaderboard thead th')[4].click()")  # again: ascending
        assert driver.execute_script(models) == expected[::-1]

        box = driver.find_element("id", "filter")
        box.send_keys("b:y")
        assert driver.execute_script(visible) == ["b:y cvml"]
        box.clear()
        box.send_keys("zzz")
        assert driver.execute_script(visible) == []

        assert driver.execute_script("return document.querySelectorAll('#charts canvas').length") == len(board.columns)
        assert driver.execute_script("return typeof Chart") == "function"

        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == [], errors
        requests = []
        for entry in driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                requests.append(msg["params"]["request"]["url"])
        # The page itself, and nothing else: no script, style, font, image or data fetched.
        assert requests and all(u == path.as_uri() for u in requests), requests
    finally:
        driver.quit()
