"""Test helpers: DPoP proofs (RFC 9449 §4.2) built as a client would, with PyJWT and cryptography.

Nothing here knows the server's internals; the RFC 7638 thumbprint is
computed here from the RFC's text, not with the server's function.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests.oauth.assertions import ISSUER, TOKEN_URL, KeyPair, make_key

DPOP_ALGS = ("ES256", "ES384", "PS256", "RS256", "EdDSA")


def make_dpop_key(alg: str = "ES256", **kwargs) -> KeyPair:
    """A client's DPoP key pair; ES384 (P-384) besides what make_key makes."""
    if alg != "ES384":
        return make_key(alg, **kwargs)
    private = ec.generate_private_key(ec.SECP384R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return KeyPair(private, alg, jwk)


def public_members(pair: KeyPair) -> dict:
    """The public JWK as a proof header carries it (no alg, kid or use needed)."""
    return {k: v for k, v in pair.public_jwk.items() if k in ("kty", "crv", "x", "y", "n", "e")}


def thumbprint(jwk: dict) -> str:
    """RFC 7638 §3: SHA-256 over the required members, sorted, no whitespace."""
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "RSA": ("e", "kty", "n"),
        "OKP": ("crv", "kty", "x"),
    }
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def ath(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def proof(
    pair: KeyPair,
    *,
    htm: str = "POST",
    htu: str = TOKEN_URL,
    iat: Any = "now",
    jti: Any = "random",
    nonce: str | None = None,
    access_token: str | None = None,
    header: dict | None = None,
    claims: dict | None = None,
    drop: tuple[str, ...] = (),
) -> str:
    """A DPoP proof JWT signed by `pair`; `header`/`claims` override, `drop` removes claims."""
    body: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16) if jti == "random" else jti,
        "htm": htm,
        "htu": htu,
        "iat": int(time.time()) if iat == "now" else iat,
    }
    if nonce is not None:
        body["nonce"] = nonce
    if access_token is not None:
        body["ath"] = ath(access_token)
    body.update(claims or {})
    for name in drop:
        body.pop(name, None)
    fields = {"typ": "dpop+jwt", "alg": pair.alg, "jwk": public_members(pair), **(header or {})}
    fields = {k: v for k, v in fields.items() if v is not None}
    return signed(pair, fields, body)


def signed(pair: KeyPair, header: dict, claims: dict) -> str:
    """A JWS whose header is exactly `header`, signed with the pair's alg."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    algorithm = jwt.get_algorithm_by_name(pair.alg)
    return f"{signing_input}.{b64(algorithm.sign(signing_input.encode(), pair.private_key))}"


def api_url(path: str) -> str:
    return ISSUER + path
