"""private_key_jwt client authentication (RFC 7523 §2.2 and §3, RFC 7521 §4.2).

The client sends `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
and a `client_assertion` JWT signed with one of its registered keys
(contract 2.3). Every failure returns None, which the server turns into the
same 401 invalid_client as a wrong secret; no cause is ever told apart, and
nothing in the assertion (jku, x5u, jwk, x5c) is ever fetched or trusted.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from typing import Any

import jwt
from flask import current_app

from app.clients.records import ClientRecord, KeyRecord
from app.oauth.server import FormRequest
from app.runtime import runtime
from app.state.jti import from_timestamp, use_assertion
from app.timeutil import utcnow

# RFC 7523 §3 item 4: "The JWT MUST contain an exp claim"; the contract caps
# how far ahead it may lie so replay-cache entries stay short-lived.
MAX_LIFETIME = 300
# Allowance for the client's clock (RFC 7523 §3 item 4-6 "reasonable leeway").
LEEWAY = 30
MAX_ASSERTION_LENGTH = 16 * 1024
MAX_HEADER_LENGTH = 2048
MAX_JTI_LENGTH = 255
ASSERTION_ALGS = frozenset({"RS256", "PS256", "ES256", "EdDSA"})
COMPACT_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


def _b64json(segment: str) -> Any:
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return json.loads(raw.decode("utf-8"))


def _parse_unverified(assertion: str) -> tuple[dict, dict] | None:
    """Header and claims of a compact JWS, unverified; None when malformed."""
    if len(assertion) > MAX_ASSERTION_LENGTH or not COMPACT_JWS.fullmatch(assertion):
        return None
    header_segment, payload_segment, _ = assertion.split(".")
    if len(header_segment) > MAX_HEADER_LENGTH:
        return None
    try:
        header = _b64json(header_segment)
        claims = _b64json(payload_segment)
    except (binascii.Error, ValueError, RecursionError):
        # ValueError covers bad UTF-8 and bad JSON alike.
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims


def _audiences(endpoint: str) -> list[str]:
    """RFC 7523 §3 item 3: the issuer or the token endpoint URL (contract 1).

    The introspection and revocation endpoints also take their own URL, as
    clients written for RFC 7523 put the endpoint they call in `aud`.
    """
    config = current_app.config
    issuer = config["ISSUER"]
    accepted = [issuer, config["TOKEN_ENDPOINT"]]
    own = {"introspection": "/oauth2/introspect", "revocation": "/oauth2/revoke"}.get(endpoint)
    if own:
        accepted.append(issuer + own)
    return accepted


def _candidate_keys(record: ClientRecord, header: dict) -> list[KeyRecord]:
    """The client's active keys the header may select: by kid, and only of the key's own alg."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ASSERTION_ALGS:
        return []
    if alg not in current_app.config["ASSERTION_SIGNING_ALGS"]:
        return []
    keys = [k for k in record.active_keys(utcnow()) if k.alg == alg]
    if "kid" in header:
        kid = header["kid"]
        if not isinstance(kid, str):
            return []
        keys = [k for k in keys if k.kid == kid]
    return keys


def _verify(assertion: str, key: KeyRecord, client_id: str, endpoint: str) -> dict | None:
    """Claims if the signature and RFC 7523 §3 claim checks pass under this key."""
    try:
        public_key = jwt.PyJWK(key.public_jwk, algorithm=key.alg).key
        return jwt.decode(
            assertion,
            public_key,
            algorithms=[key.alg],
            audience=_audiences(endpoint),
            issuer=client_id,
            leeway=LEEWAY,
            options={"require": ["iss", "sub", "aud", "exp", "jti"], "strict_aud": False},
        )
    except (jwt.PyJWTError, ValueError, TypeError, KeyError, RecursionError):
        return None


def _claims_ok(claims: dict, client_id: str) -> bool:
    """RFC 7523 §3 items 2, 4, 5, 6 and 7 beyond what PyJWT checked."""
    now = time.time()
    if claims.get("sub") != client_id or claims.get("iss") != client_id:
        return False
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return False
    if exp > now + MAX_LIFETIME + LEEWAY:
        return False
    for name in ("iat", "nbf"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if value > now + LEEWAY:
            return False
    jti = claims.get("jti")
    return isinstance(jti, str) and 0 < len(jti) <= MAX_JTI_LENGTH


def authenticate_assertion(request: FormRequest, endpoint: str) -> ClientRecord | None:
    """The client a valid, unused client assertion proves, or None.

    :raises ServiceUnavailable: the replay cache cannot be reached.
    """
    data = request.payload.data
    assertion = data.get("client_assertion")
    if not isinstance(assertion, str):
        return None
    parsed = _parse_unverified(assertion)
    if parsed is None:
        return None
    header, unverified = parsed
    if "crit" in header:
        # RFC 7515 §4.1.11: we understand no extension, so must refuse.
        return None
    client_id = unverified.get("sub")
    if not isinstance(client_id, str) or unverified.get("iss") != client_id:
        return None
    # RFC 7521 §4.2: client_id, when sent, must name the assertion's subject.
    if "client_id" in data and data["client_id"] != client_id:
        return None
    record = runtime().clients.get(client_id)
    if record is None:
        return None
    for key in _candidate_keys(record, header):
        claims = _verify(assertion, key, client_id, endpoint)
        if claims is None:
            continue
        if not _claims_ok(claims, client_id):
            return None
        # RFC 7523 §3 item 7: the jti is used once while the assertion is unexpired.
        expires_at = from_timestamp(claims["exp"] + LEEWAY)
        if not use_assertion(client_id, claims["jti"], expires_at):
            return None
        runtime().usage.key_used(client_id, key.kid)
        return record
    return None
