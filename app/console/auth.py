"""Console sign-in, session checks and CSRF tokens."""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable

from flask import abort, current_app, g, redirect, request, session, url_for

from app.api.auth import Caller
from app.clients.records import ClientRecord, SecretRecord
from app.console import sessions
from app.errors import Forbidden
from app.http.client_address import client_address
from app.oauth import throttle
from app.oauth.client_auth import log_failure
from app.runtime import runtime
from app.timeutil import utcnow

CSRF_FIELD = "csrf_token"
#: The cookie's key for the session token (app/console/sessions.py).
SESSION_TOKEN = "sid"


class SignInRefused(Exception):
    """Wrong id or secret, not an admin, disabled: all look the same to the user."""


class SignInThrottled(Exception):
    """Too many failed sign-ins for this client id or address."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many failed sign-ins; retry later.")
        self.retry_after = retry_after


def csrf_token() -> str:
    """This session's CSRF token, made on first use."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Refuse a form post whose CSRF token is missing or not this session's (403)."""
    sent = request.form.get(CSRF_FIELD, "")
    expected = session.get("csrf", "")
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(403, description="The form's security token is missing or stale. Reload the page.")


def _refusal_reason(record: ClientRecord | None, matched: SecretRecord | None) -> str:
    """The coarse reason of a refused sign-in, for the log only (app.oauth.client_auth)."""
    if record is None:
        return "unknown_client"
    if matched is None:
        return "invalid_credentials"
    if record.disabled:
        return "client_disabled"
    return "not_an_admin"


def sign_in(client_id: str, secret: str) -> None:
    """Check an admin client's id and secret like the token endpoint, then start a session.

    :raise SignInThrottled: past the failed-authentication limit.
    :raise SignInRefused: for any other failure, without saying which; also
        when the database no longer holds what the client cache said (the
        client disabled or the secret deleted on another instance just now).
    """
    # The token endpoint's limits: failures here and there count together.
    address = client_address()
    try:
        throttle.check(client_id or None, address)
    except throttle.RateLimited as exc:
        raise SignInThrottled(exc.retry_after) from exc
    rt = runtime()
    record = rt.clients.get(client_id) if 0 < len(client_id) <= 64 else None
    matched = rt.clients.verify_secret(record, secret, rt.pepper, utcnow())
    if (
        record is None
        or matched is None
        or record.disabled
        or record.client_type != "admin"
        or not record.scopes
    ):
        throttle.record_failure(client_id or None, address)
        log_failure(client_id, _refusal_reason(record, matched), "console_sign_in", "console")
        raise SignInRefused()
    rt.usage.secret_used(matched.id)
    # A new session from scratch (no fixation): a new token, a new CSRF
    # token, and the session this browser had before, if any, ended.
    sign_out()
    lifetime = current_app.config.get("CONSOLE_SESSION_LIFETIME", 8 * 3600)
    token = sessions.start(record.id, matched.id, lifetime)
    if token is None:
        raise SignInRefused()
    session[SESSION_TOKEN] = token
    session["csrf"] = secrets.token_urlsafe(32)


def sign_out() -> None:
    """End this browser's session on every instance and forget its cookie."""
    token = session.get(SESSION_TOKEN)
    if isinstance(token, str) and token:
        sessions.end(token)
    session.clear()


def current_admin() -> Caller | None:
    """The signed-in admin, re-checked in the database on every request, or None.

    The session ends (its row deleted, the cookie cleared) when it is older
    than CONSOLE_SESSION_LIFETIME, when the admin client was deleted,
    disabled or demoted, when the secret used to sign in was deleted or
    expired (so rotating a leaked secret without grace ends the sessions it
    opened), or when the client's token cut-off came after the sign-in
    (app/console/sessions.py).
    """
    token = session.get(SESSION_TOKEN)
    if not isinstance(token, str) or not token:
        return None
    admin = sessions.admin(token)
    if admin is None:
        session.clear()
    return admin


def login_required(view: Callable) -> Callable:
    """Decorator: a signed-in admin (in g.caller) and, for POSTs, a valid CSRF token."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        admin = current_admin()
        if admin is None:
            if request.method == "GET":
                return redirect(url_for("console.signin", next=request.full_path))
            return redirect(url_for("console.signin"), code=303)
        g.caller = admin
        if request.method == "POST":
            check_csrf()
        return view(*args, **kwargs)

    return wrapper


def keep_once(payload: dict) -> None:
    """Keep `payload` (a new secret, a private key) for the next page only, sealed."""
    token = session.get(SESSION_TOKEN)
    if isinstance(token, str) and token:
        session[sessions.ONCE_KEY] = sessions.seal(current_app.secret_key or "", token, payload)


def take_once() -> dict | None:
    """What `keep_once` kept, removed as it is read: a refresh finds nothing."""
    sealed = session.pop(sessions.ONCE_KEY, None)
    token = session.get(SESSION_TOKEN)
    if sealed is None or not isinstance(token, str) or not token:
        return None
    return sessions.unseal(current_app.secret_key or "", token, sealed)


def require(scope: str) -> None:
    """:raise Forbidden: the signed-in admin's client lacks `scope`."""
    if scope not in g.caller.scopes:
        raise Forbidden(f"Your admin client lacks the {scope!r} scope.", code="insufficient_scope")
