"""The audit trail: who changed what, never the secret material itself."""

from __future__ import annotations

from app.extensions import db
from app.models import AuditEvent

ACTIONS = frozenset(
    {
        "client.created",
        "client.updated",
        "client.deleted",
        "secret.created",
        "secret.rotated",
        "secret.deleted",
        "key.created",
        "key.deleted",
        "signing_key.rotated",
    }
)


def record(actor: str, action: str, target: str, account_id: str) -> AuditEvent:
    """Add an audit event to the current transaction (the caller commits)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    event = AuditEvent(actor=actor, action=action, target=target, account_id=account_id)
    db.session.add(event)
    return event
