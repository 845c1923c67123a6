"""Client keys for private_key_jwt (contract 2.3): /api/v1/clients/{id}/keys."""

from __future__ import annotations

from typing import Any

from flask import g, jsonify

from app.api import bp
from app.api.auth import require_scope
from app.api.schemas import json_body
from app.clients import keys as key_service
from app.clients.service import get_client
from app.extensions import db
from app.models import ClientKey
from app.timeutil import isoformat


def key_to_dict(key: ClientKey) -> dict[str, Any]:
    """A client key as the API shows it: public material only."""
    return {
        "kid": key.kid,
        "alg": key.alg,
        "public_jwk": dict(key.public_jwk),
        "created_at": isoformat(key.created_at),
        "expires_at": isoformat(key.expires_at),
        "last_used_at": isoformat(key.last_used_at),
    }


@bp.get("/clients/<client_id>/keys")
@require_scope("clients:read")
def list_client_keys(client_id: str):
    """List a client's public keys, expired ones included."""
    client = get_client(g.caller.account_filter(), client_id)
    return jsonify({"data": [key_to_dict(k) for k in key_service.list_keys(client)]})


@bp.post("/clients/<client_id>/keys")
@require_scope("clients:write")
def create_client_key(client_id: str):
    """Register a public key, or with `{}` generate an Ed25519 pair (private half shown once)."""
    body = json_body(optional=True)
    public_jwk, expires_in = key_service.validate_key_body(body)
    # The row lock serializes key changes per client: the five-key limit holds.
    client = get_client(g.caller.account_filter(), client_id, for_update=True)
    key, generated = key_service.add_key(
        client, public_jwk, g.caller.client_id, expires_in=expires_in
    )
    db.session.commit()
    payload = key_to_dict(key)
    if generated is not None:
        payload["private_jwk"] = generated.private_jwk
        payload["private_key_pem"] = generated.private_key_pem
    response = jsonify(payload)
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.delete("/clients/<client_id>/keys/<kid>")
@require_scope("clients:write")
def delete_client_key(client_id: str, kid: str):
    """Delete a key; assertions signed with it fail from now on."""
    client = get_client(g.caller.account_filter(), client_id, for_update=True)
    key_service.delete_key(client, kid, g.caller.client_id)
    db.session.commit()
    return "", 204
