"""App-wide response and teardown hooks: security headers and the last_used_at flush.

Plain functions, so that app.oauth.fastpath does for token requests exactly what
these hooks do for every other request.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, request

from app.extensions import db
from app.runtime import runtime

# The logger this warning has always had (the hook lived in app/__init__.py).
log = logging.getLogger("app")


def security_header_defaults(path: str) -> list[tuple[str, str]]:
    """Headers a response to `path` gets unless it already has them."""
    headers = [("X-Content-Type-Options", "nosniff")]
    if path.startswith(("/oauth2/", "/api/")):
        headers.append(("Cache-Control", "no-store"))
    if current_app.config["ISSUER"].startswith("https://"):
        headers.append(("Strict-Transport-Security", "max-age=31536000; includeSubDomains"))
    return headers


def security_headers(response: Response) -> Response:
    """after_request: the `security_header_defaults` of the request's path."""
    for name, value in security_header_defaults(request.path):
        response.headers.setdefault(name, value)
    return response


def flush_usage(_exc: BaseException | None = None) -> None:
    """teardown_request: write the last_used_at notes once they are due."""
    usage = runtime().usage
    if usage.due():
        try:
            usage.flush(db.engine)
        except Exception:  # noqa: BLE001 - last_used_at is best effort
            log.warning("could not write last_used_at")


def init_app(app: Flask) -> None:
    """Register the security headers and the usage flush for every request."""
    app.after_request(security_headers)
    app.teardown_request(flush_usage)
