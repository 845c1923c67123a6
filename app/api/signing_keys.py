"""/api/v1/signing-keys: the server's own signing keys (contract 2.4, system account only)."""

from __future__ import annotations

from typing import Any

from flask import current_app, g, jsonify

from app.api import bp
from app.api.auth import require_scope
from app.api.schemas import json_body
from app.errors import ValidationError
from app.extensions import db
from app.models import SigningKey
from app.runtime import runtime
from app.signing import keys as keys_service
from app.timeutil import isoformat


def signing_key_to_dict(key: SigningKey) -> dict[str, Any]:
    """The public view of a signing key: status and times, never key material."""
    return {
        "kid": key.kid,
        "alg": key.alg,
        "status": key.status,
        "created_at": isoformat(key.created_at),
        "activated_at": isoformat(key.activated_at),
        "retires_at": isoformat(key.retires_at),
    }


def _key_list() -> dict[str, list[dict[str, Any]]]:
    # Newest first: next, current, then retired keys by age.
    order = {"next": 0, "current": 1, "retired": 2}
    keys = [key for group in keys_service.keys_by_status().values() for key in group]
    keys.sort(key=lambda k: (order[k.status], -k.created_at.timestamp()))
    return {"data": [signing_key_to_dict(key) for key in keys]}


@bp.get("/signing-keys")
@require_scope("keys:read")
def list_signing_keys():
    """Every signing key still stored: next, current and retired."""
    return jsonify(_key_list())


@bp.post("/signing-keys/rotate")
@require_scope("keys:write")
def rotate_signing_keys():
    """Promote next to current, retire current, make a new next; 200 with the new list."""
    body = json_body(optional=True)
    if body:
        raise ValidationError(
            [{"field": name, "message": "unknown field"} for name in sorted(body)],
            "This call takes no fields.",
        )
    cfg = current_app.config
    keys_service.rotate_keys(
        cfg["SIGNING_ALG"], cfg["KEYS_DIR"], cfg["KEYS_PASSPHRASE"], actor=g.caller.client_id
    )
    db.session.commit()
    # This process picks the change up at once; others within KEY_REFRESH_INTERVAL.
    runtime().keyring.invalidate()
    return jsonify(_key_list())
