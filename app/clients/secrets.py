"""Client secrets: generation, keyed hashing and constant-time verification.

Our secrets carry 256 bits from the OS CSPRNG, so guessing one is hopeless
whatever the hash; a slow hash (bcrypt, PBKDF2) only protects low-entropy
passwords and would cost milliseconds per token request. We store
HMAC-SHA-256(pepper, secret): a stolen database alone is useless without the
pepper, which lives outside the database (SECRET_PEPPER or KEYS_DIR/pepper).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets as _random
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from app.audit import events as audit
from app.errors import NotFound
from app.extensions import db
from app.models import Client, ClientSecret
from app.timeutil import utcnow

SECRET_PREFIX = "ccs_"
HINT_LENGTH = 4


def generate_secret() -> str:
    """A new client secret: the prefix plus 32 random bytes, URL-safe."""
    return SECRET_PREFIX + _random.token_urlsafe(32)


def hash_secret(secret: str, pepper: bytes) -> str:
    """HMAC-SHA-256 of the secret under the server's pepper, hex encoded."""
    return hmac.new(pepper, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def secret_hint(secret: str) -> str:
    return secret[-HINT_LENGTH:]


def verify_secret(secret: str, pepper: bytes, hashes: list[str]) -> int | None:
    """Index of the hash the secret matches, or None; constant time per hash.

    Every candidate is compared (no early exit), so timing reveals nothing
    about which hash matched.
    """
    candidate = hash_secret(secret, pepper)
    found = None
    for index, stored in enumerate(hashes):
        if hmac.compare_digest(candidate, stored) and found is None:
            found = index
    return found


def load_pepper(configured: str | None, keys_dir: str) -> bytes:
    """The pepper from config, or from KEYS_DIR/pepper (made on first use)."""
    if configured:
        return configured.encode("utf-8")
    path = Path(keys_dir) / "pepper"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: two processes starting at once agree on one pepper.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(_random.token_hex(32))
    value = path.read_text().strip()
    if not value:
        raise RuntimeError(f"{path} is empty; delete it or set SECRET_PEPPER")
    return value.encode("utf-8")


# --- Secret management (contract 2.2). Services add and flush; callers commit.
#
# `service` and `records` import this module for the hashing helpers above,
# so the management functions below import them lazily to avoid a cycle.


def list_secrets(client: Client) -> list[ClientSecret]:
    """Every secret row of the client, expired ones included, oldest first."""
    return list(
        db.session.scalars(
            sa.select(ClientSecret)
            .where(ClientSecret.client_id == client.id)
            .order_by(ClientSecret.created_at, ClientSecret.id)
        )
    )


def create_secret(
    client: Client,
    pepper: bytes,
    actor: str,
    *,
    description: str | None = None,
    expires_in: int | None = None,
) -> tuple[ClientSecret, str]:
    """Add a secret to a client whose row the caller has locked (get_client for_update).

    :raise Conflict: client_locked, or too_many_secrets past five active ones.
    """
    from app.clients.service import add_secret, ensure_unlocked

    ensure_unlocked(client)
    return add_secret(client, pepper, actor, description=description, expires_in=expires_in)


def rotate_secret(
    client: Client, grace_period: int, actor: str, pepper: bytes
) -> tuple[ClientSecret, str]:
    """Make a new secret; every other active secret expires within grace_period seconds.

    An earlier expiry a secret already had stays. The five-active limit does
    not refuse a rotation: the secrets it schedules to expire are on their way
    out, and rotating is how an admin recovers from a leaked secret. The
    caller must hold the client row lock (get_client(..., for_update=True)).

    :raise Conflict: client_locked.
    """
    from app.clients.service import add_secret, ensure_unlocked

    ensure_unlocked(client)
    now = utcnow()
    cutoff = now + timedelta(seconds=grace_period)
    active = db.session.scalars(
        sa.select(ClientSecret).where(
            ClientSecret.client_id == client.id,
            sa.or_(ClientSecret.expires_at.is_(None), ClientSecret.expires_at > now),
        )
    )
    for old in active:
        if old.expires_at is None or old.expires_at > cutoff:
            old.expires_at = cutoff
    db.session.flush()
    return add_secret(client, pepper, actor, action="secret.rotated", enforce_limit=False)


def delete_secret(client: Client, secret_id: str, actor: str) -> None:
    """Delete one of the client's secrets; it stops working once the caller commits.

    :raise NotFound: secret_not_found for an id that is not one of this client's.
    :raise Conflict: client_locked.
    """
    from app.clients.records import mark_client_changed
    from app.clients.service import ensure_unlocked

    secret = None
    # Ids are at most 64 characters; anything else (or a NUL, which
    # PostgreSQL refuses in text) cannot name a secret, so skip the query.
    if 0 < len(secret_id) <= 64 and "\x00" not in secret_id:
        secret = db.session.scalar(
            sa.select(ClientSecret).where(
                ClientSecret.id == secret_id, ClientSecret.client_id == client.id
            )
        )
    if secret is None:
        raise NotFound("No such secret.", code="secret_not_found")
    ensure_unlocked(client)
    db.session.delete(secret)
    db.session.flush()
    mark_client_changed(client.id)
    audit.record(actor, "secret.deleted", secret_id, client.account_id)
