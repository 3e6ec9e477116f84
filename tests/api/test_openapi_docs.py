"""/docs and /redoc are served with assets of the service itself (no CDN): every script,
stylesheet and icon the pages name is a local path the service answers. (The rendering in
a real browser, with outside requests refused, is tests/integration/test_docs_offline.py.)"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

ASSET_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


class AssetUrls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def _assets(html: str) -> list[str]:
    parser = AssetUrls()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_name_only_local_assets(client: TestClient, page: str) -> None:
    resp = client.get(page)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert "cdn.jsdelivr.net" not in resp.text and "fonts.googleapis.com" not in resp.text
    assets = _assets(resp.text)
    assert any(url.endswith(".js") for url in assets), assets
    for url in assets:
        assert url.startswith("/") and not url.startswith("//"), f"{page} names a non-local asset {url}"
        asset = client.get(url)
        assert asset.status_code == 200, url
        kind = next((t for suffix, t in ASSET_TYPES.items() if url.endswith(suffix)), None)
        assert kind is not None and kind in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 1000, url
    assert "/openapi.json" in resp.text


def test_swagger_ui_is_configured_not_to_call_the_public_validator(client: TestClient) -> None:
    html = client.get("/docs").text
    assert '"validatorUrl": null' in html


def test_fastapis_cdn_pages_are_not_mounted(client: TestClient) -> None:
    paths = {getattr(route, "path", None) for route in client.app.routes}
    assert {"/docs", "/redoc", "/docs/oauth2-redirect", "/docs-assets"} <= paths
    assert client.get("/docs/oauth2-redirect").status_code == 200
    assert client.get("/docs-assets/no-such-file.js").status_code == 404
