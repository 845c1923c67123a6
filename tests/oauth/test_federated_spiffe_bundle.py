"""Integration: a SPIFFE trust domain's bundle endpoint as a credential's `jwks_uri`
(docs/federation.md, "SPIFFE JWT-SVIDs"), served by a local server under
FEDERATION_ALLOW_INSECURE=1, the credential made by the console's SPIFFE preset.

A SPIFFE bundle is a JWK Set whose keys say what they verify in `use`: `jwt-svid` for the
keys that sign JWT-SVIDs, `x509-svid` for the CA certificates of X509-SVIDs (SPIFFE Trust
Domain and Bundle, §4). The first kind must verify a JWT-SVID; the second never may.
"""

from __future__ import annotations

import pytest
from pytest_httpserver import HTTPServer

from app.clients.federation_presets import build_credential
from tests.oauth.federation import (
    SERVER_ISSUER,
    Issuer,
    add_credential,
    create_secretless,
    dry_run,
    federated_request,
)


@pytest.fixture
def app_config(base_config, migrated) -> dict:
    return {**base_config, "FEDERATION_ALLOW_INSECURE": True}


@pytest.fixture
def admin(factory):
    return factory.admin_headers("acme")


@pytest.fixture
def secretless(client, admin) -> str:
    return create_secretless(client, admin, "workload", ["read"])


@pytest.fixture
def spire(httpserver: HTTPServer) -> tuple[Issuer, Issuer]:
    """A SPIRE server: its JWT-SVID signing key and its X509 CA key, in one bundle."""
    url = httpserver.url_for("/").rstrip("/")
    jwt_key, ca_key = Issuer(url, "ES256"), Issuer(url, "ES256")
    signing = {k: v for k, v in jwt_key.public_jwk.items() if k not in ("alg", "use")}
    authority = {k: v for k, v in ca_key.public_jwk.items() if k not in ("alg", "use")}
    bundle = {
        "spiffe_sequence": 7,
        "spiffe_refresh_hint": 300,
        "keys": [
            {**signing, "use": "jwt-svid"},
            # A real bundle carries the CA certificate in x5c; only its use matters here.
            {**authority, "use": "x509-svid"},
        ],
    }
    httpserver.expect_request("/bundle").respond_with_json(bundle)
    return jwt_key, ca_key


def svid(key: Issuer, path: str) -> str:
    """A JWT-SVID as SPIRE signs one (with jwt_issuer set): no iat, five minutes."""
    return key.token(
        f"spiffe://acme.example{path}",
        aud=[SERVER_ISSUER],
        lifetime=300,
        iat=None,
        headers={"typ": "JWT"},
    )


def test_a_jwt_svid_verifies_against_the_bundle_endpoint(client, admin, secretless, spire):
    jwt_key, ca_key = spire
    body = build_credential(
        "spiffe",
        {
            "trust_domain": "acme.example",
            "path": "/ns/billing/sa/*",
            "issuer": jwt_key.url,
            "bundle_endpoint": f"{jwt_key.url}/bundle",
        },
    )
    add_credential(client, admin, secretless, body)
    good = federated_request(client, secretless, svid(jwt_key, "/ns/billing/sa/deployer"))
    assert good.status_code == 200, good.get_json()
    other = federated_request(client, secretless, svid(jwt_key, "/ns/payments/sa/deployer"))
    assert other.status_code == 401


def test_an_x509_authority_key_never_verifies_a_jwt(client, admin, secretless, spire):
    jwt_key, ca_key = spire
    body = build_credential(
        "spiffe",
        {
            "trust_domain": "acme.example",
            "path": "/ns/billing/sa/deployer",
            "issuer": jwt_key.url,
            "bundle_endpoint": f"{jwt_key.url}/bundle",
        },
    )
    add_credential(client, admin, secretless, body)
    forged = svid(ca_key, "/ns/billing/sa/deployer")
    assert federated_request(client, secretless, forged).status_code == 401
    [result] = dry_run(client, admin, secretless, forged).get_json()["results"]
    assert result["failed_check"] == "signature"
