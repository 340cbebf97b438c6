"""The playground page at / in a real headless browser (Debian's chromium + chromium-driver,
driven by selenium): load, submit a prompt, wait for streamed text, screenshot not blank; and
its chat mode, whose replies are the chat API's."""

import io
import shutil

import httpx

import numpy as np
import pytest

from lmjax.serve.app import create_app
from lmjax.serve.local import serve_in_thread

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def page(tiny_generator):
    """(a headless Chromium, the server's base URL) for the tiny model 'tiny-gpt'."""
    if BROWSER is None or DRIVER is None:
        pytest.skip("no headless browser here: install Debian's chromium and chromium-driver "
                    "(.ci/run does) to run it")
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium "
                                    "(in the test extra)")
    # A context of 128 characters: a two-turn chat in the QA template fits it.
    app = create_app(tiny_generator(128), model_name="tiny-gpt", max_slots=4)
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1000,700"):
        options.add_argument(flag)
    with serve_in_thread(app) as base:
        driver = webdriver.Chrome(options=options,
                                  service=webdriver.ChromeService(executable_path=DRIVER))
        try:
            yield driver, base
        finally:
            driver.quit()


def _open(driver, base):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base}/")
    wait = WebDriverWait(driver, 120)
    wait.until(lambda d: d.find_element(By.ID, "go").is_enabled())
    return By, wait


def _set(driver, By, field: str, value: str) -> None:
    driver.find_element(By.ID, field).clear()
    driver.find_element(By.ID, field).send_keys(value)


def test_the_playground_streams_text_in_a_headless_browser(page):
    from PIL import Image

    driver, base = page
    By, wait = _open(driver, base)
    assert driver.find_element(By.ID, "model").text == "tiny-gpt"
    assert driver.find_element(By.ID, "context").text == "128"
    _set(driver, By, "max_tokens", "24")
    driver.find_element(By.ID, "go").click()
    wait.until(lambda d: "tokens in" in d.find_element(By.ID, "status").text)
    text = driver.find_element(By.ID, "generated").text
    shot = driver.get_screenshot_as_png()
    assert len(text) >= 12, text  # 24 tokens of single characters, minus trailing spaces
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), np.float32)
    assert pixels.shape[0] > 100 and pixels.std() > 10  # a header, text and controls: not blank


def test_the_playground_chats_and_keeps_the_conversation(page):
    driver, base = page
    By, wait = _open(driver, base)
    driver.find_element(By.ID, "mode_chat").click()
    _set(driver, By, "max_tokens", "6")
    _set(driver, By, "temperature", "0")
    messages = []
    for turn, said in enumerate(["Hi", "Who?"], 1):
        _set(driver, By, "prompt", said)
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".message.assistant")) == turn
                   and "tokens in" in d.find_element(By.ID, "status").text)
        shown = driver.find_elements(By.CSS_SELECTOR, ".message.assistant")[-1]
        reply = shown.get_attribute("textContent")
        # What the API answers to the same conversation, greedily.
        messages.append({"role": "user", "content": said})
        expected = httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
            "model": "tiny-gpt", "messages": messages, "max_tokens": 6, "temperature": 0})
        assert reply == expected.json()["choices"][0]["message"]["content"]
        messages.append({"role": "assistant", "content": reply})
    assert [m.text for m in driver.find_elements(By.CSS_SELECTOR, ".message.user")] == [
        "Hi", "Who?"]
    assert not driver.find_element(By.ID, "output").is_displayed()
