"""The audit log (docs/api.md §2.5), newest first."""

from __future__ import annotations

from flask import g

from app.api import bp
from app.api import schemas as s
from app.api.auth import require_scope
from app.api.pagination import decode_cursor, listing_account, page_response
from app.audit import events


@bp.get("/audit-events")
@require_scope("audit:read")
@s.operation(
    "listAuditEvents",
    tag="audit",
    response=s.AuditPage,
    query=s.AuditQuery,
    description="A page of events.",
    headers=("Link",),
)
def list_audit_events(query: dict):
    """The audit log of the caller's account (system admins: every account), newest first."""
    limit = query.get("limit", s.DEFAULT_LIMIT)
    account = listing_account(g.caller, query.get("account_id"))
    before = None
    if "cursor" in query:
        before = events.position_before(decode_cursor(events.AUDIT_LISTING, query["cursor"]))
    rows = events.list_events(account, before=before, limit=limit + 1)
    return page_response(events.AUDIT_LISTING, rows, limit, lambda e: [e.id], s.AuditPage)
