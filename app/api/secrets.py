"""Client secrets (contract 2.2): /api/v1/clients/{id}/secrets."""

from __future__ import annotations

from flask import g, url_for

from app.api import bp
from app.api.auth import require_scope
from app.api.openapi import parse_body
from app.clients import secrets as secrets_service
from app.clients.service import get_client
from app.errors import NotFound
from app.extensions import db
from app.models import ClientSecret
from app.runtime import runtime
from app.timeutil import isoformat


def secret_to_dict(secret: ClientSecret) -> dict:
    """The fields of a secret that may leave the server: never the secret or its hash."""
    return {
        "id": secret.id,
        "description": secret.description,
        "hint": secret.hint,
        "created_at": isoformat(secret.created_at),
        "expires_at": isoformat(secret.expires_at),
        "last_used_at": isoformat(secret.last_used_at),
    }


def _created(client_id: str, secret: ClientSecret, plaintext: str):
    body = {**secret_to_dict(secret), "secret": plaintext}
    location = url_for("api.get_client_secret", client_id=client_id, secret_id=secret.id)
    return body, 201, {"Location": location}


@bp.get("/clients/<client_id>/secrets")
@require_scope("clients:read")
def list_client_secrets(client_id: str):
    """Every secret of the client, expired ones included, oldest first."""
    client = get_client(g.caller.account_filter(), client_id)
    return {"data": [secret_to_dict(s) for s in secrets_service.list_secrets(client)]}


@bp.get("/clients/<client_id>/secrets/<secret_id>")
@require_scope("clients:read")
def get_client_secret(client_id: str, secret_id: str):
    """One secret's metadata (the target of the Location header)."""
    client = get_client(g.caller.account_filter(), client_id)
    for secret in secrets_service.list_secrets(client):
        if secret.id == secret_id:
            return secret_to_dict(secret)
    raise NotFound("No such secret.", code="secret_not_found")


@bp.post("/clients/<client_id>/secrets")
@require_scope("clients:write")
def create_client_secret(client_id: str):
    """Add a secret; the plaintext is in this response only."""
    body = parse_body("SecretCreate", allow_empty=True)
    # The row lock serializes concurrent adds so the five-active check holds.
    client = get_client(g.caller.account_filter(), client_id, for_update=True)
    secret, plaintext = secrets_service.create_secret(
        client,
        runtime().pepper,
        g.caller.client_id,
        description=body.get("description"),
        expires_in=body.get("expires_in"),
    )
    db.session.commit()
    return _created(client.id, secret, plaintext)


@bp.post("/clients/<client_id>/secrets/rotate")
@require_scope("clients:write")
def rotate_client_secret(client_id: str):
    """New secret; every other active secret expires after grace_period seconds."""
    body = parse_body("SecretRotate", allow_empty=True)
    client = get_client(g.caller.account_filter(), client_id, for_update=True)
    secret, plaintext = secrets_service.rotate_secret(
        client, body.get("grace_period", 0), g.caller.client_id, runtime().pepper
    )
    db.session.commit()
    return _created(client.id, secret, plaintext)


@bp.delete("/clients/<client_id>/secrets/<secret_id>")
@require_scope("clients:write")
def delete_client_secret(client_id: str, secret_id: str):
    """Delete a secret; it stops working from this response on."""
    client = get_client(g.caller.account_filter(), client_id, for_update=True)
    secrets_service.delete_secret(client, secret_id, g.caller.client_id)
    db.session.commit()
    return "", 204
