"""Client keys for private_key_jwt (docs/api.md §2.3): /api/v1/clients/{id}/keys."""

from __future__ import annotations

from flask import g, jsonify

from app.api import bp
from app.api import schemas as s
from app.api.auth import require_scope
from app.clients import keys as key_service
from app.clients import policy
from app.clients.service import get_client
from app.extensions import db


@bp.get("/clients/<client_id>/keys")
@require_scope("clients:read")
@s.operation("listClientKeys", tag="keys", response=s.KeyList, description="The keys.")
def list_client_keys(client_id: str):
    """The client's public keys for private_key_jwt, expired ones included."""
    client = get_client(g.caller.account_filter(), client_id)
    return jsonify(s.dump(s.KeyList, {"data": key_service.list_keys(client)}))


@bp.post("/clients/<client_id>/keys")
@require_scope("clients:write")
@s.operation(
    "createClientKey",
    tag="keys",
    status=201,
    response=s.NewKey,
    body=s.KeyCreate,
    body_optional=True,
    description="Created.",
    headers=("Cache-Control",),
    errors=(409,),
)
def create_client_key(client_id: str, body: s.KeyCreate):
    """Register a public key, or with `{}` generate an Ed25519 pair (private half shown once)."""
    # The row lock serializes key changes per client: the five-key limit holds.
    client = get_client(g.caller.account_filter(), client_id, for_update=True)
    policy.ensure_may_manage(g.caller.scopes, client)
    key, generated = key_service.add_key(
        client, body.get("public_jwk"), g.caller.client_id, expires_in=body.get("expires_in")
    )
    db.session.commit()
    private = {}
    if generated is not None:
        private = {
            "private_jwk": generated.private_jwk,
            "private_key_pem": generated.private_key_pem,
        }
    response = jsonify(s.dump(s.NewKey, key, **private))
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.delete("/clients/<client_id>/keys/<kid>")
@require_scope("clients:write")
@s.operation("deleteClientKey", tag="keys", status=204, errors=(409,))
def delete_client_key(client_id: str, kid: str):
    """Delete a key; assertions signed with it fail from now on."""
    client = get_client(g.caller.account_filter(), client_id, for_update=True)
    policy.ensure_may_manage(g.caller.scopes, client)
    key_service.delete_key(client, kid, g.caller.client_id)
    db.session.commit()
    return "", 204
