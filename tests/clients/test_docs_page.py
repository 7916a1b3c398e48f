"""/docs in a real browser: Debian's headless Chromium driven by selenium.

The page loads with no console errors and nothing from another host, lists every
operation of the document, and "Try it out" → "Execute" on GET /health shows 200.
A screenshot is left in ``var/screenshots/docs.png``.
"""

import os
import shutil

import pytest
import requests

from tests.system.processes import ROOT

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOTS = os.path.join(ROOT, "var", "screenshots")

webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="needs Debian's chromium and chromium-driver (apt-get install)",
    ),
]


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,2400"):
        options.add_argument(argument)
    options.add_argument("--disable-dev-shm-usage")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_docs_page_works_in_a_browser(stack, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    document = requests.get(f"{stack.api}/openapi.json", timeout=10).json()
    browser.get(f"{stack.api}/docs")
    wait = WebDriverWait(browser, 20)
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))

    # every operation of the document is listed
    shown = {
        (block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text.lower(),
         block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path"))
        for block in browser.find_elements(By.CSS_SELECTOR, ".opblock")
    }  # fmt: skip
    documented = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert shown == documented

    # everything the page loaded came from the gateway
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(entry => entry.name)"
    )
    assert loaded and all(url.startswith(stack.api) for url in loaded), loaded

    # Try it out → Execute on GET /health
    health = browser.find_element(
        By.XPATH, "//div[contains(@class, 'opblock-get')][.//*[@data-path='/health']]"
    )
    health.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(lambda _: health.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
    health.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    wait.until(lambda _: health.find_elements(By.CSS_SELECTOR, ".execute"))
    health.find_element(By.CSS_SELECTOR, ".execute").click()
    status = wait.until(
        lambda _: health.find_elements(
            By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"
        )
    )
    assert status[0].text.strip() == "200"
    browser.execute_script("arguments[0].scrollIntoView()", health)

    os.makedirs(SCREENSHOTS, exist_ok=True)
    browser.save_screenshot(os.path.join(SCREENSHOTS, "docs.png"))

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
