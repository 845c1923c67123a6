"""Integration: /docs serves Swagger UI and every asset it needs from this app only."""

from __future__ import annotations

import re
from html.parser import HTMLParser


class References(HTMLParser):
    """Every src and href in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def test_docs_page_references_only_local_assets(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert not re.search(r"https?://|//[a-z0-9]", html, re.I), "the page names another host"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp

    parser = References()
    parser.feed(html)
    scripts = [u for u in parser.urls if u.endswith(".js")]
    styles = [u for u in parser.urls if u.endswith(".css")]
    assert len(scripts) >= 3 and len(styles) >= 1
    # The icon is an empty data: URL, so the browser asks no one for /favicon.ico.
    assert "data:," in parser.urls
    parser.urls.remove("data:,")
    for url in parser.urls:
        assert url.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        if url.endswith(".js"):
            assert asset.mimetype in ("text/javascript", "application/javascript")
            assert len(asset.get_data()) > 0
        elif url.endswith(".css"):
            assert asset.mimetype == "text/css"
        asset.close()
    bundle = client.get(next(u for u in scripts if "swagger-ui-bundle" in u))
    assert b"SwaggerUIBundle" in bundle.get_data()
    assert int(bundle.headers["Content-Length"]) > 500_000
    bundle.close()


def test_docs_point_at_the_openapi_document_and_no_validator(client):
    html = client.get("/docs").get_data(as_text=True)
    assert 'data-spec-url="/api/v1/openapi.json"' in html
    init = client.get("/docs/init.js").get_data(as_text=True)
    assert "validatorUrl: null" in init
    assert "http" not in init
    spec = client.get("/api/v1/openapi.json")
    assert spec.status_code == 200
    assert spec.get_json()["openapi"].startswith("3.1")


def test_unknown_asset_is_404(client):
    assert client.get("/docs/assets/../config.py").status_code == 404
    assert client.get("/docs/assets/LICENSE").status_code == 404
    assert client.get("/docs/assets/oauth2-redirect.html").status_code == 404
