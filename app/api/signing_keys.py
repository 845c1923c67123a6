"""/api/v1/signing-keys: the server's own signing keys (docs/api.md §2.4, system account only)."""

from __future__ import annotations

from typing import Any

from flask import current_app, g, jsonify

from app.api import bp
from app.api import schemas as s
from app.api.auth import require_scope
from app.extensions import db
from app.runtime import runtime
from app.signing import keys as keys_service


def _key_list() -> dict[str, Any]:
    return s.dump(s.SigningKeyList, {"data": keys_service.keys_for_listing()})


@bp.get("/signing-keys")
@require_scope("keys:read")
@s.operation(
    "listSigningKeys", tag="signing-keys", response=s.SigningKeyList, description="The keys."
)
def list_signing_keys():
    """The server's signing keys (system account): next, current and retired; never private."""
    return jsonify(_key_list())


@bp.post("/signing-keys/rotate")
@require_scope("keys:write")
@s.operation(
    "rotateSigningKeys",
    tag="signing-keys",
    response=s.SigningKeyList,
    body=s.SigningKeyRotate,
    body_optional=True,
    description="The signing keys after rotation.",
    errors=(409,),
)
def rotate_signing_keys(body: s.SigningKeyRotate):
    """Promote next to current, retire current, make a new next; 200 with the new list."""
    cfg = current_app.config
    keys_service.rotate_keys(
        cfg["SIGNING_ALG"], cfg["KEYS_DIR"], cfg["KEYS_PASSPHRASE"], actor=g.caller.client_id
    )
    db.session.commit()
    # This process picks the change up at once; others within KEY_REFRESH_INTERVAL.
    runtime().keyring.invalidate()
    return jsonify(_key_list())
