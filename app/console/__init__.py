"""The admin console, /console: server-rendered pages over the same services as the API.

Sign-in takes an admin client's id and secret in a POSTed form, checked the
way the token endpoint checks them (and counted by the same failed-login
rate limits). The session is a row of `console_sessions` in the database
(app/console/sessions.py), so ending it counts on every instance at once;
Flask's signed cookie, HttpOnly, SameSite=Strict, Secure when the issuer is
https, and scoped to /console so API calls never carry it, holds only the
session's random token and its CSRF token. Every form carries that CSRF token. Tenancy is the API's:
system admins see every account, other admins only their own.
"""

from __future__ import annotations

import re

from flask import Blueprint, Flask, Request, redirect
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.wrappers import Response

CONSOLE_PREFIX = "/console"

bp = Blueprint(
    "console",
    __name__,
    url_prefix=CONSOLE_PREFIX,
    template_folder="templates",
    static_folder="static",
)


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session (session and CSRF tokens), opened only under /console.

    Every other path gets Flask's null session: no serializer is built and
    no cookie is read or written for it, since only the console uses the
    session and its cookie is scoped to /console. That saves about 20 µs of
    CPU on every request Flask dispatches (docs/performance.md).
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        path = request.path
        if path != CONSOLE_PREFIX and not path.startswith(CONSOLE_PREFIX + "/"):
            return None  # Flask substitutes a NullSession and never saves it
        return super().open_session(app, request)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(value: object) -> object:
    """Jinja `finalize`: a lone surrogate (stored before the API refused them) shown as U+FFFD.

    Such a string cannot be encoded as UTF-8, so one in a stored tag would
    otherwise fail every page that shows it.
    """
    if isinstance(value, str) and _LONE_SURROGATE.search(value):
        return _LONE_SURROGATE.sub("\ufffd", value)
    return value


def init_app(app: Flask) -> None:
    """Register the console and set its cookie policy."""
    from app.console import (  # noqa: F401  (attach the views to bp)
        federated_credentials,
        resource_servers,
        views,
    )

    secure = app.config["ISSUER"].startswith("https://")
    app.config["SESSION_COOKIE_NAME"] = "ccserver_console"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Strict"
    app.config["SESSION_COOKIE_SECURE"] = secure
    app.config["SESSION_COOKIE_PATH"] = "/console"
    app.config.setdefault("CONSOLE_SESSION_LIFETIME", 8 * 3600)
    app.session_interface = ConsoleSessionInterface()
    app.jinja_env.finalize = printable
    app.register_blueprint(bp)
    app.add_url_rule("/", endpoint="root", view_func=to_console)


def to_console() -> Response:
    """`GET /`: a person who opens the server's address lands on the console."""
    return redirect(f"{CONSOLE_PREFIX}/", code=302)
