"""RFC 9068 JWT access tokens: issued (signed with a key loaded once) and verified.

Access tokens are never stored: issuing writes nothing. A token is good
while its signature, `typ`, `iss`, `exp` (and `aud` where one is expected)
check out against our published keys (`verify_access_token`), its `jti` is
not on the shared deny-list (`AccessToken.is_revoked`, app.state.jti), it
was issued after its client's token cut-off (its `jti` carries the issue
time to the millisecond, `new_jti`), and its client still exists and is
enabled (asked by each user of the token: app.api.auth, app.oauth.rfc7662).
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import jwt
import orjson
from authlib.oauth2.rfc6749 import TokenMixin
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from flask import current_app

from app import jose
from app.clients.records import ClientRecord
from app.runtime import runtime
from app.signing.keys import KeyRing
from app.state.autocommit import Pending

# Our tokens are a few hundred bytes; anything much larger is not one of ours.
MAX_TOKEN_LENGTH = 8 * 1024


class NoSigningKeyError(RuntimeError):
    """No current signing key is loaded; the endpoint answers 503."""


# PyJWT's algorithm objects (ES256 and EdDSA signatures come out in JWS form).


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class JWTAccessTokenGenerator(BearerTokenGenerator):
    """Same hook shape as authlib.oauth2.rfc9068.JWTBearerTokenGenerator.

    RFC 9068 §2.1: the header "typ" MUST be "at+jwt"; §2.2: iss, exp, aud,
    sub, client_id, iat and jti are REQUIRED claims.
    """

    def __init__(self, issuer: str, keyring: KeyRing) -> None:
        super().__init__(access_token_generator=None)
        self.issuer = issuer
        self.keyring = keyring
        # kid -> the encoded JWS header; one entry per signing key ever used.
        self._headers: dict[str, bytes] = {}

    def get_audiences(self, client: ClientRecord, scope: str) -> Sequence[str]:
        return list(client.audiences[:1])

    def get_extra_claims(self, client: ClientRecord, scope: str) -> dict:
        return {"account_id": client.account_id}

    def generate(
        self,
        grant_type: str,
        client: ClientRecord,
        user=None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = False,
        audiences: Sequence[str] | None = None,
        confirmation: dict[str, str] | None = None,
    ) -> dict:
        """A signed token response; `confirmation` binds the token (RFC 7800 `cnf`).

        `{"jkt": ...}` makes a DPoP-bound token (RFC 9449 §6), `{"x5t#S256": ...}`
        a certificate-bound one (RFC 8705 §3.1).
        """
        key = self.keyring.snapshot().current
        if key is None:
            raise NoSigningKeyError("no current signing key is loaded")
        scope = scope or ""
        ttl = expires_in or client.access_token_ttl
        issued = time.time()
        now = int(issued)
        aud = list(audiences) if audiences else self.get_audiences(client, scope)
        claims = {
            "iss": self.issuer,
            "sub": client.id,
            "client_id": client.id,
            "aud": aud[0] if len(aud) == 1 else aud,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": new_jti(issued),
            "scope": scope,
            **self.get_extra_claims(client, scope),
        }
        if confirmation:
            claims["cnf"] = confirmation
        token = self._sign(key, claims)
        return {
            "access_token": token,
            "token_type": token_type(claims),
            "expires_in": ttl,
            "scope": scope,
        }

    def _sign(self, key, claims: dict) -> str:
        """Compact JWS (RFC 7515 §7.1) with a prebuilt header; half of jwt.encode's cost."""
        header = self._headers.get(key.kid)
        if header is None:
            # RFC 9068 §2.1: "typ" MUST be "at+jwt".
            fields = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}
            header = _b64(json.dumps(fields, separators=(",", ":")).encode())
            self._headers[key.kid] = header
        payload = _b64(orjson.dumps(claims))
        signing_input = header + b"." + payload
        signature = jose.sign(key.alg, signing_input, key.private_key)
        return (signing_input + b"." + _b64(signature)).decode("ascii")


def verify_access_token(token: str, audience: str | None) -> dict:
    """Verify one of our RFC 9068 tokens: signature, typ, iss, exp, aud.

    RFC 9068 §4: the resource server MUST check "typ", "iss", "aud", the
    signature with the issuer's keys, and "exp". `audience=None` skips only
    the audience, for introspection and revocation, which serve every one.
    Read with app.jose (one parse per token, PyJWT's algorithm objects), the
    claims checked as PyJWT's decode checks them with no leeway.

    :raise jwt.InvalidTokenError: for anything wrong with it.
    """
    jws = jose.parse(token, MAX_TOKEN_LENGTH)
    if jws is None or not jws.signature:
        raise jwt.DecodeError("not a signed compact JWS")
    header = jws.header
    typ, kid = header.get("typ"), header.get("kid")
    # Header values are attacker-chosen JSON: check types before using them.
    if not isinstance(typ, str) or typ.lower() not in ("at+jwt", "application/at+jwt"):
        raise jwt.InvalidTokenError("not an access token")
    if not isinstance(kid, str):
        raise jwt.InvalidTokenError("unknown key")
    snap = runtime().keyring.snapshot()
    key = snap.verify_keys.get(kid)
    if key is None or header.get("alg") != key.alg:
        raise jwt.InvalidTokenError("unknown key")
    if not jose.verify(jws, key.alg, key.public_key):
        raise jwt.InvalidSignatureError("Signature verification failed")
    claims = jws.claims
    if claims.get("iss") != current_app.config["ISSUER"]:
        raise jwt.InvalidIssuerError("Invalid issuer")
    if "aud" not in claims:
        raise jwt.MissingRequiredClaimError("aud")
    # Without an expected audience the claim is required but not compared.
    checked = claims if audience else {k: v for k, v in claims.items() if k != "aud"}
    if not jose.registered_claims_ok(
        checked,
        audiences=[audience] if audience else (),
        now=time.time(),
        leeway=0,
        required=_REQUIRED_CLAIMS,
    ):
        raise jwt.InvalidTokenError("expired, not yet valid, or for another audience")
    return claims


_REQUIRED_CLAIMS = ("exp", "iat", "iss", "sub", "jti")


def token_type(claims: dict) -> str:
    """RFC 9449 §5: "DPoP" for a token bound to a DPoP key, else "Bearer" (RFC 8705 §3)."""
    cnf = claims.get("cnf")
    return "DPoP" if isinstance(cnf, dict) and "jkt" in cnf else "Bearer"


def new_jti(issued: float) -> str:
    """A token id that carries its issue time to the millisecond, like a UUIDv7 (RFC 9562 §5.7).

    48 bits of epoch milliseconds, then 80 random bits: unique and
    unguessable as before (the id was 128 random bits), and at the same
    length. `iat` has a resolution of one second, too coarse to tell a token
    issued just before a client's token cut-off from one issued just after it
    (docs/api.md §2.1 `revoke-tokens`); the signed id can.
    """
    raw = int(issued * 1000).to_bytes(6, "big") + secrets.token_bytes(10)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def issued_ms(jti: str, iat: int | None) -> int | None:
    """When a token was issued, in epoch milliseconds: from its `jti` when `new_jti` made it.

    A token from before this format (a random id) counts as issued at the
    start of its `iat` second, so a cut-off later in that second ends it too.
    """
    if len(jti) == 22:
        try:
            raw = base64.urlsafe_b64decode(jti + "==")
        except ValueError:
            raw = b""
        if len(raw) == 16:
            ms = int.from_bytes(raw[:6], "big")
            # A random id decodes to a time far from its token's iat.
            if iat is None or abs(ms // 1000 - iat) <= 1:
                return ms
    return None if iat is None else iat * 1000


def _client_of(claims: dict) -> str:
    return str(claims.get("client_id") or claims.get("sub"))


def _issued_ms_of(claims: dict) -> int | None:
    """`issued_ms` of a token's claims; an iat of NaN or Infinity (JSON as Python reads it,
    possible in an unverified token) counts as none."""
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or not math.isfinite(iat):
        iat = None
    return issued_ms(claims["jti"], None if iat is None else int(iat))


def _revocation_key(claims: dict) -> tuple[str, str, int | None] | None:
    """(jti, client id, issue time in ms): what the deny-list is asked about a token."""
    if not isinstance(claims.get("jti"), str):
        return None
    return claims["jti"], _client_of(claims), _issued_ms_of(claims)


@dataclass(frozen=True)
class AccessToken(TokenMixin):
    """One of our access tokens, verified, as Authlib's introspection and revocation see it."""

    claims: dict
    #: The deny-list's answer, asked before the signature was checked (`read(ask_early=True)`).
    revoked: Pending[bool] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def read(cls, token: object, ask_early: bool = False) -> AccessToken | None:
        """The token if it is one of ours and unexpired, whatever its audience; else None.

        With `ask_early` the shared deny-list is asked about the token's
        `jti` before its signature is checked, and answers while it is (the
        question reveals nothing and changes nothing; a token that does not
        verify never reads the answer).
        """
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        revoked = None
        if ask_early:
            unverified = jose.parse(token, MAX_TOKEN_LENGTH)
            key = _revocation_key(unverified.claims) if unverified is not None else None
            if key is not None:
                revoked = runtime().jti.is_revoked_later(*key)
        try:
            claims = verify_access_token(token, audience=None)
        except (jwt.InvalidTokenError, ValueError, TypeError, KeyError, RecursionError):
            return None
        if not isinstance(claims.get("jti"), str):
            return None
        return cls(claims, revoked)

    @property
    def client_id(self) -> str:
        return _client_of(self.claims)

    @property
    def jti(self) -> str:
        return self.claims["jti"]

    def check_client(self, client: ClientRecord) -> bool:
        return self.client_id == client.id

    def get_scope(self) -> str:
        return str(self.claims.get("scope", ""))

    def get_expires_in(self) -> int:
        return max(0, int(self.claims["exp"] - time.time()))

    def is_expired(self) -> bool:
        # `read` refused it if it was expired (no leeway).
        return False

    @property
    def issued_ms(self) -> int | None:
        """Issue time in epoch milliseconds (see `issued_ms`)."""
        return _issued_ms_of(self.claims)

    def is_revoked(self) -> bool:
        """On the shared deny-list (RFC 7009) or before its client's cut-off; asked every time."""
        if self.revoked is not None:
            return self.revoked.result()
        return runtime().jti.is_revoked(self.jti, self.client_id, self.issued_ms)
