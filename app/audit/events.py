"""The audit trail: who changed what, never the secret material itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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


@dataclass(frozen=True)
class EventFilter:
    """Which events a listing keeps; every field set narrows it (None: any)."""

    action: str | None = None
    #: The acting client's id, or "cli".
    actor: str | None = None
    #: An object's id: events on it and on what it holds (a client's keys and
    #: federated credentials are recorded as "<client id>/<id>").
    target: str | None = None
    #: From this time on (inclusive) ...
    since: datetime | None = None
    #: ... and before this time (exclusive).
    until: datetime | None = None

    def apply(self, query: sa.Select[Any]) -> sa.Select[Any]:
        if self.action is not None:
            query = query.where(AuditEvent.action == self.action)
        if self.actor is not None:
            query = query.where(AuditEvent.actor == self.actor)
        if self.target is not None:
            query = query.where(
                sa.or_(
                    AuditEvent.target == self.target,
                    AuditEvent.target.startswith(self.target + "/", autoescape=True),
                )
            )
        if self.since is not None:
            query = query.where(AuditEvent.at >= self.since)
        if self.until is not None:
            query = query.where(AuditEvent.at < self.until)
        return query


NO_FILTER = EventFilter()


def list_events(
    account_id: str | None,
    *,
    before: int | None,
    limit: int,
    where: EventFilter = NO_FILTER,
) -> list[AuditEvent]:
    """Events newest first, below id `before` (None: from the newest), in one account or all."""
    query = where.apply(sa.select(AuditEvent))
    if account_id is not None:
        query = query.where(AuditEvent.account_id == account_id)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    return list(db.session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))


def list_events_above(
    account_id: str | None, above: int, *, limit: int, where: EventFilter = NO_FILTER
) -> list[AuditEvent]:
    """The events just newer than id `above`, nearest first (for a "previous page")."""
    query = where.apply(sa.select(AuditEvent)).where(AuditEvent.id > above)
    if account_id is not None:
        query = query.where(AuditEvent.account_id == account_id)
    return list(db.session.scalars(query.order_by(AuditEvent.id).limit(limit)))


def position_before(position: list[Any]) -> int:
    """The `before` argument of list_events for a cursor position ([id]).

    :raise BadRequest: invalid_cursor when the position is not one.
    """
    if len(position) != 1 or type(position[0]) is not int:
        raise BadRequest("The cursor is invalid.", code="invalid_cursor")
    return position[0]
