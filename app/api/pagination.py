"""Keyset pagination: opaque signed cursors, the listed account and the `Link` header.

A cursor is base64url(JSON position) "." base64url(HMAC-SHA-256 tag) under the
app's SECRET_KEY and the listing's name, so a client cannot forge a position,
reuse one listing's cursor on another, or make us parse arbitrary input.
Positions are keys of a stable order (never OFFSET), so rows inserted or
deleted while someone pages never shift others across page boundaries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlencode

from flask import current_app, jsonify, request
from pydantic import BaseModel

from app.api.schemas import MAX_CURSOR_LENGTH, dump
from app.errors import BadRequest, ValidationError


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(listing: str, payload: bytes) -> bytes:
    key = str(current_app.config["SECRET_KEY"]).encode("utf-8")
    return hmac.new(key, listing.encode("ascii") + b"\x00" + payload, hashlib.sha256).digest()


def encode_cursor(listing: str, position: list[Any]) -> str:
    """An opaque cursor for the keyset position of one listing."""
    payload = json.dumps(position, separators=(",", ":")).encode("utf-8")
    return f"{_b64encode(payload)}.{_b64encode(_tag(listing, payload))}"


def decode_cursor(listing: str, cursor: str) -> list[Any]:
    """The position a cursor of this listing holds.

    :raise BadRequest: 400 invalid_cursor for a garbled, forged or foreign cursor.
    """
    invalid = BadRequest("The cursor is invalid.", code="invalid_cursor")
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH or cursor.count(".") != 1:
        raise invalid
    payload_text, tag_text = cursor.split(".")
    try:
        payload = _b64decode(payload_text)
        tag = _b64decode(tag_text)
    except (binascii.Error, ValueError) as exc:
        raise invalid from exc
    if not hmac.compare_digest(tag, _tag(listing, payload)):
        raise invalid
    position = json.loads(payload)
    if not isinstance(position, list):
        raise invalid
    return position


def listing_account(caller: Any, requested: str | None) -> str | None:
    """The account a listing covers: the caller's, or `account_id` for system admins.

    An account admin may name only its own account (a no-op); naming another
    is a 400 rather than a silent answer about its own clients.

    :raise ValidationError: 400 for a forbidden `account_id`.
    """
    if requested is None:
        return caller.account_filter()
    if not caller.is_system and requested != caller.account_id:
        raise ValidationError(
            [{"field": "account_id", "message": "only system admins may filter by account"}],
            "The query string is invalid.",
        )
    return requested


def next_link(next_cursor: str) -> str:
    """A `Link` header value pointing at the next page of this request's listing."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "cursor"]
    args.append(("cursor", next_cursor))
    return f'<{request.base_url}?{urlencode(args)}>; rel="next"'


def page_response(listing: str, items: list[Any], limit: int, position_of, page: type[BaseModel]):
    """The `{data, next_cursor}` body (a `page` schema) and headers for limit + 1 rows."""
    has_more = len(items) > limit
    items = items[:limit]
    cursor = encode_cursor(listing, position_of(items[-1])) if has_more and items else None
    response = jsonify(dump(page, {"data": items, "next_cursor": cursor}))
    if cursor:
        response.headers["Link"] = next_link(cursor)
    return response
