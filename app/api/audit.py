"""The audit log (contract 2.5), newest first."""

from __future__ import annotations

import sqlalchemy as sa
from flask import g, request

from app.api import bp
from app.api.auth import require_scope
from app.api.pagination import (
    account_from_query,
    check_query_args,
    decode_cursor,
    page_response,
    parse_limit,
)
from app.api.schemas import audit_event_to_dict
from app.errors import BadRequest
from app.extensions import db
from app.models import AuditEvent

LISTING = "audit-events"


@bp.get("/audit-events")
@require_scope("audit:read")
def list_audit_events():
    """Audit events of the caller's account (system admins: every account), newest first."""
    caller = g.caller
    check_query_args(("limit", "cursor", "account_id"))
    limit = parse_limit()
    account = account_from_query(caller)
    query = sa.select(AuditEvent)
    if account is not None:
        query = query.where(AuditEvent.account_id == account)
    if "cursor" in request.args:
        position = decode_cursor(LISTING, request.args["cursor"])
        if len(position) != 1 or type(position[0]) is not int:
            raise BadRequest("The cursor is invalid.", code="invalid_cursor")
        query = query.where(AuditEvent.id < position[0])
    rows = list(db.session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit + 1)))
    return page_response(LISTING, rows, limit, lambda e: [e.id], audit_event_to_dict)
