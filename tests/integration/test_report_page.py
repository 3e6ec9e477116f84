"""GET / in a real headless Chromium (Debian's ``chromium`` driven by Playwright, as
tests/integration/test_docs_offline.py does) against a started server with keys required: a
person sets a key, picks a label set, uploads a WFDB record and reads the report; clicking (and
the arrow keys on) another diagnosis switches the shaded spans. Every request that would leave the
server is refused and noted, and the page's Content Security Policy must not block anything of
its own (a blocked script or style shows as a console error, which fails the test).

A screenshot of the report is saved under the test's tmp path (``report-page.png``) for a person
to look at, and checked to be a PNG that is not blank.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image

from tests.fixtures.browser import LOCAL_SCHEMES

from ._server import ECG_DIR, REPO, ServerFactory, clean_env

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")

TIMEOUT_MS = 120_000  # scoring with lead evidence on a loaded 2-core machine, then drawing



@pytest.fixture(scope="module")
def keyed_server(servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    """A server with keys required, and a diagnose-scope key made with the command line."""
    data_dir = tmp_path_factory.mktemp("page-data")
    made = subprocess.run([sys.executable, "-m", "app.cli", "keys", "create", "--name", "report-page",
                           "--scope", "diagnose"], cwd=REPO, env=clean_env(ECGFM_DATA_DIR=str(data_dir)),
                          capture_output=True, text=True, timeout=120, check=True)
    key = made.stdout.strip().splitlines()[0]
    assert key.startswith("ekd_"), made.stdout
    return servers.start("page", data_dir=data_dir, env={"ECGFM_AUTH": "required"}), key




def test_a_person_uploads_a_record_and_switches_the_highlighted_diagnosis(browser: Any, keyed_server: tuple[Any, str],
                                                                         tmp_path: Path) -> None:
    server, key = keyed_server
    origin = urlsplit(server.url).netloc
    refused: list[str] = []
    console_errors: list[str] = []

    def route(r: Any) -> None:
        url = urlsplit(r.request.url)
        if url.scheme in LOCAL_SCHEMES or url.netloc == origin:
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort("internetdisconnected")

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        context.route("**/*", route)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console_errors.append(str(e)))
        response = page.goto(f"{server.url}/", wait_until="load")
        assert response is not None and response.status == 200

        # the key (kept in this tab's sessionStorage), then the label sets it may read
        page.get_by_label("API key").fill(key)
        page.get_by_label("API key").press("Tab")
        page.locator("#label-set option[value='cinc2021']").wait_for(state="attached")
        assert page.evaluate("() => sessionStorage.getItem('ecgfm-ked-api-key')") == key
        assert page.evaluate("() => localStorage.length") == 0
        page.get_by_label("Label set").select_option("cinc2021")
        page.get_by_label("Choose ECG files").set_input_files([str(ECG_DIR / "E07500.hea"),
                                                               str(ECG_DIR / "E07500.mat")])
        page.get_by_role("button", name="Diagnose").click()
        page.locator("#report section.ecg").wait_for()

        # 12 lead traces and the rhythm strip, the ranked diagnoses, the top one's spans shaded
        assert page.locator("#report svg [id^='ecg0-trace-']").count() == 12
        assert page.locator("#report svg #ecg0-rhythm-II").count() == 1
        buttons = page.locator("#report button[data-rank]")
        assert buttons.count() >= 2
        assert page.locator("#report button[data-rank='1']").get_attribute("aria-pressed") == "true"
        first, second = page.locator("#ecg0-evidence-1"), page.locator("#ecg0-evidence-2")
        assert first.is_visible() and not second.is_visible()
        assert page.locator("#ecg0-evidence-1 [id^='ecg0-evidence-1-']").first.is_visible()
        assert page.locator("#ecg0-detail-1").is_visible() and not page.locator("#ecg0-detail-2").is_visible()
        assert page.get_by_text("UNTRAINED DEMO MODEL").first.is_visible()

        shot = tmp_path / "report-page.png"
        page.screenshot(path=str(shot), full_page=True)
        image = Image.open(io.BytesIO(shot.read_bytes()))
        assert image.format == "PNG" and image.width >= 1280 and image.height > 900
        low, high = image.convert("L").getextrema()
        assert high - low > 200, "the screenshot is blank"
        colours = image.convert("RGB").getcolors(maxcolors=1 << 22)
        assert colours is None or len(colours) > 100

        # clicking another diagnosis switches the shaded spans (and its details)
        page.locator("#report button[data-rank='2']").click()
        assert second.is_visible() and not first.is_visible()
        assert page.locator("#report button[data-rank='2']").get_attribute("aria-pressed") == "true"
        assert page.locator("#report button[data-rank='1']").get_attribute("aria-pressed") == "false"
        assert page.locator("#ecg0-detail-2").is_visible()
        assert "#2 " in page.locator("#report .selected-status").inner_text()
        # ... and so does the keyboard: arrow down to the third, which takes the focus
        page.keyboard.press("ArrowDown")
        assert page.locator("#ecg0-evidence-3").is_visible() and not second.is_visible()
        assert page.evaluate("() => document.activeElement.getAttribute('data-rank')") == "3"

        assert refused == [], f"the page tried to load outside URLs: {refused}"
        assert console_errors == [], console_errors
    finally:
        context.close()


def test_without_a_key_the_page_says_what_the_service_answered(browser: Any, keyed_server: tuple[Any, str]) -> None:
    server, _key = keyed_server
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{server.url}/")
        page.get_by_label("Choose ECG files").set_input_files([str(ECG_DIR / "E07500.hea"),
                                                               str(ECG_DIR / "E07500.mat")])
        page.get_by_role("button", name="Diagnose").click()
        alert = page.get_by_role("alert")
        alert.wait_for(state="visible")
        assert "401 unauthenticated" in alert.inner_text()
        assert page.locator("#report section.ecg").count() == 0
    finally:
        context.close()
