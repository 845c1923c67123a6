"""Resource servers (docs/api.md §2.7): create, list, get, patch, put, delete."""

from __future__ import annotations

import hashlib

from flask import g, jsonify, request, url_for

from app.api import bp
from app.api import schemas as s
from app.api.auth import require_scope
from app.api.pagination import decode_cursor, listing_account, page_response
from app.clients import resource_servers as service
from app.errors import PreconditionFailed, ValidationError
from app.extensions import db
from app.models import ResourceServer


def resource_server_etag(rs: ResourceServer) -> str:
    """The strong ETag value (unquoted): changes with every version."""
    return hashlib.sha256(f"rs:{rs.id}:{rs.version}".encode()).hexdigest()[:32]


def _response(rs: ResourceServer, status: int = 200):
    response = jsonify(s.dump(s.ResourceServer, rs))
    response.status_code = status
    response.set_etag(resource_server_etag(rs))
    return response


def _check_if_match(rs: ResourceServer) -> None:
    """RFC 9110 §13.1.1: a write with a stale If-Match changes nothing.

    :raise PreconditionFailed: 412.
    """
    if "If-Match" in request.headers and not request.if_match.contains(resource_server_etag(rs)):
        raise PreconditionFailed(
            "The resource server has changed since that ETag was issued.", code="etag_mismatch"
        )


@bp.post("/resource-servers")
@require_scope("clients:write")
@s.operation(
    "createResourceServer",
    tag="resource-servers",
    status=201,
    response=s.ResourceServer,
    body=s.ResourceServerCreate,
    description="Created.",
    headers=("Location", "ETag"),
    errors=(409,),
)
def create_resource_server(body: dict):
    """Register an API of the caller's account (system admins: any account)."""
    caller = g.caller
    values = dict(body)
    account_id = values.pop("account_id", caller.account_id)
    if account_id != caller.account_id and not caller.is_system:
        raise ValidationError([{"field": "account_id", "message": "is read-only"}])
    rs = service.create_resource_server(
        account_id, values, caller.client_id, caller_is_system=caller.is_system
    )
    db.session.commit()
    response = _response(rs, 201)
    response.headers["Location"] = url_for("api.get_resource_server", resource_server_id=rs.id)
    return response


@bp.get("/resource-servers")
@require_scope("clients:read")
@s.operation(
    "listResourceServers",
    tag="resource-servers",
    response=s.ResourceServerPage,
    query=s.ResourceServerQuery,
    description="A page of resource servers; an account admin's includes the shared ones.",
    headers=("Link",),
)
def list_resource_servers(query: dict):
    """List resource servers in creation order, a keyset page at a time."""
    limit = query.get("limit", s.DEFAULT_LIMIT)
    account = listing_account(g.caller, query.get("account_id"))
    after = None
    if "cursor" in query:
        listing = service.RESOURCE_SERVER_LISTING
        after = service.position_after(decode_cursor(listing, query["cursor"]))
    rows = service.list_resource_servers(
        account, after=after, limit=limit + 1, name_prefix=query.get("name_prefix")
    )
    return page_response(
        service.RESOURCE_SERVER_LISTING, rows, limit, service.position, s.ResourceServerPage
    )


@bp.get("/resource-servers/<resource_server_id>")
@require_scope("clients:read")
@s.operation(
    "getResourceServer",
    tag="resource-servers",
    response=s.ResourceServer,
    description="The resource server.",
    headers=("ETag",),
)
def get_resource_server(resource_server_id: str):
    """One of the caller's account's, or a shared one (404 for another account's)."""
    return _response(service.get_resource_server(g.caller.account_filter(), resource_server_id))


@bp.patch("/resource-servers/<resource_server_id>")
@require_scope("clients:write")
@s.operation(
    "patchResourceServer",
    tag="resource-servers",
    response=s.ResourceServer,
    body=s.ResourceServerPatch,
    body_types=("application/json", "application/merge-patch+json"),
    description="The changed resource server.",
    headers=("ETag",),
    errors=(409,),
    if_match=True,
)
def update_resource_server(resource_server_id: str, body: dict):
    """Change the fields sent; `identifier` never changes."""
    return _write(resource_server_id, body)


@bp.put("/resource-servers/<resource_server_id>")
@require_scope("clients:write")
@s.operation(
    "replaceResourceServer",
    tag="resource-servers",
    response=s.ResourceServer,
    body=s.ResourceServerPut,
    description="The replaced resource server.",
    headers=("ETag",),
    errors=(409,),
    if_match=True,
)
def replace_resource_server(resource_server_id: str, body: dict):
    """Replace every mutable field; omitted optional fields take their defaults."""
    values = {**service.RESOURCE_SERVER_DEFAULTS, **body}
    if not g.caller.is_system and "shared" not in body:
        values.pop("shared")  # an account admin's PUT never unshares (it cannot share either)
    return _write(resource_server_id, values)


def _write(resource_server_id: str, values: dict):
    caller = g.caller
    rs = service.get_resource_server(
        caller.account_filter(), resource_server_id, write=True, for_update=True
    )
    _check_if_match(rs)
    service.update_resource_server(rs, values, caller.client_id, caller_is_system=caller.is_system)
    db.session.commit()
    return _response(rs)


@bp.delete("/resource-servers/<resource_server_id>")
@require_scope("clients:write")
@s.operation(
    "deleteResourceServer",
    tag="resource-servers",
    status=204,
    errors=(409,),
    if_match=True,
)
def delete_resource_server(resource_server_id: str):
    """Delete a resource server no client lists in its audiences."""
    caller = g.caller
    rs = service.get_resource_server(
        caller.account_filter(), resource_server_id, write=True, for_update=True
    )
    _check_if_match(rs)
    service.delete_resource_server(rs, caller.client_id)
    db.session.commit()
    return "", 204
