"""The documentation.

Integration: /docs serves Swagger UI and every asset it needs from this app only.
Unit: README.md and docs/*.md name only settings, files and tests that exist,
document every setting the code reads, and cite nothing outside the repository.
"""

from __future__ import annotations

import importlib
import re
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = (
    "architecture",
    "api",
    "configuration",
    "security",
    "deployment",
    "operations",
    "cli",
    "performance",
    "decisions",
    "federation",
)


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


# --- README.md and docs/ --------------------------------------------------------------------


def _documents() -> dict[str, str]:
    pages = {"README.md": README.read_text(encoding="utf-8")}
    for path in sorted(DOCS.glob("*.md")):
        pages[f"docs/{path.name}"] = path.read_text(encoding="utf-8")
    return pages


def _code(*patterns: str) -> dict[str, str]:
    files = {}
    for pattern in patterns:
        for path in sorted(ROOT.glob(pattern)):
            files[str(path.relative_to(ROOT))] = path.read_text(encoding="utf-8")
    return files


def test_readme_is_short_and_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    # The walk-through (every management step, run by test_readme_walkthrough.py) takes
    # about 70 lines; everything past the first steps belongs in docs/.
    assert len(text.splitlines()) <= 280, "the handbook belongs in docs/"
    for page in PAGES:
        assert (DOCS / f"{page}.md").is_file(), page
        assert f"(docs/{page}.md)" in text, f"README does not link docs/{page}.md"


def test_readme_commands_are_make_targets():
    text = README.read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("run", "test"):
        assert f"make {target}" in text
        assert re.search(rf"^{target}:", makefile, re.M), target


def _table_settings(text: str) -> set[str]:
    """The UPPER_SNAKE names in the first column of every table of a page."""
    names = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first))
    return names


def test_every_documented_setting_is_read_by_the_code():
    documented = _table_settings((DOCS / "configuration.md").read_text(encoding="utf-8"))
    assert {"DATABASE_URL", "ISSUER", "KEYS_DIR", "REDIS_URL", "TRUSTED_PROXIES"} <= documented
    code = "\n".join(_code("app/**/*.py", "serve.py", "gunicorn.conf.py").values())
    # Case-insensitive: a typed settings class may spell DATABASE_URL as database_url.
    missing = {name for name in documented if not re.search(rf"\b{name}\b", code, re.I)}
    assert not missing, f"docs/configuration.md documents settings nothing reads: {missing}"


def _settings_read_by_the_code() -> set[str]:
    names = set()
    environ = re.compile(
        r"""os\.(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]+)["']"""
    )
    for text in _code("app/**/*.py", "serve.py", "gunicorn.conf.py").values():
        names.update(environ.findall(text))
    # The settings modules: every UPPER_SNAKE literal passed to a call (os.environ.get,
    # a helper such as _int, config.get) names a setting.
    for name in ("app/settings.py", "serve.py"):
        text = (ROOT / name).read_text(encoding="utf-8")
        names.update(re.findall(r"""\(\s*["']([A-Z][A-Z0-9_]{2,})["']""", text))
    # A typed settings class (pydantic-settings) reads its fields from the environment.
    module = importlib.import_module("app.settings")
    for value in vars(module).values():
        if not isinstance(value, type):
            continue  # e.g. flask.current_app, a proxy that needs an app context
        fields = getattr(value, "model_fields", None)
        if value.__module__ == module.__name__ and fields:
            for name, field in fields.items():
                alias = field.validation_alias if isinstance(field.validation_alias, str) else None
                names.add((alias or field.alias or name).upper())
    return names


def test_every_setting_the_code_reads_is_documented():
    read = _settings_read_by_the_code()
    assert {"DATABASE_URL", "ISSUER", "PORT", "WORKERS"} <= read
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = {name for name in read if f"`{name}`" not in text}
    assert not missing, f"docs/configuration.md lacks settings the code reads: {missing}"


def test_docs_name_only_files_and_tests_that_exist():
    tests_text = "\n".join(_code("tests/**/*.py").values())
    modules = {Path(p).name for p in _code("*.py", "app/**/*.py", "tests/**/*.py", "bench/*.py")}
    for page, text in _documents().items():
        for path in set(re.findall(r"`((?:[\w.-]+/)*[\w.-]+\.py)`", text)):
            if "/" not in path:
                # A module named in a row or sentence about its package.
                assert path in modules, (page, path)
            else:
                assert (ROOT / path).is_file() or (ROOT / "tests" / path).is_file(), (page, path)
        for path in set(re.findall(r"`((?:app|tests|bench|examples|migrations)/[\w/]+)/`", text)):
            assert (ROOT / path).is_dir(), (page, path)
        for name in set(re.findall(r"`(test_\w+)`", text)):
            assert re.search(rf"def {name}\b", tests_text), (page, name)


def _anchors(text: str) -> set[str]:
    """The anchors a Markdown renderer gives a page's headings (GitHub's slugs)."""
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_docs_cite_nothing_outside_the_repository():
    documents = _documents()
    for page, text in documents.items():
        assert "../" not in text, page
        assert not re.search(r"\bcontract\b", text, re.I), f"{page}: cite docs/api.md instead"
        for target, anchor in re.findall(r"\]\(([^)#]*)(?:#([^)]*))?\)", text):
            if target.startswith(("http://", "https://")):
                continue
            base = ROOT if page == "README.md" else DOCS
            path = (base / target).resolve() if target else ROOT / page
            assert path.exists(), (page, target)
            if anchor:
                linked = documents[str(path.relative_to(ROOT))]
                assert anchor in _anchors(linked), (page, f"{target}#{anchor}")
