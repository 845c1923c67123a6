"""/oauth2/* endpoints and the RFC 8414 metadata document."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from app.clients.service import MANAGEMENT_SCOPES
from app.oauth import rfc7662
from app.oauth.server import flask_response

bp = Blueprint("oauth", __name__)


def _server():
    return current_app.extensions["ccserver.oauth"]


@bp.post("/oauth2/token")
def issue_token():
    """RFC 6749 §4.4.2: the client credentials access token request."""
    return flask_response(_server().create_token_response())


@bp.post("/oauth2/introspect")
def introspect_token():
    """RFC 7662 §2: token introspection for any authenticated client."""
    return rfc7662.introspection_response(_server())


@bp.post("/oauth2/revoke")
def revoke_token():
    """RFC 7009 §2: a client revokes one of its own tokens."""
    return rfc7662.revocation_response(_server())


@bp.get("/.well-known/oauth-authorization-server")
def metadata():
    """RFC 8414 §2 authorization server metadata."""
    issuer = current_app.config["ISSUER"]
    auth_methods = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
    body = {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/oauth2/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["token"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": current_app.config[
            "ASSERTION_SIGNING_ALGS"
        ],
        "introspection_endpoint": f"{issuer}/oauth2/introspect",
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": current_app.config[
            "ASSERTION_SIGNING_ALGS"
        ],
        "revocation_endpoint": f"{issuer}/oauth2/revoke",
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": current_app.config[
            "ASSERTION_SIGNING_ALGS"
        ],
        "scopes_supported": list(MANAGEMENT_SCOPES),
        "service_documentation": f"{issuer}/api/v1/openapi.json",
    }
    response = jsonify(body)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
