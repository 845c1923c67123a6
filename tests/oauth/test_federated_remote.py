"""Integration: federated credentials whose issuer keys come from a `jwks_uri` or OIDC
discovery (docs/api.md §1.3), served by a local issuer over plain http under
FEDERATION_ALLOW_INSECURE=1, through the token endpoint and the dry run."""

from __future__ import annotations

import logging

import pytest
from pytest_httpserver import HTTPServer

from tests.conftest import free_port
from tests.oauth.federation import (
    Issuer,
    add_credential,
    create_secretless,
    dry_run,
    federated_request,
)

LOGGER = "app.oauth.federated"


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
def platform(httpserver: HTTPServer) -> Issuer:
    """A local issuer publishing its keys and its discovery document."""
    url = httpserver.url_for("/").rstrip("/")
    issuer = Issuer(url, "ES256")
    httpserver.expect_request("/keys").respond_with_json(issuer.jwks)
    httpserver.expect_request("/.well-known/openid-configuration").respond_with_json(
        {"issuer": url, "jwks_uri": f"{url}/keys"}
    )
    return issuer


def test_keys_from_the_jwks_uri(client, admin, secretless, platform, httpserver):
    body = {
        "name": "remote",
        "issuer": platform.url,
        "subject": "build-1",
        "jwks_uri": f"{platform.url}/keys",
    }
    add_credential(client, admin, secretless, body)
    assert federated_request(client, secretless, platform.token("build-1")).status_code == 200
    # Cached: a second request fetches nothing.
    assert federated_request(client, secretless, platform.token("build-1")).status_code == 200
    assert sum(1 for request, _ in httpserver.log if request.path == "/keys") == 1
    refused = federated_request(client, secretless, platform.token("build-2"))
    assert refused.status_code == 401
    answer = dry_run(client, admin, secretless, platform.token("build-2")).get_json()
    assert answer["results"][0]["failed_check"] == "subject"


def test_keys_by_oidc_discovery(client, admin, secretless, platform, httpserver):
    body = {"name": "discovered", "issuer": platform.url, "subject_pattern": "build-*"}
    add_credential(client, admin, secretless, body)
    assert federated_request(client, secretless, platform.token("build-7")).status_code == 200
    paths = [request.path for request, _ in httpserver.log]
    assert paths == ["/.well-known/openid-configuration", "/keys"]
    answer = dry_run(client, admin, secretless, platform.token("build-8")).get_json()
    assert answer["matched"] is True


def test_a_token_signed_by_another_key_with_the_issuers_kid(client, admin, secretless, platform):
    body = {"name": "remote", "issuer": platform.url, "subject": "s"}
    add_credential(client, admin, secretless, body)
    impostor = Issuer(platform.url, "ES256", kid=platform.kid)
    assert federated_request(client, secretless, impostor.token("s")).status_code == 401
    answer = dry_run(client, admin, secretless, impostor.token("s")).get_json()
    assert answer["results"][0]["failed_check"] == "signature"
    assert answer["results"][0]["detail"] == "the signature does not verify"


def test_an_unreachable_issuer_is_401_never_5xx(client, admin, secretless, caplog):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    unreachable = Issuer(url, "ES256")
    add_credential(client, admin, secretless, {"name": "gone", "issuer": url, "subject": "s"})
    caplog.set_level(logging.INFO, logger=LOGGER)
    token = unreachable.token("s")
    response = federated_request(client, secretless, token)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    assert "gone: signature (issuer keys unavailable" in caplog.text
    assert token not in caplog.text
    answer = dry_run(client, admin, secretless, token).get_json()
    assert answer["results"][0]["failed_check"] == "signature"
    assert answer["results"][0]["detail"].startswith("issuer keys unavailable")


def test_an_issuer_serving_a_private_key_is_refused(client, admin, secretless, httpserver):
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    url = httpserver.url_for("/").rstrip("/")
    leaky = Issuer(url, "ES256", private_key=ec.generate_private_key(ec.SECP256R1()))
    private = {**ECAlgorithm.to_jwk(leaky.private_key, as_dict=True), "kid": leaky.kid}
    httpserver.expect_request("/keys").respond_with_json({"keys": [private]})
    add_credential(
        client,
        admin,
        secretless,
        {"name": "leaky", "issuer": url, "subject": "s", "jwks_uri": f"{url}/keys"},
    )
    assert federated_request(client, secretless, leaky.token("s")).status_code == 401
