"""Validation of management API input; the one place deciding which fields leave the server.

Views call `json_body()` to read a request body, `validate_client()` to turn
it into clean column values, and `client_to_dict()` to serialize a client.
Every problem is collected into one `ValidationError` with `errors[]`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from flask import request
from werkzeug.exceptions import UnsupportedMediaType

from app.clients.service import (
    ACCOUNT_MANAGEMENT_SCOPES,
    CLIENT_DEFAULTS,
    MANAGEMENT_SCOPES,
    SYSTEM_ACCOUNT,
)
from app.errors import BadRequest, ValidationError
from app.models import CLIENT_TYPES, Client
from app.timeutil import isoformat

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ACCOUNT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN_RE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")
# Tags and audiences are free text, but never control characters.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

MAX_TAGS = 20
MAX_TAG_LENGTH = 64
MAX_SCOPES = 100
MAX_AUDIENCES = 20
MAX_AUDIENCE_LENGTH = 1024
MIN_TTL, MAX_TTL = 60, 86400

READ_ONLY_CLIENT_FIELDS = ("id", "account_id", "created_at", "updated_at")
MUTABLE_CLIENT_FIELDS = (
    "name",
    "friendly_name",
    "description",
    "tags",
    "client_type",
    "owner",
    "scopes",
    "audiences",
    "access_token_ttl",
    "locked",
    "disabled",
)
JSON_MIMETYPES = ("application/json", "application/merge-patch+json")

Errors = list[dict[str, str]]


def _error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def validate_name(value: object, field: str = "name") -> Errors:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        return [_error(field, "must match ^[a-z0-9][a-z0-9_-]{0,62}$")]
    return []


def validate_account_id(value: object, field: str = "account_id") -> Errors:
    if not isinstance(value, str) or not ACCOUNT_RE.fullmatch(value):
        return [_error(field, "must match ^[a-z0-9][a-z0-9_-]{0,63}$")]
    return []


# --- request bodies --------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 8259 §4: with duplicate names parsers disagree on the value; refuse
    # rather than let a proxy and this server read different bodies.
    body = dict(pairs)
    if len(body) != len(pairs):
        raise ValueError("duplicate name in a JSON object")
    return body


def json_body(*, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object.

    :param optional: an empty body (any or no Content-Type) counts as `{}`.
    :raise UnsupportedMediaType: 415 when the body is not declared as JSON.
    :raise BadRequest: 400 when it is not valid JSON or not an object.
    """
    raw = request.get_data(cache=True)  # 413 past MAX_CONTENT_LENGTH
    if optional and not raw.strip():
        return {}
    if request.mimetype not in JSON_MIMETYPES:
        raise UnsupportedMediaType("The request body must be application/json.")
    try:
        body = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_unique_keys
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest("The request body is not valid JSON.", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_body")
    return body


def reject_fields(
    body: dict[str, Any], allowed: tuple[str, ...], read_only: tuple[str, ...] = ()
) -> Errors:
    """Errors for read-only and unknown fields of a body."""
    errors = []
    for field in body:
        if field in allowed:
            continue
        if field in read_only:
            errors.append(_error(field, "is read-only"))
        else:
            errors.append(_error(field, "is not a known field"))
    return errors


# --- field validators: each returns (clean value, errors) ------------------------------------


def _string(
    field: str, value: object, *, min_len: int, max_len: int, nullable: bool = False
) -> Errors:
    if value is None and nullable:
        return []
    if not isinstance(value, str):
        return [_error(field, "must be a string" + (" or null" if nullable else ""))]
    if not min_len <= len(value) <= max_len:
        return [_error(field, f"must be {min_len} to {max_len} characters long")]
    if CONTROL_RE.search(value) and field != "description":
        return [_error(field, "must not contain control characters")]
    return []


def _string_list(field: str, value: object, *, max_items: int, item_check) -> Errors:
    if not isinstance(value, list):
        return [_error(field, "must be an array of strings")]
    if len(value) > max_items:
        return [_error(field, f"must have at most {max_items} items")]
    errors: Errors = []
    for index, item in enumerate(value):
        message = item_check(item)
        if message:
            errors.append(_error(f"{field}[{index}]", message))
    if not errors and len(set(value)) != len(value):
        errors.append(_error(field, "must not repeat an item"))
    return errors


def _tag_problem(item: object) -> str | None:
    if not isinstance(item, str) or not 1 <= len(item) <= MAX_TAG_LENGTH:
        return f"must be a string of 1 to {MAX_TAG_LENGTH} characters"
    if CONTROL_RE.search(item):
        return "must not contain control characters"
    return None


def _scope_problem(item: object) -> str | None:
    if not isinstance(item, str) or not SCOPE_TOKEN_RE.fullmatch(item):
        return "must be an RFC 6749 scope-token (printable ASCII, no spaces, quotes or \\)"
    return None


def _audience_problem(item: object) -> str | None:
    if not isinstance(item, str) or not 1 <= len(item) <= MAX_AUDIENCE_LENGTH:
        return f"must be a string of 1 to {MAX_AUDIENCE_LENGTH} characters"
    if CONTROL_RE.search(item) or " " in item:
        return "must not contain spaces or control characters"
    return None


def _check_field(field: str, value: object) -> Errors:
    """Type and range checks of one mutable client field."""
    if field == "name":
        return validate_name(value)
    if field == "friendly_name":
        return _string(field, value, min_len=1, max_len=200)
    if field == "description":
        return _string(field, value, min_len=0, max_len=2000, nullable=True)
    if field == "owner":
        return _string(field, value, min_len=1, max_len=254, nullable=True)
    if field == "tags":
        return _string_list(field, value, max_items=MAX_TAGS, item_check=_tag_problem)
    if field == "scopes":
        return _string_list(field, value, max_items=MAX_SCOPES, item_check=_scope_problem)
    if field == "audiences":
        return _string_list(field, value, max_items=MAX_AUDIENCES, item_check=_audience_problem)
    if field == "client_type":
        if value not in CLIENT_TYPES:
            return [_error(field, 'must be "standard" or "admin"')]
        return []
    if field == "access_token_ttl":
        # bool is an int subclass in Python; true is not a TTL.
        if isinstance(value, bool) or not isinstance(value, int):
            return [_error(field, "must be an integer")]
        if not MIN_TTL <= value <= MAX_TTL:
            return [_error(field, f"must be between {MIN_TTL} and {MAX_TTL}")]
        return []
    if field in ("locked", "disabled"):
        if not isinstance(value, bool):
            return [_error(field, "must be true or false")]
        return []
    raise AssertionError(field)


def scope_rule_errors(account_id: str, client_type: str, scopes: list[str]) -> Errors:
    """Contract 2: only admin clients hold management scopes; keys:* only in the system account."""
    management = [s for s in scopes if s in MANAGEMENT_SCOPES]
    if not management:
        return []
    if client_type != "admin":
        return [_error("scopes", f"{management[0]!r} may only be given to admin clients")]
    allowed = MANAGEMENT_SCOPES if account_id == SYSTEM_ACCOUNT else ACCOUNT_MANAGEMENT_SCOPES
    for scope in management:
        if scope not in allowed:
            return [_error("scopes", f"{scope!r} is only for clients of the system account")]
    return []


def validate_client(
    body: dict[str, Any],
    mode: str,
    *,
    current: Client | None = None,
    account_id: str,
    may_set_account: bool = False,
    grantable: frozenset[str] = frozenset(MANAGEMENT_SCOPES),
) -> tuple[dict[str, Any], str]:
    """Check a client body; returns (column values to set, account id).

    `mode` is "create" (POST), "replace" (PUT: omitted optional fields take
    their defaults) or "update" (PATCH: only the fields sent). Rules that span
    fields are checked on the client as it would be after the change;
    `grantable` are the management scopes the caller may hand out (its own).

    :raise ValidationError: 400 with every problem found.
    """
    allowed = MUTABLE_CLIENT_FIELDS + (("account_id",) if may_set_account else ())
    errors = reject_fields(body, allowed, READ_ONLY_CLIENT_FIELDS)
    if mode != "update" and "name" not in body:
        errors.append(_error("name", "is required"))
    for field in MUTABLE_CLIENT_FIELDS:
        if field in body:
            errors.extend(_check_field(field, body[field]))
    if may_set_account and "account_id" in body:
        errors.extend(validate_account_id(body["account_id"]))
        if not errors:
            account_id = body["account_id"]
    if errors:
        raise ValidationError(errors)

    values = {f: body[f] for f in MUTABLE_CLIENT_FIELDS if f in body}
    if mode in ("create", "replace"):
        values = {**CLIENT_DEFAULTS, **values}
        values.setdefault("friendly_name", values["name"])
        values["tags"] = list(values["tags"])
        values["scopes"] = list(values["scopes"])
        values["audiences"] = list(values["audiences"])
        merged = values
    else:
        assert current is not None
        merged = {f: getattr(current, f) for f in MUTABLE_CLIENT_FIELDS} | values
    errors = scope_rule_errors(account_id, merged["client_type"], merged["scopes"] or [])
    # A caller grants no management scope it lacks itself; else an admin
    # could mint (or edit itself into) a more powerful admin.
    before = set(current.scopes or []) if current is not None and mode != "create" else set()
    for scope in set(merged["scopes"] or []) - before:
        if scope in MANAGEMENT_SCOPES and scope not in grantable and not errors:
            errors.append(_error("scopes", f"you cannot grant {scope!r}: your token lacks it"))
    if errors:
        raise ValidationError(errors)
    return values, account_id


# --- output ----------------------------------------------------------------------------------


def client_to_dict(client: Client) -> dict[str, Any]:
    """A client as the API shows it; never secrets or their hashes."""
    return {
        "id": client.id,
        "account_id": client.account_id,
        "name": client.name,
        "friendly_name": client.friendly_name,
        "description": client.description,
        "tags": list(client.tags or []),
        "client_type": client.client_type,
        "owner": client.owner,
        "scopes": list(client.scopes or []),
        "audiences": list(client.audiences or []),
        "access_token_ttl": client.access_token_ttl,
        "locked": bool(client.locked),
        "disabled": bool(client.disabled),
        "created_at": isoformat(client.created_at),
        "updated_at": isoformat(client.updated_at),
    }


def client_etag(client: Client) -> str:
    """The strong ETag value (unquoted) of a client: changes with every version."""
    return hashlib.sha256(f"{client.id}:{client.version}".encode()).hexdigest()[:32]


def audit_event_to_dict(event: Any) -> dict[str, Any]:
    """An audit event as the API shows it."""
    return {
        "id": event.id,
        "at": isoformat(event.at),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "account_id": event.account_id,
    }
