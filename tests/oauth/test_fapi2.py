"""The FAPI 2.0 profile of a client (`security_profile: "fapi2"`, docs/api.md §2.1):
only private_key_jwt or mTLS, only sender-constrained tokens, assertions with the
issuer as their sole audience, iat/nbf at most 10 s ahead, PS256, ES256 or EdDSA
only; a server signing with RS256 refuses such a client. Through HTTP."""

from __future__ import annotations

import time

import jwt
import pytest
import sqlalchemy as sa
from cryptography.x509.oid import NameOID

from app.extensions import db
from app.models import Client
from app.oauth.rfc7523 import fapi2_claims_acceptable
from tests.conftest import basic_auth
from tests.mtls import PROXY, make_cert, name
from tests.oauth.assertions import (
    ISSUER,
    TOKEN_URL,
    assertion_form,
    claims_for,
    make_key,
    register_key,
    sign,
    token_request,
)

API = "/api/v1/clients"
AUDIENCE = "https://payments.example"


@pytest.fixture
def admin(factory):
    return factory.admin_headers("acme")


def fapi_client(client, factory, admin, alg: str = "ES256"):
    """A FAPI 2.0 client with a secret too (to show it is refused) and a key of `alg`."""
    cid, secret = factory.client(
        "acme", scopes=["pay"], audiences=[AUDIENCE], security_profile="fapi2"
    )
    key = make_key(alg)
    register_key(client, admin, cid, key)
    return cid, secret, key


def refused_client(response) -> None:
    assert response.status_code == 401, response.get_json()
    assert response.get_json()["error"] == "invalid_client"


def test_a_secret_never_authenticates_a_fapi2_client(client, factory, admin):
    cid, secret, _ = fapi_client(client, factory, admin)
    for form, headers in (
        ({}, basic_auth(cid, secret)),
        ({"client_id": cid, "client_secret": secret}, {}),
    ):
        response = client.post(
            "/oauth2/token", data={"grant_type": "client_credentials", **form}, headers=headers
        )
        refused_client(response)


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": TOKEN_URL},  # the token endpoint's URL: not the issuer
        {"aud": [ISSUER]},  # an array, even of the issuer alone
        {"aud": ISSUER, "iat": 30},  # seconds ahead of the test's now
        {"aud": ISSUER, "nbf": 30},
    ],
    ids=["token-url", "array", "iat-ahead", "nbf-ahead"],
)
def test_assertions_outside_the_profile_are_refused(client, factory, admin, claims):
    cid, _, key = fapi_client(client, factory, admin)
    # Times are made now, not when the parameters were collected.
    now = int(time.time())
    claims = {k: now + v if k in ("iat", "nbf") else v for k, v in claims.items()}
    refused_client(token_request(client, sign(key, claims_for(cid, **claims))))


def test_an_rs256_assertion_is_refused_for_a_fapi2_client(client, factory, admin):
    cid, _, key = fapi_client(client, factory, admin, alg="RS256")
    refused_client(token_request(client, sign(key, claims_for(cid, aud=ISSUER))))


@pytest.mark.parametrize("alg", ["ES256", "PS256", "EdDSA"])
def test_a_good_assertion_still_needs_a_sender_constrained_token(client, factory, admin, alg):
    cid, _, key = fapi_client(client, factory, admin, alg=alg)
    response = token_request(client, sign(key, claims_for(cid, aud=ISSUER)))
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["error"] == "invalid_request"
    assert "sender-constrained" in body["error_description"]


def test_a_client_without_the_profile_keeps_every_method_and_audience(client, factory, admin):
    cid, secret = factory.client("acme", scopes=["pay"], audiences=[AUDIENCE])
    assert factory.token(cid, secret)["token_type"] == "Bearer"
    key = make_key("RS256")
    register_key(client, admin, cid, key)
    assert token_request(client, sign(key, claims_for(cid))).status_code == 200


def test_the_profile_is_refused_with_a_secret_method_allowed(client, admin):
    body = {
        "name": "fapi",
        "security_profile": "fapi2",
        "allowed_auth_methods": ["private_key_jwt", "client_secret_basic"],
    }
    response = client.post(API, json=body, headers=admin)
    assert response.status_code == 400
    assert [e["field"] for e in response.get_json()["errors"]] == ["allowed_auth_methods"]
    ok = client.post(
        API,
        json={**body, "allowed_auth_methods": ["private_key_jwt"], "create_secret": False},
        headers=admin,
    )
    assert ok.status_code == 201, ok.get_json()
    cid = ok.get_json()["id"]
    patch = {"allowed_auth_methods": ["client_secret_post"]}
    assert client.patch(f"{API}/{cid}", json=patch, headers=admin).status_code == 400


def test_metadata_names_the_profiles_algorithms(client):
    metadata = client.get("/.well-known/oauth-authorization-server").get_json()
    assert metadata["fapi2_signing_alg_values_supported"] == ["PS256", "ES256", "EdDSA"]


def test_fapi2_claims_rules():
    now = 1_800_000_000
    assert fapi2_claims_acceptable({"aud": ISSUER, "iat": now + 10, "nbf": now}, ISSUER, now)
    assert not fapi2_claims_acceptable({"aud": ISSUER, "iat": now + 11}, ISSUER, now)
    assert not fapi2_claims_acceptable({"aud": ISSUER + "/"}, ISSUER, now)
    assert not fapi2_claims_acceptable({"aud": [ISSUER]}, ISSUER, now)


class TestOnAnRs256Server:
    @pytest.fixture
    def app_config(self, base_config, migrated, tmp_path):
        return {**base_config, "SIGNING_ALG": "RS256", "KEYS_DIR": str(tmp_path / "keys")}

    def test_creating_a_fapi2_client_is_refused_on_security_profile(self, client, admin):
        body = {"name": "fapi", "security_profile": "fapi2"}
        response = client.post(API, json=body, headers=admin)
        assert response.status_code == 400
        errors = response.get_json()["errors"]
        assert [e["field"] for e in errors] == ["security_profile"]
        assert "RS256" in errors[0]["message"]

    def test_a_stored_fapi2_client_gets_a_clear_refusal(self, app, client, factory, admin):
        cid, _ = factory.client("acme", scopes=["pay"], audiences=[AUDIENCE])
        key = make_key("ES256")
        register_key(client, admin, cid, key)
        with app.app_context():
            # As a client made before the server moved to RS256 would be.
            db.session.execute(
                sa.update(Client).where(Client.id == cid).values(security_profile="fapi2")
            )
            db.session.commit()
            db.session.remove()
        response = token_request(client, sign(key, claims_for(cid, aud=ISSUER)))
        assert response.status_code == 400, response.get_json()
        body = response.get_json()
        assert body["error"] == "unauthorized_client"
        assert "RS256" in body["error_description"]


class TestWithMutualTls:
    """A FAPI 2.0 client gets a token when it authenticates and binds with mTLS."""

    @pytest.fixture
    def app_config(self, base_config, migrated):
        return {**base_config, "TRUSTED_PROXIES": "10.0.0.0/8"}

    def test_tls_client_auth_gets_a_certificate_bound_token(self, client, factory):
        dn = "CN=payments,O=Acme"
        cid, _ = factory.client(
            "acme",
            scopes=["pay"],
            audiences=[AUDIENCE],
            security_profile="fapi2",
            tls_client_auth_subject_dn=dn,
        )
        cert = make_cert(
            # RFC 4514 strings list the RDNs last first: this is "CN=payments,O=Acme".
            name((NameOID.ORGANIZATION_NAME, "Acme"), (NameOID.COMMON_NAME, "payments"))
        )
        response = client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", "client_id": cid},
            headers={"Client-Cert": cert.rfc9440()},
            environ_base=dict(PROXY),
        )
        assert response.status_code == 200, response.get_json()
        token = jwt.decode(response.get_json()["access_token"], options={"verify_signature": False})
        assert token["cnf"] == {"x5t#S256": cert.thumbprint}

    def test_private_key_jwt_with_a_certificate_gets_a_bound_token(self, client, factory, admin):
        cid, secret, key = fapi_client(client, factory, admin)
        cert = make_cert(name((NameOID.COMMON_NAME, "anything")))
        form = {
            "grant_type": "client_credentials",
            **assertion_form(sign(key, claims_for(cid, aud=ISSUER))),
        }
        response = client.post(
            "/oauth2/token",
            data=form,
            headers={"Client-Cert": cert.rfc9440()},
            environ_base=dict(PROXY),
        )
        assert response.status_code == 200, response.get_json()
        # A secret with a certificate is still a secret: refused for the profile.
        refused = client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            headers={**basic_auth(cid, secret), "Client-Cert": cert.rfc9440()},
            environ_base=dict(PROXY),
        )
        refused_client(refused)
