"""Integration tests: security headers on every response (issue 7, item 5).

X-Content-Type-Options: nosniff everywhere; Cache-Control: no-store on every
/oauth2 and /api answer (they carry secrets and tokens), success or error;
HSTS exactly when the issuer is https.
"""

from __future__ import annotations

import pytest

from tests.conftest import basic_auth

TOKEN = {"grant_type": "client_credentials"}


@pytest.fixture
def issuer() -> str:
    return "http://localhost:5000"


@pytest.fixture
def app_config(base_config, migrated, issuer) -> dict:
    return {**base_config, "ISSUER": issuer}


def responses(client, factory):
    """A response of every family and kind: success, client error, 404, 405, 413."""
    cid, secret = factory.client()
    admin = factory.admin_headers("system")
    big = b"grant_type=client_credentials&x=" + b"a" * (65 * 1024)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    return {
        "token 200": client.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, secret)),
        "token 401": client.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, "no")),
        "token 400": client.post("/oauth2/token", data={"grant_type": "password"}),
        "token 405": client.get("/oauth2/token"),
        "token 413": client.post("/oauth2/token", data=big, headers=form),
        "introspect": client.post(
            "/oauth2/introspect", data={"token": "x"}, headers=basic_auth(cid, secret)
        ),
        "oauth2 404": client.post("/oauth2/nothing"),
        "api create 201": client.post("/api/v1/clients", json={"name": "hdr"}, headers=admin),
        "api list 200": client.get("/api/v1/clients", headers=admin),
        "api 401": client.get("/api/v1/clients"),
        "api 404": client.get("/api/v1/clients/nope", headers=admin),
        "api 405": client.delete("/api/v1/clients", headers=admin),
        "api 413": client.post(
            "/api/v1/clients",
            data=b'{"name": "' + b"a" * (65 * 1024) + b'"}',
            headers={**admin, "Content-Type": "application/json"},
        ),
        "api secrets": client.get(f"/api/v1/clients/{cid}/secrets", headers=admin),
        "jwks": client.get("/.well-known/jwks.json"),
        "metadata": client.get("/.well-known/oauth-authorization-server"),
        "healthz": client.get("/healthz"),
        "readyz": client.get("/readyz"),
        "root 404": client.get("/no/such/page"),
    }


def expected_status(name: str) -> int:
    """The status a response's name promises ("api 404"), else 200."""
    last = name.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 200


def test_every_response_has_nosniff_and_secrets_are_not_cached(client, factory):
    for name, response in responses(client, factory).items():
        # Each kind of answer really is that kind, or its headers would prove little.
        assert response.status_code == expected_status(name), (name, response.get_data()[:300])
        assert response.headers.get("X-Content-Type-Options") == "nosniff", name
        assert "Strict-Transport-Security" not in response.headers, name
        if name.startswith(("token", "introspect", "oauth2", "api")):
            assert response.headers.get("Cache-Control") == "no-store", name
    token = responses(client, factory)["token 200"]
    # RFC 6749 §5.1: the token response also says Pragma: no-cache.
    assert token.headers["Pragma"] == "no-cache"


@pytest.mark.parametrize("issuer", ["https://auth.example.com"])
def test_hsts_when_the_issuer_is_https(client, factory):
    for name, response in responses(client, factory).items():
        assert response.status_code == expected_status(name), (name, response.get_data()[:300])
        hsts = response.headers.get("Strict-Transport-Security", "")
        assert hsts.startswith("max-age="), name
        assert int(hsts.split("=")[1].split(";")[0]) >= 31536000, name
        assert response.headers.get("X-Content-Type-Options") == "nosniff", name
