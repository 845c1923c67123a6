"""The audit trail: who changed what, never the secret material itself."""

from __future__ import annotations

from typing import Any, Literal, get_args

import sqlalchemy as sa

from app.errors import BadRequest
from app.extensions import db
from app.models import AuditEvent

#: Every action the trail records; the API's AuditEvent schema lists the same.
AuditAction = Literal[
    "client.created",
    "client.updated",
    "client.deleted",
    "client.tokens_revoked",
    "secret.created",
    "secret.rotated",
    "secret.deleted",
    "key.created",
    "key.deleted",
    "signing_key.rotated",
    "resource_server.created",
    "resource_server.updated",
    "resource_server.deleted",
    "federated_credential.created",
    "federated_credential.deleted",
]
ACTIONS: frozenset[str] = frozenset(get_args(AuditAction))
#: Listing cursors name their listing, so one listing's cursor is refused by another.
AUDIT_LISTING = "audit-events"


def record(actor: str, action: str, target: str, account_id: str) -> AuditEvent:
    """Add an audit event to the current transaction (the caller commits)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    event = AuditEvent(actor=actor, action=action, target=target, account_id=account_id)
    db.session.add(event)
    return event


def list_events(account_id: str | None, *, before: int | None, limit: int) -> list[AuditEvent]:
    """Events newest first, below id `before` (None: from the newest), in one account or all."""
    query = sa.select(AuditEvent)
    if account_id is not None:
        query = query.where(AuditEvent.account_id == account_id)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    return list(db.session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))


def position_before(position: list[Any]) -> int:
    """The `before` argument of list_events for a cursor position ([id]).

    :raise BadRequest: invalid_cursor when the position is not one.
    """
    if len(position) != 1 or type(position[0]) is not int:
        raise BadRequest("The cursor is invalid.", code="invalid_cursor")
    return position[0]
