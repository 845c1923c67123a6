"""GET /.well-known/jwks.json: every published public signing key."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from app.runtime import runtime

bp = Blueprint("jwks", __name__)


@bp.get("/.well-known/jwks.json")
def get_jwks():
    """RFC 7517 JWK Set with caching headers and conditional GET."""
    snap = runtime().keyring.snapshot()
    headers = {
        "Cache-Control": f"public, max-age={current_app.config['JWKS_MAX_AGE']}",
        "ETag": f'"{snap.jwks_etag}"',
    }
    if request.if_none_match.contains(snap.jwks_etag):
        return Response(status=304, headers=headers)
    return Response(snap.jwks_body, status=200, headers=headers, mimetype="application/json")
