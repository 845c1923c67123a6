"""Test helpers: client key pairs and client assertions built as a real client would.

Keys come from `cryptography`, assertions are signed with PyJWT; nothing here
knows the server's internals.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "http://localhost:5000"
TOKEN_URL = f"{ISSUER}/oauth2/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
KEY_KINDS = ("RS256", "PS256", "ES256", "EdDSA")


@dataclass
class KeyPair:
    private_key: Any
    alg: str
    public_jwk: dict
    registered_kid: str | None = None

    @property
    def kid(self) -> str | None:
        return self.public_jwk.get("kid")


def make_key(alg: str, *, kid: str | None = None, rsa_bits: int = 2048) -> KeyPair:
    """A new key pair for `alg` and its public JWK (with `alg`, and `kid` if given)."""
    if alg in ("RS256", "PS256"):
        private = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        raise ValueError(alg)
    jwk["alg"] = alg
    if kid:
        jwk["kid"] = kid
    return KeyPair(private, alg, jwk)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(client_id: str, *, aud: Any = TOKEN_URL, lifetime: int = 60, **extra) -> dict:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + lifetime,
        "jti": secrets.token_urlsafe(16),
    }
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def sign(key: KeyPair, claims: dict, *, kid: Any = "auto", headers: dict | None = None) -> str:
    """A compact JWS of the claims under the key; kid defaults to the registered one."""
    header = dict(headers or {})
    if kid == "auto":
        kid = key.registered_kid or key.kid
    if kid is not None:
        header["kid"] = kid
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers=header)


def sign_header(key: KeyPair, header: dict, claims: dict) -> str:
    """A genuinely signed JWS whose header is exactly `header` (PyJWT would refuse some)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    algorithm = jwt.get_algorithm_by_name(key.alg)
    signature = algorithm.sign(signing_input.encode(), key.private_key)
    return f"{signing_input}.{b64url(signature)}"


def raw_jws(header: dict | str | bytes, claims: dict | bytes, signature: bytes = b"sig") -> str:
    """A JWS-shaped string with arbitrary (possibly broken) segments."""
    if isinstance(header, dict):
        header = json.dumps(header).encode()
    elif isinstance(header, str):
        header = header.encode()
    if isinstance(claims, dict):
        claims = json.dumps(claims).encode()
    return ".".join([b64url(header), b64url(claims), b64url(signature)])


def assertion_form(assertion: str, **params) -> dict:
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion, **params}


def register_key(http, headers: dict, client_id: str, key: KeyPair | None = None, **body) -> dict:
    """Register the key's public JWK (or generate one with key=None); asserts 201."""
    if key is not None:
        body["public_jwk"] = key.public_jwk
    response = http.post(f"/api/v1/clients/{client_id}/keys", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    data = response.get_json()
    if key is not None:
        key.registered_kid = data["kid"]
    return data


def token_request(http, assertion: str, **params):
    return http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", **assertion_form(assertion, **params)},
    )


def mint_access_token(app, **overrides) -> str:
    """A token signed with the server's own current key, claims and header overridable."""
    with app.app_context():
        from app.runtime import runtime

        key = runtime().keyring.snapshot().current
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": overrides.pop("client_id", "someone"),
            "aud": "https://api.example.com",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": secrets.token_urlsafe(16),
            "scope": "read",
            "account_id": "acme",
        }
        claims["client_id"] = claims["sub"]
        header = {"typ": "at+jwt", "kid": key.kid, **overrides.pop("header", {})}
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        header = {"alg": key.alg, **{k: v for k, v in header.items() if v is not None}}
        return sign_header(KeyPair(key.private_key, key.alg, {}), header, claims)
