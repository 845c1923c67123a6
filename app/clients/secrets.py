"""Client secrets: add, list, rotate and delete (docs/api.md §2.2).

Services add and flush; the view or command that calls them commits once.
The hashing itself lives in app.clients.hashing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from app.audit import events as audit
from app.clients.hashing import generate_secret, hash_secret, secret_hint
from app.clients.policy import ensure_unlocked
from app.clients.records import mark_client_changed
from app.errors import Conflict, NotFound
from app.extensions import db
from app.models import Client, ClientSecret
from app.models.types import new_id
from app.timeutil import utcnow

MAX_ACTIVE_SECRETS = 5
#: The longest lifetime a new secret may be given, in seconds.
MAX_SECRET_LIFETIME = 365 * 24 * 3600
#: The longest a rotation lets the other secrets keep working, in seconds.
MAX_GRACE_PERIOD = 30 * 24 * 3600
#: A rotation's grace period when the caller names none, in every face (API,
#: CLI, console): none, since a rotation is often the answer to a leak.
DEFAULT_GRACE_PERIOD = 0


def active_secret_count(client_id: str, now: datetime) -> int:
    return db.session.execute(
        sa.select(sa.func.count())
        .select_from(ClientSecret)
        .where(
            ClientSecret.client_id == client_id,
            sa.or_(ClientSecret.expires_at.is_(None), ClientSecret.expires_at > now),
        )
    ).scalar_one()


def add_secret(
    client: Client,
    pepper: bytes,
    actor: str,
    *,
    description: str | None = None,
    expires_in: int | None = None,
    audited: bool = True,
    action: str = "secret.created",
    enforce_limit: bool = True,
) -> tuple[ClientSecret, str]:
    """Add a secret; the caller must hold the client row lock (see get_client).

    :raise Conflict: too_many_secrets when the client already has five active
        (unless enforce_limit is False, as for a rotation).
    """
    now = utcnow()
    if enforce_limit and active_secret_count(client.id, now) >= MAX_ACTIVE_SECRETS:
        raise Conflict(
            f"A client may have at most {MAX_ACTIVE_SECRETS} active secrets.",
            code="too_many_secrets",
        )
    plaintext = generate_secret()
    secret = ClientSecret(
        id=new_id(),
        client_id=client.id,
        secret_hash=hash_secret(plaintext, pepper),
        hint=secret_hint(plaintext),
        description=description,
        created_at=now,
        expires_at=now + timedelta(seconds=expires_in) if expires_in else None,
    )
    db.session.add(secret)
    db.session.flush()
    mark_client_changed(client.id)
    if audited:
        audit.record(actor, action, secret.id, client.account_id)
    return secret, plaintext


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
    ensure_unlocked(client)
    return add_secret(client, pepper, actor, description=description, expires_in=expires_in)


def old_secrets_end(rotated_at: datetime, grace_period: int) -> datetime:
    """When the secrets a rotation replaced stop working, at the latest (each face says so)."""
    return rotated_at + timedelta(seconds=grace_period)


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
    ensure_unlocked(client)
    now = utcnow()
    cutoff = old_secrets_end(now, grace_period)
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
