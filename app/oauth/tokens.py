"""RFC 9068 JWT access tokens, signed with PyJWT and a key loaded once."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

import jwt
from authlib.oauth2.rfc6750 import BearerTokenGenerator

from ..clients.records import ClientRecord
from ..keys.service import KeyRing


class NoSigningKeyError(RuntimeError):
    """No current signing key is loaded; the endpoint answers 503."""


class JWTAccessTokenGenerator(BearerTokenGenerator):
    """Same hook shape as authlib.oauth2.rfc9068.JWTBearerTokenGenerator.

    RFC 9068 §2.1: the header "typ" MUST be "at+jwt"; §2.2: iss, exp, aud,
    sub, client_id, iat and jti are REQUIRED claims.
    """

    def __init__(self, issuer: str, keyring: KeyRing) -> None:
        super().__init__(access_token_generator=None)
        self.issuer = issuer
        self.keyring = keyring

    def get_audiences(self, client: ClientRecord, scope: str) -> Sequence[str]:
        return list(client.audiences[:1])

    def get_extra_claims(self, client: ClientRecord, scope: str) -> dict:
        return {"account_id": client.account_id}

    def generate(  # type: ignore[override]
        self,
        grant_type: str,
        client: ClientRecord,
        user=None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = False,
        audiences: Sequence[str] | None = None,
    ) -> dict:
        key = self.keyring.snapshot().current
        if key is None:
            raise NoSigningKeyError("no current signing key is loaded")
        scope = scope or ""
        ttl = client.access_token_ttl
        now = int(time.time())
        aud = list(audiences) if audiences else self.get_audiences(client, scope)
        claims = {
            "iss": self.issuer,
            "sub": client.id,
            "client_id": client.id,
            "aud": aud[0] if len(aud) == 1 else aud,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(16),
            "scope": scope,
            **self.get_extra_claims(client, scope),
        }
        token = jwt.encode(
            claims,
            key.private_key,
            algorithm=key.alg,
            headers={"typ": "at+jwt", "kid": key.kid},
        )
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": scope,
        }
