"""Integration: two app instances sharing one database (and Redis) agree on used
assertions and revoked tokens at once; nothing lives only in process memory.
"""

from __future__ import annotations

import pytest

from app import create_app
from tests.conftest import basic_auth
from tests.oauth.assertions import claims_for, make_key, register_key, sign, token_request

AUDIENCE = "https://api.example.com"


@pytest.fixture
def app_config(backend_config) -> dict:
    return backend_config


@pytest.fixture
def second(app, app_config):
    """Another instance: its own caches and key ring, the same database and Redis."""
    other = create_app(dict(app_config))
    assert other is not app
    yield other.test_client()
    with other.app_context():
        from app.extensions import db

        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def keyed_client(client, factory):
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    pair = make_key("ES256")
    register_key(client, factory.admin_headers("acme"), cid, pair)
    return cid, secret, pair


def test_assertion_replayed_on_another_instance(client, second, keyed_client):
    cid, _, pair = keyed_client
    assertion = sign(pair, claims_for(cid))
    assert token_request(client, assertion).status_code == 200
    replay = token_request(second, assertion)
    assert replay.status_code == 401
    assert replay.get_json()["error"] == "invalid_client"
    # And the other way round, with a fresh assertion used first on the second instance.
    fresh = sign(pair, claims_for(cid))
    assert token_request(second, fresh).status_code == 200
    assert token_request(client, fresh).status_code == 401


def test_assertion_replayed_at_another_endpoint_of_another_instance(client, second, keyed_client):
    cid, _, pair = keyed_client
    assertion = sign(pair, claims_for(cid, aud="http://localhost:5000"))
    form = {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
        "token": "anything",
    }
    assert second.post("/oauth2/introspect", data=form).status_code == 200
    assert token_request(client, assertion).status_code == 401


def test_revocation_seen_by_another_instance(client, second, factory):
    cid, secret = factory.admin("acme")
    token = factory.token(cid, secret)["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    caller = factory.client("acme")
    # The second instance has verified (and could have cached) the token before.
    assert second.get("/api/v1/clients", headers=headers).status_code == 200
    introspected = second.post(
        "/oauth2/introspect", data={"token": token}, headers=basic_auth(*caller)
    )
    assert introspected.get_json()["active"] is True

    revoked = client.post("/oauth2/revoke", data={"token": token}, headers=basic_auth(cid, secret))
    assert revoked.status_code == 200

    # No delay on any instance (docs/api.md §1).
    response = second.get("/api/v1/clients", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", DPoP algs="ES256 ES384 PS256 RS256 EdDSA"'
    )
    introspected = second.post(
        "/oauth2/introspect", data={"token": token}, headers=basic_auth(*caller)
    )
    assert introspected.get_json() == {"active": False}


def test_revocation_on_second_instance_seen_by_first(client, second, factory):
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    token = factory.token(cid, secret)["access_token"]
    caller = factory.client("acme")
    response = second.post("/oauth2/revoke", data={"token": token}, headers=basic_auth(cid, secret))
    assert response.status_code == 200
    response = client.post("/oauth2/introspect", data={"token": token}, headers=basic_auth(*caller))
    assert response.get_json() == {"active": False}


def test_unreachable_redis_fails_closed(app_config, factory, keyed_client):
    """A deny-list or replay cache that cannot be asked never lets a token through."""
    cid, secret, pair = keyed_client
    admin_id, admin_secret = factory.admin("acme")
    admin_token = factory.token(admin_id, admin_secret)["access_token"]
    broken = create_app({**app_config, "REDIS_URL": "redis://127.0.0.1:1/0"})
    http = broken.test_client()
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": sign(pair, claims_for(cid)),
    }
    response = http.post("/oauth2/token", data=form)
    assert response.status_code == 503
    assert response.get_json()["error"] == "temporarily_unavailable"
    response = http.post(
        "/oauth2/introspect", data={"token": admin_token}, headers=basic_auth(cid, secret)
    )
    assert response.status_code == 503
    assert "active" not in response.get_json()
    response = http.get("/api/v1/clients", headers={"Authorization": f"Bearer {admin_token}"})
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    with broken.app_context():
        from app.extensions import db

        db.session.remove()
        db.engine.dispose()


def test_dpop_proof_replayed_on_another_instance(client, second, factory):
    from tests.oauth.dpop import make_dpop_key, proof

    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    pair = make_dpop_key()
    value = proof(pair)
    headers = {**basic_auth(cid, secret), "DPoP": value}
    form = {"grant_type": "client_credentials"}
    assert client.post("/oauth2/token", data=form, headers=headers).status_code == 200
    replay = second.post("/oauth2/token", data=form, headers=headers)
    assert replay.status_code == 400
    assert replay.get_json()["error"] == "invalid_dpop_proof"


def test_dpop_proof_with_an_assertion_replayed_on_another_instance(client, second, keyed_client):
    from tests.oauth.dpop import make_dpop_key, proof

    cid, _, pair = keyed_client
    value = proof(make_dpop_key())
    first = token_request(client, sign(pair, claims_for(cid)))
    assert first.status_code == 200
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    ok = client.post(
        "/oauth2/token",
        data={**form, "client_assertion": sign(pair, claims_for(cid))},
        headers={"DPoP": value},
    )
    assert ok.status_code == 200
    replay = second.post(
        "/oauth2/token",
        data={**form, "client_assertion": sign(pair, claims_for(cid))},
        headers={"DPoP": value},
    )
    assert replay.status_code == 400
    assert replay.get_json()["error"] == "invalid_dpop_proof"
