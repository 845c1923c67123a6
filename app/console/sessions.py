"""Console sessions kept in the database, so that every instance ends them at once.

The browser's cookie (Flask's signed session) holds only a random session
token and the CSRF token. The `console_sessions` row (app/models/console_session.py)
is keyed by the token's SHA-256: a stolen copy of the table opens nothing,
and a lookup by hash leaks nothing about the token through timing.

Every console request reads its row joined with its client and the secret
it signed in with, in one statement, straight from the database (never the
per-process client cache), so a change made on any instance counts on the
next request everywhere. The row is deleted (its session ends) at sign-out
and as soon as that read finds it no longer valid: past `expires_at`; the
client deleted, disabled, no longer an admin or without scopes; the secret
deleted or expired (a rotation without grace expires it); or the session
begun before the client's token cut-off (`clients.tokens_valid_after`).

Writes run in their own short transactions, committed before they return:
ending a session must hold even though the request then only redirects and
never commits. Expired rows are purged at each sign-in. Why the database
and not Redis: docs/decisions.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.api.auth import Caller
from app.extensions import db
from app.models import Client, ClientSecret, ConsoleSession
from app.timeutil import utcnow

#: Bytes of randomness in a session token (256 bits).
TOKEN_BYTES = 32


def token_hash(token: str) -> str:
    """The row id for a session token: its SHA-256 in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def start(client_id: str, secret_id: str, lifetime: int) -> str | None:
    """Record a new session of `client_id` signed in with `secret_id`; returns its token.

    The session lasts `lifetime` seconds from now at most. The token is
    returned for the cookie only; the database keeps its hash. None when the
    new session is not valid after all: the caller checked the credentials
    against a cached client record, and the database is what decides.
    """
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    try:
        with db.engine.begin() as conn:
            _delete_expired(conn, now)
            conn.execute(
                sa.insert(ConsoleSession).values(
                    id=token_hash(token),
                    client_id=client_id,
                    secret_id=secret_id,
                    created_at=now,
                    expires_at=now + timedelta(seconds=lifetime),
                )
            )
    except sa.exc.IntegrityError:
        return None  # the client or the secret was deleted since it was cached
    return token if admin(token) is not None else None


def end(token: str) -> None:
    """Delete the session of `token`, on every instance at once; no session is a no-op."""
    with db.engine.begin() as conn:
        conn.execute(sa.delete(ConsoleSession).where(ConsoleSession.id == token_hash(token)))


def _delete_expired(conn: sa.Connection, now: datetime) -> None:
    # Sign-ins are rare and the index on expires_at makes this cheap, so
    # each one sweeps: the table holds the live sessions and those that
    # expired since the last sign-in.
    conn.execute(sa.delete(ConsoleSession).where(ConsoleSession.expires_at <= now))


def _admin_query(session_id: str) -> sa.Select:
    # Outer joins: a row whose client or secret is gone (SQLite enforces
    # ON DELETE CASCADE only with a pragma) is still found, and deleted.
    return (
        sa.select(
            ConsoleSession.created_at,
            ConsoleSession.expires_at,
            Client.id,
            Client.account_id,
            Client.client_type,
            Client.scopes,
            Client.disabled,
            Client.tokens_valid_after,
            ClientSecret.id,
            ClientSecret.expires_at,
        )
        .select_from(ConsoleSession)
        .outerjoin(Client, Client.id == ConsoleSession.client_id)
        .outerjoin(
            ClientSecret,
            sa.and_(
                ClientSecret.id == ConsoleSession.secret_id,
                ClientSecret.client_id == ConsoleSession.client_id,
            ),
        )
        .where(ConsoleSession.id == session_id)
    )


def admin(token: str) -> Caller | None:
    """The admin signed in with `token`, or None; a session no longer valid is deleted.

    One statement, read through the request's database session.
    """
    session_id = token_hash(token)
    row = db.session.execute(_admin_query(session_id)).one_or_none()
    if row is None:
        return None
    (
        created_at,
        expires_at,
        client_id,
        account_id,
        client_type,
        scopes,
        disabled,
        cut_off,
        secret_id,
        secret_expires_at,
    ) = row
    now = utcnow()
    valid = (
        expires_at > now
        and client_id is not None
        and not disabled
        and client_type == "admin"
        and bool(scopes)
        and secret_id is not None
        and (secret_expires_at is None or secret_expires_at > now)
        and (cut_off is None or created_at >= cut_off)
    )
    if not valid:
        with db.engine.begin() as conn:
            conn.execute(sa.delete(ConsoleSession).where(ConsoleSession.id == session_id))
        return None
    return Caller(client_id, account_id, frozenset(scopes), {})


# --- Shown once ------------------------------------------------------------------
#
# A new secret (or a generated private key) is made by a POST that redirects
# (303) to a GET page showing it, so that no refresh repeats the action. The
# plaintext crosses that redirect sealed (AES-256-GCM) in the session cookie,
# with a key derived from the server's SECRET_KEY and this session's token:
# the cookie alone, or another session, or the server's key alone opens
# nothing, and the `console_sessions` row holds no copy (no schema change).
# The page that shows it removes it from the cookie, so a refresh, the back
# button or a second tab shows it no more.

ONCE_KEY = "once"


def _once_key(secret_key: str | bytes, token: str) -> bytes:
    if isinstance(secret_key, str):
        secret_key = secret_key.encode()
    return hmac.new(secret_key, b"console-shown-once:" + token.encode(), "sha256").digest()


def seal(secret_key: str | bytes, token: str, payload: dict) -> str:
    """`payload` (JSON) encrypted and authenticated for this session only."""
    nonce = secrets.token_bytes(12)
    box = AESGCM(_once_key(secret_key, token)).encrypt(
        nonce, json.dumps(payload).encode(), token_hash(token).encode()
    )
    return base64.urlsafe_b64encode(nonce + box).decode()


def unseal(secret_key: str | bytes, token: str, sealed: object) -> dict | None:
    """The payload `seal` made for this session, or None (absent, tampered, another session's)."""
    if not isinstance(sealed, str):
        return None
    try:
        raw = base64.urlsafe_b64decode(sealed.encode())
        plain = AESGCM(_once_key(secret_key, token)).decrypt(
            raw[:12], raw[12:], token_hash(token).encode()
        )
        payload = json.loads(plain)
    except (ValueError, InvalidTag):
        return None
    return payload if isinstance(payload, dict) else None
