"""/docs and /redoc in a real headless Chromium (Debian's ``chromium``, driven by Playwright
through ``executable_path``; Playwright's own browser downloads are not used) against a
started server, with every request that leaves the server refused: the pages must render
from the service's own assets, and Swagger UI's "Try it out" on POST /diagnose must offer a
file field.

The browser cannot reach any outside host here in the first place (no network but the
loopback); the route handler below makes that explicit and records every attempt, so the
test fails on an external URL even on a machine that has a network. The pages' Content
Security Policy keeps the browser from even starting a request elsewhere (ReDoc's sidebar
would fetch its vendor's logo from a CDN): such a request fails with ERR_BLOCKED_BY_CSP
inside the browser, which is allowed; any other failure is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.fixtures.browser import LOCAL_SCHEMES

from ._server import ServerFactory

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")

PAGE_TIMEOUT_MS = 60_000
BLOCKED_BY_POLICY = ("net::ERR_BLOCKED_BY_CSP", "csp")  # Chromium reports either, by version



@pytest.fixture(scope="module")
def server(servers: ServerFactory) -> Any:
    return servers.start("docs")




class OfflinePage:
    """A page whose requests may only go to the server; everything else is refused and noted."""

    def __init__(self, browser: Any, server_url: str) -> None:
        self.origin = urlsplit(server_url).netloc
        self.refused: list[str] = []
        self.failed: list[str] = []
        self.blocked_by_policy: list[str] = []
        self.console_errors: list[str] = []
        self.context = browser.new_context()
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(PAGE_TIMEOUT_MS)
        self.page.on("requestfailed", self._failed)
        self.page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)

    def _route(self, route: Any) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in LOCAL_SCHEMES or url.netloc == self.origin:
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort("internetdisconnected")

    def _failed(self, request: Any) -> None:
        if request.failure in BLOCKED_BY_POLICY:
            self.blocked_by_policy.append(request.url)
        else:
            self.failed.append(f"{request.url} ({request.failure})")

    def assert_offline_clean(self) -> None:
        assert self.refused == [], f"the page tried to load outside URLs: {self.refused}"
        assert self.failed == [], f"requests failed: {self.failed}"

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def offline_page(browser: Any, server: Any) -> Iterator[OfflinePage]:
    page = OfflinePage(browser, server.url)
    try:
        yield page
    finally:
        page.close()


def test_swagger_ui_renders_offline_and_offers_a_file_field_for_diagnose(offline_page: OfflinePage, server: Any,
                                                                         tmp_path: Path) -> None:
    page = offline_page.page
    response = page.goto(f"{server.url}/docs", wait_until="networkidle")
    assert response is not None and response.status == 200
    operation = page.locator(".opblock-post", has=page.locator('.opblock-summary-path[data-path="/diagnose"]'))
    operation.locator(".opblock-summary").first.click()
    operation.locator("button.try-out__btn").click()
    files_row = operation.locator('tr[data-param-name="files"]')
    file_inputs = operation.locator('input[type="file"]')
    if file_inputs.count() == 0:  # an array of files starts empty: add its first item
        files_row.get_by_role("button", name="Add").first.click()
    file_inputs.first.wait_for(state="visible")
    assert file_inputs.count() >= 1
    operation.screenshot(path=str(tmp_path / "diagnose-try-it-out.png"))  # for a person to look at
    offline_page.assert_offline_clean()
    assert not offline_page.console_errors, offline_page.console_errors


def test_redoc_renders_offline(offline_page: OfflinePage, server: Any) -> None:
    page = offline_page.page
    response = page.goto(f"{server.url}/redoc", wait_until="networkidle")
    assert response is not None and response.status == 200
    page.get_by_text("score 12-lead ECGs against a label set").first.wait_for(state="attached")
    page.locator("h2", has_text="register a diagnosis").first.wait_for(state="attached")
    offline_page.assert_offline_clean()
