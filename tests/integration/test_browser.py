"""The page, in headless Chromium from Debian's packages, against the whole stack through nginx.

Selenium drives /usr/bin/chromium through /usr/bin/chromedriver (both from apt: `chromium`,
`chromium-driver`; devtools/install-system-deps.sh installs them). Selenium Manager is never
asked for anything, so nothing is downloaded. Screenshots go to test-artifacts/ at the repo root.
"""

import os
import re
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR, TEST_MODEL_DIR

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = PROJECT_DIR / "test-artifacts"
# No sandbox (CI runs as root), and nothing that would reach beyond loopback by itself.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
WAIT_S = 30


@pytest.fixture(scope="module")
def webdriver():
    """Selenium's webdriver module, or a skip naming what is missing."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(
            f"needs Debian's {CHROMIUM} and {CHROMEDRIVER}: "
            "apt-get install chromium chromium-driver (devtools/install-system-deps.sh does it)"
        )
    selenium = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev dependency group)")
    # Belt and braces: with a driver path given Selenium skips its manager; offline it could not fetch either.
    os.environ.setdefault("SE_OFFLINE", "true")
    return selenium


@pytest.fixture(scope="module")
def open_browser(webdriver, tmp_path_factory):
    """Return a function that starts a headless Chromium; every one started is quit at the end."""
    from selenium.webdriver.chrome.service import Service

    drivers = []

    def start(javascript=True, width=1024, height=900):
        profile = tmp_path_factory.mktemp("chromium-profile")
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        if not javascript:
            options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
        service = Service(executable_path=str(CHROMEDRIVER), log_output=str(profile / "chromedriver.log"))
        driver = webdriver.Chrome(service=service, options=options)
        drivers.append(driver)
        driver.set_page_load_timeout(WAIT_S)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


def wait_for(driver, condition):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A form post replaces the page while the condition polls: an element found on the old page
    # goes stale, which only means "look again".
    return WebDriverWait(driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def shown_result(driver):
    """Return the result section once it is shown with a label, else False (for wait_for)."""
    from selenium.webdriver.common.by import By

    section = driver.find_element(By.ID, "result")
    return section if section.is_displayed() and driver.find_element(By.ID, "result-label").text else False


def read_result(driver) -> dict:
    from selenium.webdriver.common.by import By

    def text(element_id):
        return driver.find_element(By.ID, element_id).text.strip()

    bar = driver.find_element(By.CSS_SELECTOR, "#result-bar span")
    return {
        "label": text("result-label"),
        "score": float(text("result-score")),
        "percent": text("result-percent"),
        "bar_width": bar.get_attribute("style"),
        "container_id": text("result-container"),
        "request_id": text("result-request"),
        "page_container_id": text("page-container"),
        "error_shown": driver.find_element(By.ID, "error").is_displayed(),
    }


def save_screenshot(driver, name, fit=True):
    """Save a screenshot under test-artifacts/; with `fit`, the window first grows to the whole page."""
    ARTIFACTS.mkdir(exist_ok=True)
    if fit:
        width = driver.get_window_size()["width"]
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, height + 140)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    assert path.stat().st_size > 10_000
    return path


def facade_of(container_id, stack):
    """Return the facade port a native container ID (`<hostname>-<port>`) names, or None."""
    match = re.search(r"-(\d+)$", container_id)
    return int(match.group(1)) if match and int(match.group(1)) in stack.facade_ports else None


def check_result(result, stack, serving_model_dir):
    assert result["label"] in {"POSITIVE", "NEGATIVE"}
    assert 0.0 <= result["score"] <= 1.0
    assert result["bar_width"] == f"width: {result['percent']}%;"
    assert facade_of(result["container_id"], stack) is not None
    assert facade_of(result["page_container_id"], stack) is not None
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", result["request_id"])
    assert not result["error_shown"]
    if serving_model_dir == TEST_MODEL_DIR:
        assert result["label"] == "POSITIVE"


def test_with_javascript_the_result_appears_without_a_reload(open_browser, shared_stack, serving_model_dir):
    from selenium.webdriver.common.by import By

    driver = open_browser()
    driver.get(shared_stack.url)
    assert driver.title == "Sentiment analysis"
    assert "Ctrl+Enter" in driver.find_element(By.ID, "text-hint").text  # the script ran
    driver.execute_script("window.sameDocument = 'yes';")

    box = driver.find_element(By.ID, "text")
    box.send_keys("It is worth it")
    driver.find_element(By.ID, "submit").click()
    wait_for(driver, shown_result)

    result = read_result(driver)
    check_result(result, shared_stack, serving_model_dir)
    assert driver.execute_script("return window.sameDocument") == "yes", "the page was reloaded"
    assert driver.current_url == shared_stack.url
    assert box.get_attribute("value") == "It is worth it"
    save_screenshot(driver, "page.png")


def test_with_javascript_a_rejected_text_is_explained_in_words(open_browser, shared_stack):
    from selenium.webdriver.common.by import By

    driver = open_browser()
    driver.get(shared_stack.url)
    # Past the server's limit (the box's maxlength stops typing there, so set it directly).
    driver.execute_script(
        "const box = document.getElementById('text'); box.removeAttribute('maxlength'); box.value = 'a'.repeat(10001);"
    )
    driver.find_element(By.ID, "submit").click()
    error = wait_for(
        driver, lambda d: d.find_element(By.ID, "error") if d.find_element(By.ID, "error").is_displayed() else False
    )

    assert "over the limit of 10000" in error.text
    assert error.get_attribute("role") == "alert"
    assert not driver.find_element(By.ID, "result").is_displayed()

    driver.execute_script("document.getElementById('text').value = '   ';")
    driver.find_element(By.ID, "submit").click()
    wait_for(driver, lambda d: "Type a sentence" in d.find_element(By.ID, "error-message").text)


def test_keyboard_alone_classifies(open_browser, shared_stack):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = open_browser()
    driver.get(shared_stack.url)
    box = driver.find_element(By.ID, "text")
    box.send_keys("A fine and moving film")

    box.send_keys(Keys.TAB)
    assert driver.switch_to.active_element.get_attribute("id") == "submit"
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(driver, shown_result)

    driver.execute_script("document.getElementById('result').hidden = true;")
    box.send_keys(Keys.CONTROL, Keys.ENTER)
    wait_for(driver, shown_result)


def test_without_javascript_the_form_posts_and_the_page_comes_back_with_the_result(
    open_browser, shared_stack, serving_model_dir
):
    from selenium.webdriver.common.by import By

    driver = open_browser(javascript=False)
    driver.get(shared_stack.url)
    assert "Ctrl+Enter" not in driver.find_element(By.ID, "text-hint").text  # no script ran
    assert not driver.find_element(By.ID, "result").is_displayed()

    driver.find_element(By.ID, "text").send_keys("It is worth it")
    driver.find_element(By.ID, "submit").click()
    wait_for(driver, shown_result)

    result = read_result(driver)
    check_result(result, shared_stack, serving_model_dir)
    # The page that came back was made by the facade that classified the text.
    assert result["page_container_id"] == result["container_id"]
    assert driver.find_element(By.ID, "text").get_attribute("value") == "It is worth it"
    save_screenshot(driver, "page-no-javascript.png")


def test_the_page_fits_a_phone_screen(open_browser, shared_stack):
    from selenium.webdriver.common.by import By

    driver = open_browser()
    # A phone's viewport (a desktop window cannot be made this narrow).
    phone = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", phone)
    driver.get(shared_stack.url)
    driver.find_element(By.ID, "text").send_keys("It is worth it")
    driver.find_element(By.ID, "submit").click()
    wait_for(driver, shown_result)

    width = driver.execute_script("return document.documentElement.clientWidth")
    assert width == 390
    overflow = driver.execute_script("return document.documentElement.scrollWidth") - width
    assert overflow <= 0, "the page scrolls sideways on a phone"
    for element_id in ("text", "submit", "result"):
        rect = driver.find_element(By.ID, element_id).rect
        assert rect["x"] >= 0 and rect["x"] + rect["width"] <= width, element_id
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**phone, "height": height})
    save_screenshot(driver, "page-phone.png", fit=False)


def test_docs_render_every_route_from_this_origin_under_the_strict_policy(open_browser, shared_stack):
    from selenium.webdriver.common.by import By

    driver = open_browser()
    # Count what the page's policy blocks: Swagger UI must run without inline scripts or eval.
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.violatedDirective));"
        },
    )
    driver.get(shared_stack.url + "docs")
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 5)
    paths = {element.text for element in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/", "/info", "/healthz", "/readyz"} <= {path.replace("\u200b", "") for path in paths}
    assert driver.execute_script("return window.__violations") == []


def test_with_api_keys_on_the_page_sends_the_typed_key_from_its_script(open_browser, keyed_stack):
    from selenium.webdriver.common.by import By

    from tests.integration.conftest import API_KEY

    driver = open_browser()
    driver.get(keyed_stack.url)
    driver.execute_script("window.sameDocument = 'yes';")
    driver.find_element(By.ID, "api-key").send_keys(API_KEY)
    driver.find_element(By.ID, "text").send_keys("It is worth it")
    driver.find_element(By.ID, "submit").click()
    wait_for(driver, shown_result)
    assert driver.find_element(By.ID, "result-label").text in ("POSITIVE", "NEGATIVE")
    assert driver.execute_script("return window.sameDocument") == "yes", "the form was posted, not the script's fetch"
