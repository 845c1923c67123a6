"""Token introspection (RFC 7662) and revocation (RFC 7009) of our stateless JWTs.

Both endpoints authenticate the caller with the token endpoint's methods
(`AuthorizationServer.authenticate_client`), so failures are the same 401
invalid_client and count towards the same limits. Access tokens are never
stored: a token is active when its signature, `typ`, `iss` and `exp` check
out against our published keys, its client still exists and is enabled, and
its `jti` is not on the shared deny-list (app.state.jti).
"""

from __future__ import annotations

import jwt
from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Error, UnauthorizedClientError
from flask import Response, jsonify

from app.oauth.rfc9068 import verify_access_token
from app.oauth.server import AuthorizationServer, FormRequest, flask_response
from app.runtime import runtime
from app.state import jti as revocation

# Our tokens are a few hundred bytes; anything much larger is not one of ours.
MAX_TOKEN_LENGTH = 8 * 1024
INTROSPECTION_CLAIMS = (
    "iss",
    "sub",
    "client_id",
    "aud",
    "iat",
    "nbf",
    "exp",
    "jti",
    "scope",
    "account_id",
)
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]


def _no_store(response: Response) -> Response:
    # RFC 7662 §2.2 and RFC 6749 §5.1: responses must not be cached.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _verified_claims(token: object) -> dict | None:
    """The claims of one of our unexpired access tokens, or None."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        claims = verify_access_token(token, audience=None)
    except (jwt.InvalidTokenError, ValueError, TypeError, KeyError, RecursionError):
        return None
    if not isinstance(claims.get("jti"), str):
        return None
    return claims


def token_status(token: object) -> dict:
    """RFC 7662 §2.2 response body for a token."""
    claims = _verified_claims(token)
    if claims is None:
        return {"active": False}
    record = runtime().clients.get(str(claims.get("client_id") or claims.get("sub")))
    if record is None or record.disabled:
        return {"active": False}
    if revocation.is_revoked(claims["jti"]):
        return {"active": False}
    body = {"active": True}
    body.update({name: claims[name] for name in INTROSPECTION_CLAIMS if name in claims})
    body["token_type"] = "Bearer"
    return body


def _authenticated_request(server: AuthorizationServer, endpoint: str) -> FormRequest:
    """The parsed form request with request.client set.

    :raises OAuth2Error: bad body, several auth methods, or failed authentication.
    """
    request = server.create_oauth2_request(None)
    server.authenticate_client(request, AUTH_METHODS, endpoint)
    return request


def introspection_response(server: AuthorizationServer) -> Response:
    """RFC 7662 §2.1: any authenticated client may introspect any of our tokens."""
    request = None
    try:
        request = _authenticated_request(server, "introspection")
        token = request.payload.data.get("token")
        if token is None:
            raise InvalidRequestError("The token parameter is missing.")
    except OAuth2Error as error:
        return flask_response(server.handle_error_response(request, error))
    # token_type_hint is optional and only a hint (RFC 7662 §2.1); we have one type.
    return _no_store(jsonify(token_status(token)))


def revocation_response(server: AuthorizationServer) -> Response:
    """RFC 7009 §2.1: a client revokes one of its own access tokens.

    Unknown, malformed, expired and already revoked tokens are answered 200
    (§2.2: "invalid tokens do not cause an error response"). A valid token
    issued to another client is refused with 400 unauthorized_client (RFC
    6749 §5.2) and stays active.
    """
    request = None
    try:
        request = _authenticated_request(server, "revocation")
        token = request.payload.data.get("token")
        if token is None:
            raise InvalidRequestError("The token parameter is missing.")
        claims = _verified_claims(token)
        if claims is not None:
            if claims.get("client_id", claims.get("sub")) != request.client.id:
                raise UnauthorizedClientError(
                    description="The token was not issued to this client."
                )
            revocation.revoke(
                claims["jti"], request.client.id, revocation.from_timestamp(claims["exp"])
            )
    except OAuth2Error as error:
        return flask_response(server.handle_error_response(request, error))
    return _no_store(Response(status=200))
