"""Test helpers: a workload identity issuer as a platform runs one, and federated requests.

The issuer's keys come from `cryptography`, its tokens are signed with
PyJWT; nothing here knows the server's internals.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tests.oauth.assertions import ASSERTION_TYPE

API = "/api/v1"
SERVER_ISSUER = "http://localhost:5000"


def _key_pair(alg: str) -> tuple[Any, dict]:
    if alg[:2] in ("RS", "PS"):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return private, RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    if alg[:2] == "ES":
        curve = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}[alg]
        private = ec.generate_private_key(curve())
        return private, ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    if alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        return private, OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    raise ValueError(alg)


@dataclass
class Issuer:
    """A platform's token issuer: one signing key, its JWKS, and tokens shaped as it makes them."""

    url: str
    alg: str = "RS256"
    kid: str = field(default_factory=lambda: secrets.token_hex(8))
    private_key: Any = None
    public_jwk: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.private_key is None:
            self.private_key, self.public_jwk = _key_pair(self.alg)
        self.public_jwk = {**self.public_jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    @property
    def jwks(self) -> dict:
        return {"keys": [self.public_jwk]}

    def token(
        self,
        sub: str | None,
        *,
        aud: Any = SERVER_ISSUER,
        lifetime: int = 300,
        iat: Any = "now",
        headers: dict | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {"iss": self.url, "sub": sub, "aud": aud}
        if iat == "now":
            body["iat"] = now
        elif iat is not None:
            body["iat"] = iat
        body["exp"] = now + lifetime
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        header = {"kid": self.kid, **(headers or {})}
        return jwt.encode(body, self.private_key, algorithm=self.alg, headers=header)


def credential_body(platform: Issuer, **fields: Any) -> dict:
    """A credential body with the issuer's JWKS inline; fields override."""
    body = {"name": f"cred-{secrets.token_hex(3)}", "issuer": platform.url, "jwks": platform.jwks}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None or k in fields}


def create_secretless(http, headers: dict, name: str, scopes: list[str]) -> str:
    """A client made through the API with no secret at all (docs/api.md §2.1 create_secret)."""
    response = http.post(
        f"{API}/clients",
        json={"name": name, "scopes": scopes, "create_secret": False},
        headers=headers,
    )
    assert response.status_code == 201, response.get_json()
    assert "client_secret" not in response.get_json()
    return response.get_json()["id"]


def add_credential(http, headers: dict, client_id: str, body: dict) -> dict:
    response = http.post(
        f"{API}/clients/{client_id}/federated-credentials", json=body, headers=headers
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def federated_request(http, client_id: str | None, assertion: str, **params):
    data = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        **params,
    }
    if client_id is not None:
        data["client_id"] = client_id
    return http.post("/oauth2/token", data=data)


def dry_run(http, headers: dict, client_id: str, assertion: str):
    return http.post(
        f"{API}/clients/{client_id}/federated-credentials/test",
        json={"assertion": assertion},
        headers=headers,
    )
