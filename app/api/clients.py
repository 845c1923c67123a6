"""Clients (docs/api.md §2.1): create, list, get, patch, put, delete."""

from __future__ import annotations

import hashlib
from typing import Any

from flask import g, jsonify, request, url_for

from app.api import bp
from app.api import schemas as s
from app.api.auth import require_scope
from app.api.pagination import decode_cursor, listing_account, page_response
from app.clients import policy, service
from app.errors import PreconditionFailed
from app.extensions import db
from app.models import Client
from app.runtime import runtime


def client_etag(client: Client) -> str:
    """The strong ETag value (unquoted) of a client: changes with every version."""
    return hashlib.sha256(f"{client.id}:{client.version}".encode()).hexdigest()[:32]


def _client_response(client: Client, status: int = 200, **extra: Any):
    response = jsonify(s.dump(s.NewClient if extra else s.Client, client, **extra))
    response.status_code = status
    response.set_etag(client_etag(client))
    return response


def _check_if_match(client: Client) -> None:
    """RFC 9110 §13.1.1: a write with a stale If-Match changes nothing.

    :raise PreconditionFailed: 412.
    """
    if "If-Match" not in request.headers:
        return
    if not request.if_match.contains(client_etag(client)):
        raise PreconditionFailed(
            "The client has changed since that ETag was issued.", code="etag_mismatch"
        )


def _locked_for_update(client_id: str) -> Client:
    return service.get_client(g.caller.account_filter(), client_id, for_update=True)


@bp.post("/clients")
@require_scope("clients:write")
@s.operation(
    "createClient",
    tag="clients",
    status=201,
    response=s.NewClient,
    body=s.ClientCreate,
    description="Created.",
    headers=("Location", "ETag"),
    errors=(409,),
)
def create_client(body: dict):
    """Create a client; its first secret is shown once."""
    caller = g.caller
    values, account_id = s.client_values(
        body,
        "create",
        account_id=caller.account_id,
        may_set_account=caller.is_system,
    )
    policy.ensure_may_hold(caller.scopes, values["scopes"])
    client, secret, plaintext = service.create_client(
        account_id, values, caller.client_id, runtime().pepper
    )
    db.session.commit()
    if secret is None:
        response = jsonify(s.dump(s.NewClient, client))
        response.status_code = 201
        response.set_etag(client_etag(client))
    else:
        response = _client_response(client, 201, client_secret=plaintext, secret_id=secret.id)
    response.headers["Location"] = url_for("api.get_client", client_id=client.id)
    return response


@bp.get("/clients")
@require_scope("clients:read")
@s.operation(
    "listClients",
    tag="clients",
    response=s.ClientPage,
    query=s.ClientQuery,
    description="A page of clients.",
    headers=("Link",),
)
def list_clients(query: dict):
    """List clients in creation order, a keyset page at a time."""
    limit = query.get("limit", s.DEFAULT_LIMIT)
    account = listing_account(g.caller, query.get("account_id"))
    after = None
    if "cursor" in query:
        after = service.position_after(decode_cursor(service.CLIENT_LISTING, query["cursor"]))
    rows = service.list_clients(
        account,
        after=after,
        limit=limit + 1,
        tag=query.get("tag"),
        client_type=query.get("client_type"),
        name_prefix=query.get("name_prefix"),
    )
    return page_response(service.CLIENT_LISTING, rows, limit, service.client_position, s.ClientPage)


@bp.get("/clients/<client_id>")
@require_scope("clients:read")
@s.operation(
    "getClient", tag="clients", response=s.Client, description="The client.", headers=("ETag",)
)
def get_client(client_id: str):
    """One client of the caller's account (404 for another account's)."""
    client = service.get_client(g.caller.account_filter(), client_id)
    return _client_response(client)


# JSON Merge Patch (RFC 7396) is what a PATCH of plain fields is.
@bp.patch("/clients/<client_id>")
@require_scope("clients:write")
@s.operation(
    "patchClient",
    tag="clients",
    response=s.Client,
    body=s.ClientPatch,
    body_types=("application/json", "application/merge-patch+json"),
    description="The changed client.",
    headers=("ETag",),
    errors=(409,),
    if_match=True,
)
def update_client(client_id: str, body: dict):
    """Change the fields sent; a locked client accepts only {"locked": false}."""
    return _write_client(client_id, "update", body)


@bp.put("/clients/<client_id>")
@require_scope("clients:write")
@s.operation(
    "replaceClient",
    tag="clients",
    response=s.Client,
    body=s.ClientPut,
    description="The replaced client.",
    headers=("ETag",),
    errors=(409,),
    if_match=True,
)
def replace_client(client_id: str, body: dict):
    """Replace every mutable field; omitted optional fields take their defaults."""
    return _write_client(client_id, "replace", body)


def _write_client(client_id: str, mode: str, body: dict):
    client = _locked_for_update(client_id)
    policy.ensure_may_manage(g.caller.scopes, client)
    values, _ = s.client_values(body, mode, current=client, account_id=client.account_id)
    policy.ensure_may_hold(g.caller.scopes, values.get("scopes", client.scopes))
    _check_if_match(client)
    # Only a PATCH of exactly {"locked": false} passes a lock; a PUT always
    # restates name and more, so it never does.
    if mode == "replace" or body != {"locked": False}:
        policy.ensure_unlocked(client)
    service.update_client(client, values, g.caller.client_id)
    db.session.commit()
    return _client_response(client)


@bp.delete("/clients/<client_id>")
@require_scope("clients:write")
@s.operation("deleteClient", tag="clients", status=204, errors=(409,), if_match=True)
def delete_client(client_id: str):
    """Delete a client; its secrets, keys and tokens stop working."""
    client = _locked_for_update(client_id)
    policy.ensure_may_manage(g.caller.scopes, client)
    _check_if_match(client)
    policy.ensure_unlocked(client)
    service.delete_client(client, g.caller.client_id)
    db.session.commit()
    return "", 204


@bp.post("/clients/<client_id>/revoke-tokens")
@require_scope("clients:write")
@s.operation("revokeClientTokens", tag="clients", status=204)
def revoke_client_tokens(client_id: str):
    """Cut off every token issued to the client until now, on every instance at once.

    Allowed on a locked client: it changes no setting. Tokens issued
    afterwards work.
    """
    client = _locked_for_update(client_id)
    service.revoke_tokens(client, g.caller.client_id, g.caller.scopes)
    db.session.commit()
    return "", 204
