"""The playground page at / in a real headless browser (Debian's chromium + chromium-driver,
driven by selenium): load, submit a prompt, wait for streamed text, screenshot not blank."""

import io
import shutil

import numpy as np
import pytest

from lmjax.serve.app import create_app
from lmjax.serve.local import serve_in_thread

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(BROWSER is None or DRIVER is None, reason="no headless browser here: "
                    "install Debian's chromium and chromium-driver (.ci/run does) to run it")
def test_the_playground_streams_text_in_a_headless_browser(tiny_generator):
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium "
                                    "(in the test extra)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from PIL import Image

    # The shapes of tests/serve/test_openai.py's model: its compiled programs are reused.
    app = create_app(tiny_generator(32), model_name="tiny-gpt", max_slots=4)
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1000,700"):
        options.add_argument(flag)
    with serve_in_thread(app) as base:
        driver = webdriver.Chrome(options=options,
                                  service=webdriver.ChromeService(executable_path=DRIVER))
        try:
            driver.get(f"{base}/")
            wait = WebDriverWait(driver, 120)
            wait.until(lambda d: d.find_element(By.ID, "go").is_enabled())
            assert driver.find_element(By.ID, "model").text == "tiny-gpt"
            assert driver.find_element(By.ID, "context").text == "32"
            driver.find_element(By.ID, "max_tokens").clear()
            driver.find_element(By.ID, "max_tokens").send_keys("24")
            driver.find_element(By.ID, "go").click()
            wait.until(lambda d: "tokens in" in d.find_element(By.ID, "status").text)
            text = driver.find_element(By.ID, "generated").text
            shot = driver.get_screenshot_as_png()
        finally:
            driver.quit()
    assert len(text) >= 12, text  # 24 tokens of single characters, minus trailing spaces
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), np.float32)
    assert pixels.shape[0] > 100 and pixels.std() > 10  # a header, text and controls: not blank
