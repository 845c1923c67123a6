"""Client secrets (docs/api.md §2.2): /api/v1/clients/{id}/secrets."""

from __future__ import annotations

from flask import g, url_for

from app.api import bp
from app.api import schemas as s
from app.api.auth import require_scope
from app.clients import policy
from app.clients import secrets as secrets_service
from app.clients.service import get_client
from app.errors import NotFound
from app.extensions import db
from app.models import ClientSecret
from app.runtime import runtime


def _created(client_id: str, secret: ClientSecret, plaintext: str):
    body = s.dump(s.NewSecret, secret, secret=plaintext)
    location = url_for("api.get_client_secret", client_id=client_id, secret_id=secret.id)
    return body, 201, {"Location": location}


@bp.get("/clients/<client_id>/secrets")
@require_scope("clients:read")
@s.operation(
    "listClientSecrets",
    tag="secrets",
    response=s.SecretList,
    description="The secrets, oldest first.",
)
def list_client_secrets(client_id: str):
    """Every secret of the client, expired ones included; never the secret."""
    client = get_client(g.caller.account_filter(), client_id)
    return s.dump(s.SecretList, {"data": secrets_service.list_secrets(client)})


@bp.get("/clients/<client_id>/secrets/<secret_id>")
@require_scope("clients:read")
@s.operation("getClientSecret", tag="secrets", response=s.Secret, description="The secret.")
def get_client_secret(client_id: str, secret_id: str):
    """One secret's metadata (the target of the Location header); never the secret."""
    client = get_client(g.caller.account_filter(), client_id)
    for secret in secrets_service.list_secrets(client):
        if secret.id == secret_id:
            return s.dump(s.Secret, secret)
    raise NotFound("No such secret.", code="secret_not_found")


@bp.post("/clients/<client_id>/secrets")
@require_scope("clients:write")
@s.operation(
    "createClientSecret",
    tag="secrets",
    status=201,
    response=s.NewSecret,
    body=s.SecretCreate,
    body_optional=True,
    description="Created.",
    headers=("Location",),
    errors=(409,),
)
def create_client_secret(client_id: str, body: s.SecretCreate):
    """Add a secret (at most 5 active); the plaintext is in this response only."""
    # The row lock serializes concurrent adds so the five-active check holds.
    client = get_client(g.caller.account_filter(), client_id, for_update=True)
    policy.ensure_may_manage(g.caller.scopes, client)
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
@s.operation(
    "rotateClientSecret",
    tag="secrets",
    status=201,
    response=s.RotatedSecret,
    body=s.SecretRotate,
    body_optional=True,
    description="The new secret, shown once, and when the old ones stop working.",
    headers=("Location",),
    errors=(409,),
)
def rotate_client_secret(client_id: str, body: s.SecretRotate):
    """New secret; every other active secret expires after grace_period seconds."""
    client = get_client(g.caller.account_filter(), client_id, for_update=True)
    policy.ensure_may_manage(g.caller.scopes, client)
    grace = body.get("grace_period", secrets_service.DEFAULT_GRACE_PERIOD)
    secret, plaintext = secrets_service.rotate_secret(
        client, grace, g.caller.client_id, runtime().pepper
    )
    db.session.commit()
    old_end = secrets_service.old_secrets_end(secret.created_at, grace)
    result = s.dump(s.RotatedSecret, secret, secret=plaintext, old_secrets_expire_at=old_end)
    location = url_for("api.get_client_secret", client_id=client.id, secret_id=secret.id)
    return result, 201, {"Location": location}


@bp.delete("/clients/<client_id>/secrets/<secret_id>")
@require_scope("clients:write")
@s.operation("deleteClientSecret", tag="secrets", status=204, errors=(409,))
def delete_client_secret(client_id: str, secret_id: str):
    """Delete a secret; it stops working from this response on."""
    client = get_client(g.caller.account_filter(), client_id, for_update=True)
    policy.ensure_may_manage(g.caller.scopes, client)
    secrets_service.delete_secret(client, secret_id, g.caller.client_id)
    db.session.commit()
    return "", 204
