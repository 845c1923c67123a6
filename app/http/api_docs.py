"""`/docs`: the management API's OpenAPI document rendered by Swagger UI.

The Swagger UI assets come from the flask-swagger-ui wheel (a PyPI-packaged
copy of the upstream dist) and are served by this app, so the page works
offline and fetches nothing from another host; the page's own script is a
static file too, which lets the Content-Security-Policy forbid inline code.
"""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, Response, abort, send_from_directory, url_for

bp = Blueprint("docs", __name__)

ASSETS_DIR = Path(flask_swagger_ui.__file__).parent / "dist"
ASSETS = frozenset(
    {"swagger-ui.css", "index.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"}
)
OPENAPI_PATH = "/api/v1/openapi.json"
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>ccserver API documentation</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{index_css}">
  <link rel="stylesheet" href="{swagger_css}">
</head>
<body>
  <noscript>The interactive documentation needs JavaScript; the raw document is at
  <a href="{spec}">{spec}</a>.</noscript>
  <div id="swagger-ui" data-spec-url="{spec}"></div>
  <script src="{bundle_js}"></script>
  <script src="{preset_js}"></script>
  <script src="{init_js}"></script>
</body>
</html>
"""

# validatorUrl null: Swagger UI would otherwise send the document to an
# online validator, the one request this page must never make.
INIT_JS = """window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-spec-url"),
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout"
  });
});
"""


def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    return response


@bp.get("/docs")
@bp.get("/docs/")
def api_docs():
    """The Swagger UI page for /api/v1/openapi.json."""
    html = PAGE.format(
        index_css=url_for("docs.asset", name="index.css"),
        swagger_css=url_for("docs.asset", name="swagger-ui.css"),
        bundle_js=url_for("docs.asset", name="swagger-ui-bundle.js"),
        preset_js=url_for("docs.asset", name="swagger-ui-standalone-preset.js"),
        init_js=url_for("docs.init_script"),
        spec=OPENAPI_PATH,
    )
    return _secure(Response(html, content_type="text/html; charset=utf-8"))


@bp.get("/docs/init.js")
def init_script():
    """The page's start-up script (static, so the CSP needs no 'unsafe-inline' scripts)."""
    response = Response(INIT_JS, content_type="text/javascript; charset=utf-8")
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@bp.get("/docs/assets/<name>")
def asset(name: str):
    """One of Swagger UI's packaged CSS or JS files."""
    if name not in ASSETS:
        abort(404)
    return send_from_directory(ASSETS_DIR, name, max_age=86400)
