"""/oauth2/* endpoints and the RFC 8414 metadata document.

POST /oauth2/token is usually answered by app.oauth.fastpath before Flask
dispatches; `issue_token` serves the requests it hands on, with the same server.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from app.oauth.requests import ENDPOINT_PATHS, flask_response
from app.oauth.rfc8414 import server_metadata
from app.oauth.server import AuthorizationServer
from app.runtime import runtime

bp = Blueprint("oauth", __name__)


def _server() -> AuthorizationServer:
    server = runtime().oauth
    assert server is not None  # config_oauth ran in create_app
    return server


@bp.post(ENDPOINT_PATHS["token"])
def issue_token():
    """RFC 6749 §4.4.2: the client credentials access token request."""
    return flask_response(_server().create_token_response())


@bp.post(ENDPOINT_PATHS["introspection"])
def introspect_token():
    """RFC 7662 §2: token introspection for any authenticated client."""
    return flask_response(_server().create_endpoint_response("introspection"))


@bp.post(ENDPOINT_PATHS["revocation"])
def revoke_token():
    """RFC 7009 §2: a client revokes one of its own tokens."""
    return flask_response(_server().create_endpoint_response("revocation"))


@bp.get("/.well-known/oauth-authorization-server")
def metadata():
    """RFC 8414 §2 authorization server metadata."""
    config = current_app.config
    response = jsonify(server_metadata(config["ISSUER"], config["ASSERTION_SIGNING_ALGS"]))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
