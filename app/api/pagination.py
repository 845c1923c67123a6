"""Keyset pagination: opaque signed cursors, the listed account and the `Link` header.

A cursor is the JSON position signed by itsdangerous (HMAC-SHA-256) under the
app's SECRET_KEY, salted with the listing's name, so a client cannot forge a
position, reuse one listing's cursor on another, or make us parse arbitrary
input. Positions are keys of a stable order (never OFFSET), so rows inserted
or deleted while someone pages never shift others across page boundaries.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlencode

from flask import current_app, jsonify, request
from itsdangerous import BadData, URLSafeSerializer
from pydantic import BaseModel

from app.api.schemas import MAX_CURSOR_LENGTH, dump
from app.errors import BadRequest, ValidationError


def _serializer(listing: str) -> URLSafeSerializer:
    return URLSafeSerializer(
        str(current_app.config["SECRET_KEY"]),
        salt=f"cursor:{listing}",
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
    )


def encode_cursor(listing: str, position: list[Any]) -> str:
    """An opaque cursor for the keyset position of one listing."""
    return _serializer(listing).dumps(position)


def decode_cursor(listing: str, cursor: str) -> list[Any]:
    """The position a cursor of this listing holds.

    :raise BadRequest: 400 invalid_cursor for a garbled, forged or foreign cursor.
    """
    invalid = BadRequest("The cursor is invalid.", code="invalid_cursor")
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise invalid
    try:
        position = _serializer(listing).loads(cursor)
    except BadData as exc:
        raise invalid from exc
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
    # Built from ISSUER, never from the request's Host header, which the
    # client chooses: a forged Host must not steer a client's next request.
    base = current_app.config["ISSUER"] + request.path
    return f'<{base}?{urlencode(args)}>; rel="next"'


def page_response(listing: str, items: list[Any], limit: int, position_of, page: type[BaseModel]):
    """The `{data, next_cursor}` body (a `page` schema) and headers for limit + 1 rows."""
    has_more = len(items) > limit
    items = items[:limit]
    cursor = encode_cursor(listing, position_of(items[-1])) if has_more and items else None
    response = jsonify(dump(page, {"data": items, "next_cursor": cursor}))
    if cursor:
        response.headers["Link"] = next_link(cursor)
    return response
