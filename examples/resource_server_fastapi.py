"""Example resource server (FastAPI) that accepts this server's access tokens.

Same checks as the Flask example (RFC 9068 §4): signature against the JWKS
through PyJWT's PyJWKClient (cached, refetched for an unknown `kid`), `typ:
at+jwt`, `iss`, `aud`, `exp`, then the route's scope. Run it:

    ISSUER=http://localhost:5000 AUDIENCE=https://api.example.com \\
        uvicorn examples.resource_server_fastapi:app --port 8000
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jwt
from fastapi import Depends, FastAPI, HTTPException, Request

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


def require_scope(scope: str) -> Callable:
    """Dependency: the verified claims of a Bearer token that holds `scope` (RFC 6750 §3)."""

    def dependency(request: Request) -> dict:
        verifier: TokenVerifier = request.app.state.verifier
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "Missing token", headers={"WWW-Authenticate": "Bearer"})
        try:
            claims = verifier.verify(token.strip())
        except jwt.InvalidTokenError:
            raise HTTPException(
                401,
                "The access token is invalid or expired.",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from None
        if scope not in str(claims.get("scope", "")).split():
            raise HTTPException(
                403,
                f"Needs scope {scope}.",
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )
        return claims

    return dependency


def create_app(issuer: str | None = None, audience: str | None = None) -> FastAPI:
    """The example API: GET /hello needs scope `read`."""
    api = FastAPI(title="Example resource server")
    api.state.verifier = TokenVerifier(
        issuer or os.environ.get("ISSUER", "http://localhost:5000"),
        audience or os.environ.get("AUDIENCE", "https://api.example.com"),
    )

    @api.get("/hello")
    def hello(claims: dict = Depends(require_scope("read"))) -> dict:  # noqa: B008
        """A protected resource."""
        return {"hello": claims["sub"], "scope": claims["scope"]}

    return api


# PyJWKClient fetches nothing until the first token arrives, so this is cheap.
app = create_app()
