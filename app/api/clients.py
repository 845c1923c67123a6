"""Clients (contract 2.1): create, list, get, patch, put, delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import g, jsonify, request, url_for

from app.api import bp
from app.api.auth import require_scope
from app.api.pagination import (
    account_from_query,
    check_query_args,
    decode_cursor,
    page_response,
    parse_limit,
)
from app.api.schemas import CONTROL_RE, client_etag, client_to_dict, json_body, validate_client
from app.clients import policy, service
from app.errors import BadRequest, PreconditionFailed, ValidationError
from app.extensions import db
from app.models import CLIENT_TYPES, Client
from app.runtime import runtime

LISTING = "clients"
_MICROSECOND = timedelta(microseconds=1)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _client_response(client: Client, status: int = 200, extra: dict | None = None):
    response = jsonify({**client_to_dict(client), **(extra or {})})
    response.status_code = status
    response.set_etag(client_etag(client))
    return response


def _check_if_match(client: Client) -> None:
    """RFC 9110 §13.1.1: a write with a stale If-Match changes nothing.

    :raise PreconditionFailed: 412.
    """
    if "If-Match" not in request.headers:
        return
    if not request.if_match.contains(client_etag(client)):
        raise PreconditionFailed(
            "The client has changed since that ETag was issued.", code="etag_mismatch"
        )


def _locked_for_update(client_id: str) -> Client:
    return service.get_client(g.caller.account_filter(), client_id, for_update=True)


@bp.post("/clients")
@require_scope("clients:write")
def create_client():
    """Create a client and its first secret (shown once)."""
    caller = g.caller
    body = json_body()
    values, account_id = validate_client(
        body,
        "create",
        account_id=caller.account_id,
        may_set_account=caller.is_system,
        grantable=caller.scopes,
    )
    client, secret, plaintext = service.create_client(
        account_id, values, caller.client_id, runtime().pepper
    )
    db.session.commit()
    response = _client_response(client, 201, {"client_secret": plaintext, "secret_id": secret.id})
    response.headers["Location"] = url_for("api.get_client", client_id=client.id)
    return response


@bp.get("/clients")
@require_scope("clients:read")
def list_clients():
    """List clients in creation order, a keyset page at a time."""
    caller = g.caller
    check_query_args(("limit", "cursor", "tag", "client_type", "name_prefix", "account_id"))
    limit = parse_limit()
    args = request.args
    errors = []
    tag = args.get("tag")
    if tag is not None and (not 1 <= len(tag) <= 64 or CONTROL_RE.search(tag)):
        # Stored tags never hold control characters (and PostgreSQL JSONB no NUL).
        errors.append({"field": "tag", "message": "must be 1 to 64 characters, no control"})
    client_type = args.get("client_type")
    if client_type is not None and client_type not in CLIENT_TYPES:
        errors.append({"field": "client_type", "message": 'must be "standard" or "admin"'})
    name_prefix = args.get("name_prefix")
    if name_prefix is not None and not _valid_prefix(name_prefix):
        errors.append({"field": "name_prefix", "message": "must be 1 to 63 of [a-z0-9_-]"})
    if errors:
        raise ValidationError(errors, "The query string is invalid.")
    account = account_from_query(caller)
    after = None
    if "cursor" in args:
        after = _position(decode_cursor(LISTING, args["cursor"]))
    rows = service.list_clients(
        account,
        after=after,
        limit=limit + 1,
        tag=tag,
        client_type=client_type,
        name_prefix=name_prefix,
    )
    return page_response(LISTING, rows, limit, _cursor_position, client_to_dict)


def _valid_prefix(prefix: str) -> bool:
    return 1 <= len(prefix) <= 63 and all(c in _NAME_CHARS for c in prefix)


def _cursor_position(client: Client) -> list:
    created = client.created_at.astimezone(UTC)
    micros = (created - _EPOCH) // _MICROSECOND
    return [micros, client.id]


def _position(position: list) -> tuple[datetime, str]:
    try:
        micros, client_id = position
        if not isinstance(micros, int) or not isinstance(client_id, str):
            raise TypeError
        created = _EPOCH + micros * _MICROSECOND
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequest("The cursor is invalid.", code="invalid_cursor") from exc
    return created, client_id


@bp.get("/clients/<client_id>")
@require_scope("clients:read")
def get_client(client_id: str):
    """One client of the caller's account (404 for another account's)."""
    client = service.get_client(g.caller.account_filter(), client_id)
    return _client_response(client)


@bp.patch("/clients/<client_id>")
@require_scope("clients:write")
def update_client(client_id: str):
    """Change the fields sent; a locked client accepts only {"locked": false}."""
    return _write_client(client_id, "update")


@bp.put("/clients/<client_id>")
@require_scope("clients:write")
def replace_client(client_id: str):
    """Replace every mutable field; omitted optional fields take their defaults."""
    return _write_client(client_id, "replace")


def _write_client(client_id: str, mode: str):
    client = _locked_for_update(client_id)
    body = json_body()
    values, _ = validate_client(
        body, mode, current=client, account_id=client.account_id, grantable=g.caller.scopes
    )
    _check_if_match(client)
    # Only a PATCH of exactly {"locked": false} passes a lock; a PUT always
    # restates name and more, so it never does.
    if mode == "replace" or body != {"locked": False}:
        policy.ensure_unlocked(client)
    service.update_client(client, values, g.caller.client_id)
    db.session.commit()
    return _client_response(client)


@bp.delete("/clients/<client_id>")
@require_scope("clients:write")
def delete_client(client_id: str):
    """Delete a client with its secrets and keys."""
    client = _locked_for_update(client_id)
    _check_if_match(client)
    policy.ensure_unlocked(client)
    service.delete_client(client, g.caller.client_id)
    db.session.commit()
    return "", 204
