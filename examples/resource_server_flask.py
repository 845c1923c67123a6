"""Example resource server (Flask) that accepts this server's access tokens.

It verifies each Bearer token as RFC 9068 §4 asks: the signature with a key
from the authorization server's JWKS (PyJWT's PyJWKClient fetches and caches
it, and fetches again when a token names a key it has not seen, which is how
signing key rotation reaches it), `typ: at+jwt`, `iss`, `aud`, `exp`, and then
the scope the route needs. Run it:

    ISSUER=http://localhost:5000 AUDIENCE=https://api.example.com \\
        flask --app examples/resource_server_flask run --port 8000
"""

from __future__ import annotations

import functools
import os

import jwt
from flask import Flask, current_app, g, jsonify, request

ALGORITHMS = ["ES256", "RS256", "PS256", "EdDSA"]


class TokenVerifier:
    """Verifies access tokens of one issuer for one audience."""

    def __init__(self, issuer: str, audience: str, jwks_url: str | None = None) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.jwks = jwt.PyJWKClient(
            jwks_url or f"{self.issuer}/.well-known/jwks.json", cache_keys=True, lifespan=300
        )

    def verify(self, token: str) -> dict:
        """The token's claims.

        :raise jwt.InvalidTokenError: bad signature, type, issuer, audience or expiry.
        """
        header = jwt.get_unverified_header(token)
        # RFC 9068 §4: reject JWTs that are not access tokens (e.g. ID tokens).
        if header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
            raise jwt.InvalidTokenError("not an access token")
        if header.get("alg") not in ALGORITHMS:
            raise jwt.InvalidTokenError("algorithm not allowed")
        try:
            signing_key = self.jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientError as exc:
            raise jwt.InvalidTokenError(str(exc)) from exc
        return jwt.decode(
            token,
            signing_key.key,
            algorithms=[header["alg"]],
            issuer=self.issuer,
            audience=self.audience,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
            leeway=30,
        )


def _error(status: int, error: str, description: str, scope: str | None = None):
    """An RFC 6750 §3 error: the WWW-Authenticate challenge says what went wrong."""
    challenge = f'Bearer error="{error}"'
    if scope:
        challenge += f', scope="{scope}"'
    response = jsonify({"error": error, "error_description": description})
    response.status_code = status
    response.headers["WWW-Authenticate"] = challenge
    return response


def require_scope(scope: str):
    """Decorator: a valid access token holding `scope`; its claims land in g.claims."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                # RFC 6750 §3.1: no error code when the request had no token.
                response = jsonify({"error": "unauthorized"})
                response.status_code = 401
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
            try:
                claims = _verifier().verify(token.strip())
            except jwt.InvalidTokenError:
                return _error(401, "invalid_token", "The access token is invalid or expired.")
            if scope not in str(claims.get("scope", "")).split():
                return _error(403, "insufficient_scope", f"Needs scope {scope}.", scope)
            g.claims = claims
            return view(*args, **kwargs)

        return wrapper

    return decorator


def _verifier() -> TokenVerifier:
    return current_app.extensions["token_verifier"]


def create_app(issuer: str | None = None, audience: str | None = None) -> Flask:
    """The example API: GET /hello needs scope `read`."""
    app = Flask(__name__)
    app.extensions["token_verifier"] = TokenVerifier(
        issuer or os.environ.get("ISSUER", "http://localhost:5000"),
        audience or os.environ.get("AUDIENCE", "https://api.example.com"),
    )

    @app.get("/hello")
    @require_scope("read")
    def hello():
        """A protected resource."""
        return jsonify({"hello": g.claims["sub"], "scope": g.claims["scope"]})

    return app


if __name__ == "__main__":
    create_app().run(port=int(os.environ.get("PORT", "8000")))
