"""Console pages. Views read forms and render; the client services decide, as for the API."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import (
    Response,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from markupsafe import Markup
from werkzeug.exceptions import HTTPException

from app.api import schemas
from app.api.pagination import decode_cursor, encode_cursor
from app.audit import events as audit_events
from app.clients import federation as federation_service
from app.clients import keys as key_service
from app.clients import policy, service
from app.clients import secrets as secrets_service
from app.console import bp
from app.console.auth import (
    SignInRefused,
    SignInThrottled,
    check_csrf,
    csrf_token,
    current_admin,
    keep_once,
    login_required,
    require,
    sign_in,
    sign_out,
    take_once,
)
from app.console.forms import (
    BINDING_FLAGS,
    CERTIFICATE_RULES,
    GRACE_PERIODS,
    SECRET_LIFETIMES,
    choice,
    client_body,
    client_form,
    form_values,
    token_binding,
)
from app.console.relative_time import relative_time
from app.errors import AppError, BadRequest, NotFound, PreconditionFailed, ValidationError
from app.extensions import db
from app.models import CLIENT_TYPES, AuditEvent, Client
from app.models.client import SECURITY_PROFILES
from app.protocol import AUTH_METHODS
from app.runtime import runtime
from app.signing import keys as signing_key_service
from app.timeutil import utcnow

PAGE_SIZE = 25
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@bp.after_request
def console_headers(response: Response) -> Response:
    """Pages hold tenant data and, once, secrets: never cached, framed or inline-scripted."""
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@bp.context_processor
def template_globals() -> dict[str, Any]:
    return {
        "csrf_token": csrf_token,
        "admin": g.get("caller"),
        "client_types": CLIENT_TYPES,
        "auth_methods": AUTH_METHODS,
        "binding_flags": BINDING_FLAGS,
        "certificate_rules": CERTIFICATE_RULES,
        "security_profiles": SECURITY_PROFILES,
    }


@bp.app_template_global("when")
def when(value: datetime | None, now: datetime, empty: str = "—") -> Markup:
    """A relative time ("3 min ago") in a <time> whose title is the exact UTC time."""
    if value is None:
        return Markup('<span class="muted">{}</span>').format(empty)
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        value.isoformat(), console_time(value), relative_time(value, now)
    )


@bp.app_template_filter("console_time")
def console_time(value) -> str:
    """A timestamp as 'YYYY-MM-DD HH:MM:SS UTC', or an em dash."""
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.errorhandler(AppError)
def app_error(error: AppError):
    """A service refused: show its reason on an HTML page with the same status."""
    db.session.rollback()
    page = render_template("console/error.html", error=error, status=error.status)
    return page, error.status


@bp.errorhandler(HTTPException)
def http_error(error: HTTPException):
    db.session.rollback()
    page = render_template("console/error.html", error=error, status=error.code)
    return page, error.code or 500


def _safe_next(target: str | None) -> str:
    """Where to go after sign-in: only a console path of this site (no open redirect)."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith("/console/"):
            return target.rstrip("?")
    return url_for("console.list_clients")


# --- Sign-in -----------------------------------------------------------------


@bp.get("/signin")
def signin():
    """The sign-in form."""
    if current_admin() is not None:
        return redirect(url_for("console.list_clients"))
    return render_template("console/signin.html", next=request.args.get("next", ""))


@bp.post("/signin")
def signin_submit():
    """Check the admin client's id and secret; start a session."""
    check_csrf()
    client_id = request.form.get("client_id", "").strip()
    secret = request.form.get("client_secret", "")
    target = request.form.get("next", "")
    try:
        sign_in(client_id, secret)
    except SignInThrottled as exc:
        page = render_template(
            "console/signin.html", next=target, client_id=client_id, error=str(exc)
        )
        return page, 429, {"Retry-After": str(exc.retry_after)}
    except SignInRefused:
        error = "Sign-in failed: check the client id and secret of an enabled admin client."
        page = render_template("console/signin.html", next=target, client_id=client_id, error=error)
        return page, 401
    return redirect(_safe_next(target), code=303)


@bp.post("/signout")
@login_required
def signout():
    """End the session."""
    sign_out()
    flash("You are signed out.", "info")
    return redirect(url_for("console.signin"), code=303)


@bp.get("/")
@login_required
def home():
    """The console starts at the client list."""
    return redirect(url_for("console.list_clients"))


# --- Clients -------------------------------------------------------------------


def _client(client_id: str, *, for_update: bool = False) -> Client:
    """:raise NotFound: also for another account's client, as in the API."""
    return service.get_client(g.caller.account_filter(), client_id, for_update=for_update)


@bp.get("/clients")
@login_required
def list_clients():
    """Clients in creation order, filtered, a keyset page at a time."""
    require("clients:read")
    args = request.args
    filters = {
        "name_prefix": args.get("name_prefix", "").strip(),
        "tag": args.get("tag", "").strip(),
        "client_type": args.get("client_type", ""),
        "account_id": args.get("account_id", "").strip() if g.caller.is_system else "",
    }
    # The API's query schema judges the filters; a bad one is dropped and named.
    _, errors = schemas.check(schemas.ClientQuery, {k: v for k, v in filters.items() if v})
    problems = []
    for error in errors:
        filters[error["field"]] = ""
        problems.append(f"{error['field']}: {error['message']}")
    after = None
    if args.get("cursor"):
        after = service.position_after(decode_cursor(service.CLIENT_LISTING, args["cursor"]))
    account = filters["account_id"] or g.caller.account_filter()
    narrowing: dict[str, Any] = {
        "tag": filters["tag"] or None,
        "client_type": filters["client_type"] or None,
        "name_prefix": filters["name_prefix"] or None,
    }
    size = _page_size()
    rows = service.list_clients(account, after=after, limit=size + 1, **narrowing)
    kept: dict[str, Any] = {k: v for k, v in filters.items() if v}
    next_url = None
    if len(rows) > size:
        rows = rows[:size]
        cursor = encode_cursor(service.CLIENT_LISTING, service.client_position(rows[-1]))
        next_url = url_for("console.list_clients", cursor=cursor, **kept)
    # The previous page is computed, not remembered: the `size` clients
    # before this page's first (or before the cursor when this page is
    # empty); its cursor is the client just before those, if any.
    prev_url = None
    if after is not None:
        before = (rows[0].created_at, rows[0].id) if rows else after
        earlier = service.list_clients_before(account, before, limit=size + 1, **narrowing)
        if len(earlier) > size:
            cursor = encode_cursor(service.CLIENT_LISTING, service.client_position(earlier[-1]))
            prev_url = url_for("console.list_clients", cursor=cursor, **kept)
        else:
            prev_url = url_for("console.list_clients", **kept)
    return render_template(
        "console/clients.html",
        clients=rows,
        filters=filters,
        problems=problems,
        next_url=next_url,
        prev_url=prev_url,
        credentials=service.credential_summaries(c.id for c in rows),
        now=utcnow(),
    )


def _page_size() -> int:
    """Rows per console page (CONSOLE_PAGE_SIZE; tests make it small)."""
    return int(current_app.config.get("CONSOLE_PAGE_SIZE", PAGE_SIZE))


@bp.route("/clients/new", methods=["GET", "POST"])
@login_required
def create_client():
    """The new-client form; on success its first secret is shown once."""
    require("clients:write")
    caller = g.caller
    if request.method == "GET":
        return render_template("console/client_new.html", form=client_form(None), errors=[])
    body = client_body(request.form, creating=True, may_set_account=caller.is_system)
    try:
        values, account_id = schemas.validate_client(
            body,
            "create",
            account_id=caller.account_id,
            may_set_account=caller.is_system,
        )
        policy.ensure_may_hold(caller.scopes, values["scopes"])
        client, secret, plaintext = service.create_client(
            account_id, values, caller.client_id, runtime().pepper
        )
        db.session.commit()
    except AppError as error:
        db.session.rollback()
        page = render_template(
            "console/client_new.html",
            form=form_values(request.form),
            errors=_messages(error),
        )
        return page, error.status
    if secret is None or plaintext is None:
        # Created without a secret: nothing to show once; its page it is.
        return redirect(url_for("console.show_client", client_id=client.id), 303)
    return _secret_page(client, secret, plaintext, "created")


def _messages(error: AppError) -> list[str]:
    if error.errors:
        return [f"{e['field']}: {e['message']}" for e in error.errors]
    return [error.detail]


def _detail(client: Client, *, form: dict | None = None, errors: list[str] | None = None):
    secrets = secrets_service.list_secrets(client)
    keys = key_service.list_keys(client)
    events: list[AuditEvent] = []
    if "audit:read" in g.caller.scopes:
        targets = [client.id, *(s.id for s in secrets)]
        events = list(
            db.session.scalars(
                sa.select(AuditEvent)
                .where(
                    AuditEvent.account_id == client.account_id,
                    sa.or_(
                        AuditEvent.target.in_(targets),
                        AuditEvent.target.startswith(client.id + "/", autoescape=True),
                    ),
                )
                .order_by(AuditEvent.id.desc())
                .limit(10)
            )
        )
    return render_template(
        "console/client.html",
        client=client,
        form=form or client_form(client),
        errors=errors or [],
        secrets=secrets,
        keys=keys,
        federated=federation_service.list_credentials(client),
        events=events,
        now=utcnow(),
        lifetimes=SECRET_LIFETIMES,
        graces=GRACE_PERIODS,
        default_grace=secrets_service.DEFAULT_GRACE_PERIOD,
        binding=token_binding(client),
        can_write="clients:write" in g.caller.scopes and policy.may_manage(g.caller.scopes, client),
    )


@bp.get("/clients/<client_id>")
@login_required
def show_client(client_id: str):
    """One client: its settings, secrets, keys and recent changes."""
    require("clients:read")
    return _detail(_client(client_id))


def _check_version(client: Client) -> None:
    """The form's version must be the client's: another change came in between (412)."""
    if request.form.get("version") != str(client.version):
        raise PreconditionFailed(
            "The client changed since this page was loaded; reload it and try again.",
            code="etag_mismatch",
        )


@bp.post("/clients/<client_id>/edit")
@login_required
def update_client(client_id: str):
    """Save the edit form."""
    require("clients:write")
    client = _client(client_id, for_update=True)
    body = client_body(request.form, creating=False, may_set_account=False)
    try:
        policy.ensure_may_manage(g.caller.scopes, client)
        _check_version(client)
        values, _ = schemas.validate_client(
            body, "update", current=client, account_id=client.account_id
        )
        policy.ensure_may_hold(g.caller.scopes, values.get("scopes", client.scopes))
        policy.ensure_unlocked(client)
        changed = service.update_client(client, values, g.caller.client_id)
        db.session.commit()
    except AppError as error:
        db.session.rollback()
        client = _client(client_id)
        page = _detail(client, form=form_values(request.form), errors=_messages(error))
        return page, error.status
    flash("Saved." if changed else "Nothing changed.", "success")
    return redirect(url_for("console.show_client", client_id=client.id), code=303)


def _require_confirmation() -> None:
    """Acting POSTs that cut a client off carry the confirmation page's field, or change nothing.

    A bare POST (an old form, a script, a double click on a stale page)
    answers 400: the confirmation page (`confirm_action`) is the one way in.
    """
    if request.form.get("confirm") != "yes":
        raise BadRequest("Confirm the action on its confirmation page first.")


#: The actions asked about first: (title, what happens, button label).
CONFIRMATIONS = {
    "disable": (
        "Disable {name}?",
        "It can no longer get tokens; tokens it already has stay valid until they expire "
        "(revoke them too to cut it off at once). It can be enabled again.",
        "Disable client",
    ),
    "revoke-tokens": (
        "Revoke every token of {name}?",
        "Every token issued to this client until now stops working at once; new tokens work.",
        "Revoke all tokens",
    ),
    "rotate": (
        "Rotate the secret of {name}?",
        "A new secret is made and shown once. {grace}",
        "Rotate secret",
    ),
    "delete-secret": (
        "Delete the secret ending …{hint} of {name}?",
        "It stops working at once; whoever uses it can no longer get tokens. "
        "This cannot be undone.",
        "Delete secret",
    ),
}


@bp.get("/clients/<client_id>/confirm/<action>")
@login_required
def confirm_action(client_id: str, action: str):
    """Ask before an action that cuts a client or a secret off; its form POSTs with confirm=yes."""
    require("clients:write")
    if action not in CONFIRMATIONS:
        raise NotFound("No such action.")
    client = _client(client_id)
    title, text, button = CONFIRMATIONS[action]
    fields: dict[str, str] = {}
    words = {"name": client.name, "hint": "", "grace": ""}
    if action == "disable":
        target = url_for("console.change_state", client_id=client.id)
        fields["action"] = "disable"
    elif action == "revoke-tokens":
        target = url_for("console.revoke_tokens", client_id=client.id)
    elif action == "rotate":
        grace = choice(request.args, "grace_period", GRACE_PERIODS)
        if grace is None:
            grace = secrets_service.DEFAULT_GRACE_PERIOD
        target = url_for("console.rotate_secret", client_id=client.id)
        fields["grace_period"] = str(grace)
        words["grace"] = _grace_words(grace)
    else:
        secret = _secret_of(client, request.args.get("secret_id", ""))
        target = url_for("console.delete_secret", client_id=client.id, secret_id=secret.id)
        words["hint"] = secret.hint
    return render_template(
        "console/confirm_action.html",
        client=client,
        title=title.format(**words),
        text=text.format(**words),
        button=button,
        target=target,
        fields=fields,
        action=action,
    )


def _grace_words(grace: int) -> str:
    for seconds, label in GRACE_PERIODS:
        if seconds == grace:
            if grace == 0:
                return "Every other secret stops working at once."
            return f"Every other active secret keeps working for {label}, then expires."
    return f"Every other active secret keeps working for {grace} seconds, then expires."


def _secret_of(client: Client, secret_id: str):
    for secret in secrets_service.list_secrets(client):
        if secret.id == secret_id:
            return secret
    raise NotFound("No such secret.")


STATE_CHANGES = {
    "lock": ({"locked": True}, "Locked: no change is possible until it is unlocked."),
    "unlock": ({"locked": False}, "Unlocked."),
    "disable": ({"disabled": True}, "Disabled: it can no longer get tokens."),
    "enable": ({"disabled": False}, "Enabled."),
}


@bp.post("/clients/<client_id>/state")
@login_required
def change_state(client_id: str):
    """Lock, unlock, disable or enable a client."""
    require("clients:write")
    change = STATE_CHANGES.get(request.form.get("action", ""))
    if change is None:
        raise BadRequest("Unknown action.")
    values, message = change
    if values == {"disabled": True}:
        _require_confirmation()
    client = _client(client_id, for_update=True)
    policy.ensure_may_manage(g.caller.scopes, client)
    # As in the API, a locked client accepts only being unlocked.
    if values != {"locked": False}:
        policy.ensure_unlocked(client)
    service.update_client(client, values, g.caller.client_id)
    db.session.commit()
    flash(message, "success")
    return redirect(url_for("console.show_client", client_id=client.id), code=303)


@bp.post("/clients/<client_id>/revoke-tokens")
@login_required
def revoke_tokens(client_id: str):
    """Cut off every token issued to the client until now (allowed on a locked client)."""
    require("clients:write")
    _require_confirmation()
    client = _client(client_id, for_update=True)
    service.revoke_tokens(client, g.caller.client_id, g.caller.scopes)
    db.session.commit()
    flash("Every token issued to this client until now is revoked.", "success")
    return redirect(url_for("console.show_client", client_id=client.id), code=303)


@bp.get("/clients/<client_id>/delete")
@login_required
def confirm_delete(client_id: str):
    """Ask before deleting."""
    require("clients:write")
    return render_template("console/confirm_delete.html", client=_client(client_id))


@bp.post("/clients/<client_id>/delete")
@login_required
def delete_client(client_id: str):
    """Delete a client with its secrets and keys."""
    require("clients:write")
    client = _client(client_id, for_update=True)
    policy.ensure_may_manage(g.caller.scopes, client)
    if request.form.get("confirm_name") != client.name:
        raise BadRequest("Type the client's name to confirm the deletion.")
    policy.ensure_unlocked(client)
    name = client.name
    service.delete_client(client, g.caller.client_id)
    db.session.commit()
    flash(f"Client {name} deleted.", "success")
    return redirect(url_for("console.list_clients"), code=303)


# --- Secrets -------------------------------------------------------------------


def _secret_page(client: Client, secret, plaintext: str, reason: str, **extra: Any):
    """Keep the new secret for the next page only and redirect there (post/redirect/get).

    A refresh of that page then neither shows the secret again nor repeats
    the action that made it.
    """
    keep_once(
        {
            "kind": "secret",
            "client_id": client.id,
            "reason": reason,
            "plaintext": plaintext,
            "hint": secret.hint,
            "expires_at": secret.expires_at.isoformat() if secret.expires_at else None,
            **extra,
        }
    )
    return redirect(url_for("console.shown_secret", client_id=client.id), 303)


@bp.get("/clients/<client_id>/secrets/new")
@login_required
def shown_secret(client_id: str):
    """The one page that ever shows a secret, once; never cached (see console_headers)."""
    require("clients:read")
    client = _client(client_id)
    shown = take_once()
    if shown is None or shown.get("kind") != "secret" or shown.get("client_id") != client.id:
        flash("A new secret is shown only once, right after it is made.", "info")
        return redirect(url_for("console.show_client", client_id=client.id, _anchor="secrets"))
    expires_at = datetime.fromisoformat(shown["expires_at"]) if shown["expires_at"] else None
    old_end = shown.get("old_secrets_expire_at")
    return render_template(
        "console/secret_shown.html",
        client=client,
        shown=shown,
        expires_at=expires_at,
        old_secrets_expire_at=datetime.fromisoformat(old_end) if old_end else None,
    )


@bp.post("/clients/<client_id>/secrets")
@login_required
def add_secret(client_id: str):
    """Add a secret with a description and lifetime."""
    require("clients:write")
    lifetime = choice(request.form, "expires_in", SECRET_LIFETIMES)
    body: dict[str, Any] = {
        "description": (request.form.get("description") or "").strip() or None,
        "expires_in": lifetime or None,
    }
    _, errors = schemas.check(schemas.SecretCreate, body)
    if lifetime is None:
        errors.append({"field": "expires_in", "message": "choose one of the offered lifetimes"})
    if errors:
        raise ValidationError(errors)
    client = _client(client_id, for_update=True)
    policy.ensure_may_manage(g.caller.scopes, client)
    secret, plaintext = secrets_service.create_secret(
        client,
        runtime().pepper,
        g.caller.client_id,
        description=body["description"],
        expires_in=body["expires_in"],
    )
    db.session.commit()
    return _secret_page(client, secret, plaintext, "added")


@bp.post("/clients/<client_id>/secrets/rotate")
@login_required
def rotate_secret(client_id: str):
    """A new secret; the others keep working for the chosen grace period."""
    require("clients:write")
    _require_confirmation()
    grace = choice(request.form, "grace_period", GRACE_PERIODS)
    if grace is None:
        raise ValidationError(
            [{"field": "grace_period", "message": "choose one of the offered periods"}]
        )
    client = _client(client_id, for_update=True)
    policy.ensure_may_manage(g.caller.scopes, client)
    secret, plaintext = secrets_service.rotate_secret(
        client, grace, g.caller.client_id, runtime().pepper
    )
    db.session.commit()
    old_end = secrets_service.old_secrets_end(secret.created_at, grace)
    return _secret_page(
        client,
        secret,
        plaintext,
        "rotated",
        grace_period=grace,
        old_secrets_expire_at=old_end.isoformat(),
    )


@bp.post("/clients/<client_id>/secrets/<secret_id>/delete")
@login_required
def delete_secret(client_id: str, secret_id: str):
    """Delete one secret; it stops working at once."""
    require("clients:write")
    _require_confirmation()
    client = _client(client_id, for_update=True)
    policy.ensure_may_manage(g.caller.scopes, client)
    secrets_service.delete_secret(client, secret_id, g.caller.client_id)
    db.session.commit()
    flash("Secret deleted.", "success")
    return redirect(url_for("console.show_client", client_id=client.id, _anchor="secrets"), 303)


# --- Keys ----------------------------------------------------------------------


@bp.post("/clients/<client_id>/keys")
@login_required
def add_key(client_id: str):
    """Register a public JWK, or generate an Ed25519 pair whose private half is shown once."""
    require("clients:write")
    body: dict[str, Any] = {}
    if request.form.get("action") != "generate":
        text = (request.form.get("public_jwk") or "").strip()
        try:
            body["public_jwk"] = json.loads(text)
        except ValueError as exc:
            raise ValidationError(
                [{"field": "public_jwk", "message": "must be a JSON object (a public JWK)"}]
            ) from exc
    body = schemas.validate(schemas.KeyCreate, body)
    client = _client(client_id, for_update=True)
    policy.ensure_may_manage(g.caller.scopes, client)
    key, generated = key_service.add_key(client, body.get("public_jwk"), g.caller.client_id)
    db.session.commit()
    if generated is not None:
        keep_once(
            {
                "kind": "key",
                "client_id": client.id,
                "kid": key.kid,
                "alg": key.alg,
                "private_jwk": json.dumps(generated.private_jwk, indent=2),
                "private_key_pem": generated.private_key_pem,
            }
        )
        return redirect(url_for("console.shown_key", client_id=client.id), 303)
    flash(f"Key {key.kid} added.", "success")
    return redirect(url_for("console.show_client", client_id=client.id, _anchor="keys"), 303)


@bp.get("/clients/<client_id>/keys/new")
@login_required
def shown_key(client_id: str):
    """The one page that ever shows a generated private key, once."""
    require("clients:read")
    client = _client(client_id)
    shown = take_once()
    if shown is None or shown.get("kind") != "key" or shown.get("client_id") != client.id:
        flash("A generated private key is shown only once, right after it is made.", "info")
        return redirect(url_for("console.show_client", client_id=client.id, _anchor="keys"))
    return render_template("console/key_shown.html", client=client, shown=shown)


@bp.post("/clients/<client_id>/keys/<kid>/delete")
@login_required
def delete_key(client_id: str, kid: str):
    """Delete a key; assertions signed with it fail from now on."""
    require("clients:write")
    client = _client(client_id, for_update=True)
    policy.ensure_may_manage(g.caller.scopes, client)
    key_service.delete_key(client, kid, g.caller.client_id)
    db.session.commit()
    flash("Key deleted.", "success")
    return redirect(url_for("console.show_client", client_id=client.id, _anchor="keys"), 303)


# --- Signing keys ------------------------------------------------------------------


@bp.get("/signing-keys")
@login_required
def signing_keys():
    """The server's signing keys, read-only: the API's rule (keys:read, system account)."""
    policy.ensure_may_use_signing_keys("keys:read", g.caller.scopes, g.caller.is_system)
    return render_template(
        "console/signing_keys.html", keys=signing_key_service.keys_for_listing(), now=utcnow()
    )


# --- Audit log -------------------------------------------------------------------


#: Most rows an export holds; narrow the filters for more (the API pages through all).
EXPORT_LIMIT = 10_000
#: A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _audit_filter() -> tuple[audit_events.EventFilter, dict[str, str], list[str]]:
    """The audit filters of the query string: (the service's filter, the form's values, problems).

    A bad value is dropped and named, as on the client list.
    """
    args = request.args
    values = {
        key: args.get(key, "").strip() for key in ("action", "actor", "target", "since", "until")
    }
    problems: list[str] = []
    chosen: dict[str, Any] = {}
    if values["action"]:
        if values["action"] in audit_events.ACTIONS:
            chosen["action"] = values["action"]
        else:
            problems.append("action: choose one of the listed actions")
    for key in ("actor", "target"):
        if values[key]:
            if len(values[key]) <= 200 and "\x00" not in values[key]:
                chosen[key] = values[key]
            else:
                problems.append(f"{key}: at most 200 characters")
    for key in ("since", "until"):
        if values[key]:
            try:
                moment = datetime.fromisoformat(values[key])
            except ValueError:
                problems.append(f"{key}: a UTC date and time, as YYYY-MM-DDTHH:MM")
                continue
            # The form's times are UTC, as every time the console shows.
            chosen[key] = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    for problem in problems:
        values[problem.split(":")[0]] = ""
    return audit_events.EventFilter(**chosen), values, problems


def _audit_names(rows: list[AuditEvent]) -> dict[str, dict[str, str]]:
    """Each actor's and target's name and console link, where the object still exists."""
    refs = {e.actor for e in rows} | {e.target for e in rows}
    names: dict[str, dict[str, str]] = {}
    for ref, found in service.audit_references(refs, g.caller.account_filter()).items():
        if found.kind == "resource_server":
            url = url_for("console.show_resource_server", resource_server_id=found.object_id)
        elif found.kind == "signing_key":
            url = url_for("console.signing_keys")
        elif found.kind == "federated_credential":
            url = url_for("console.list_federated_credentials", client_id=found.client_id)
        else:
            anchor = {"secret": "secrets", "key": "keys"}.get(found.kind)
            url = url_for("console.show_client", client_id=found.client_id, _anchor=anchor)
        names[ref] = {"label": found.label, "url": url}
    return names


@bp.get("/audit")
@login_required
def audit_log():
    """Who changed what, newest first, filtered and paged like the API."""
    require("audit:read")
    where, values, problems = _audit_filter()
    kept: dict[str, Any] = {k: v for k, v in values.items() if v}
    account = g.caller.account_filter()
    size = _page_size()
    cursor = request.args.get("cursor")
    before = None
    if cursor:
        position = decode_cursor(audit_events.AUDIT_LISTING, cursor)
        before = audit_events.position_before(position)
    rows = audit_events.list_events(account, before=before, limit=size + 1, where=where)
    next_url = None
    if len(rows) > size:
        rows = rows[:size]
        cursor = encode_cursor(audit_events.AUDIT_LISTING, [rows[-1].id])
        next_url = url_for("console.audit_log", cursor=cursor, **kept)
    # The previous page: the `size` newer events just above this page; its
    # cursor is the id just above those, or none when they reach the newest.
    prev_url = None
    if before is not None:
        top = rows[0].id if rows else before - 1
        newer = audit_events.list_events_above(account, top, limit=size + 1, where=where)
        if len(newer) > size:
            cursor = encode_cursor(audit_events.AUDIT_LISTING, [newer[size].id])
            prev_url = url_for("console.audit_log", cursor=cursor, **kept)
        else:
            prev_url = url_for("console.audit_log", **kept)
    page = render_template(
        "console/audit.html",
        events=rows,
        names=_audit_names(rows),
        values=values,
        problems=problems,
        actions=sorted(audit_events.ACTIONS),
        next_url=next_url,
        prev_url=prev_url,
        csv_url=url_for("console.audit_export", fmt="csv", **kept),
        json_url=url_for("console.audit_export", fmt="json", **kept),
        now=utcnow(),
    )
    return page, 400 if problems else 200


def _export_rows(rows: list[AuditEvent]) -> list[dict[str, Any]]:
    names = _audit_names(rows)
    return [
        {
            "id": e.id,
            "at": e.at.isoformat().replace("+00:00", "Z"),
            "account_id": e.account_id,
            "actor": e.actor,
            "actor_name": names.get(e.actor, {}).get("label"),
            "action": e.action,
            "target": e.target,
            "target_name": names.get(e.target, {}).get("label"),
        }
        for e in rows
    ]


def _csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


@bp.get("/audit/export.<fmt>")
@login_required
def audit_export(fmt: str):
    """The filtered events (newest first, at most EXPORT_LIMIT) as CSV or JSON; never a secret."""
    require("audit:read")
    if fmt not in ("csv", "json"):
        raise NotFound("Export as csv or json.")
    where, _values, problems = _audit_filter()
    if problems:
        raise BadRequest("; ".join(problems))
    rows = audit_events.list_events(
        g.caller.account_filter(), before=None, limit=EXPORT_LIMIT, where=where
    )
    data = _export_rows(rows)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    if fmt == "json":
        response = make_response(json.dumps({"data": data}, ensure_ascii=False, indent=1))
        response.mimetype = "application/json"
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(EXPORT_FIELDS), lineterminator="\r\n")
        writer.writeheader()
        for row in data:
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})
        response = make_response(out.getvalue())
        response.mimetype = "text/csv"
    response.headers["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    return response


EXPORT_FIELDS = ("id", "at", "account_id", "actor", "actor_name", "action", "target", "target_name")
