"""fststyle serve in a real browser: headless Chromium from the system's packages, driven by Playwright, with a
fake camera, against a server on 127.0.0.1 (nothing else is reached). It stylises a bundled photo, blends two
styles, runs the webcam through two models and a short Gatys run, and saves a screenshot
(FSTSTYLE_SCREENSHOT=path keeps it, e.g. for docs/serve.png)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; .ci/run does)")

#: what Chromium needs to start here (no sandbox as root) and to reach nothing but the test's own server: no calls
#: home, and every host name but 127.0.0.1 unresolvable, so the test needs no network
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``fststyle serve`` as a user starts it, on a free port, with a short Gatys run for the page's slow panel."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "fststyle", "serve", "--port", str(port), "gatys.steps=5",
                                    "slow_image_size=64", "device=cpu"], stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/api/models", timeout=1)
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_page_stylises_blends_streams_the_webcam_and_runs_the_slow_engine(server, repo: Path, tmp_path: Path):
    photo = repo / "data" / "preview" / "000000000030.jpg"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 1500})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server)
        page.wait_for_function("document.querySelectorAll('#model option').length >= 3")

        page.select_option("#model", "starry_night")
        page.set_input_files("#file", str(photo))
        sync_api.expect(page.locator("#timing")).to_contain_text("network", timeout=60_000)
        assert page.get_attribute("#download", "download") == "000000000030_starry_night.jpg"

        page.select_option("#model", "multistyle")
        page.select_option("#style", "__blend__")
        sync_api.expect(page.locator("#blend input")).to_have_count(3)
        sync_api.expect(page.locator("#download")).to_have_attribute(
            "download", re.compile(r"000000000030_.*\+.*\.jpg"), timeout=60_000)

        page.select_option("#model-b", "the_scream")
        page.click("#cam-start")
        for stats in ("#cam-a-stats", "#cam-b-stats"):
            sync_api.expect(page.locator(stats)).to_contain_text("frames/s", timeout=60_000)
        time.sleep(3)
        stats = page.locator("#cam-a-stats").inner_text()
        assert float(re.search(r"([\d.]+) frames/s", stats).group(1)) > 0, stats
        page.click("#cam-stop")

        page.select_option("#model", "the_scream")
        page.click("#slow-run")
        sync_api.expect(page.locator("#scores")).to_be_visible(timeout=120_000)
        sync_api.expect(page.locator("#scores tbody tr")).to_have_count(2)
        screenshot = Path(os.environ.get("FSTSTYLE_SCREENSHOT", tmp_path / "serve.png"))
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    assert not errors, errors
    assert screenshot.stat().st_size > 10_000
