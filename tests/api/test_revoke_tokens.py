"""Token cut-off (docs/api.md §2.1 `revoke-tokens`): every token issued to a
client until the call is inactive at introspection and refused by the
management API, on every instance at once; tokens issued afterwards work.
Disabling a client sets the cut-off too. Through HTTP, real database and crypto,
once per shared-state backend."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditEvent, Client
from tests.conftest import basic_auth

API = "/api/v1/clients"
AUDIENCE = "https://orders.example"


@pytest.fixture
def app_config(backend_config) -> dict:
    return backend_config


@pytest.fixture
def second(make_app):
    """Another instance on the same database (and Redis) with its own caches."""
    return make_app().test_client()


@pytest.fixture
def resource(factory):
    """Credentials of a registered client that introspects (a resource server)."""
    return basic_auth(*factory.client("acme", scopes=[]))


def active(http, token: str, resource: dict) -> bool:
    response = http.post("/oauth2/introspect", data={"token": token}, headers=resource)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["active"]


def revoke(http, cid: str, headers: dict) -> None:
    response = http.post(f"{API}/{cid}/revoke-tokens", headers=headers)
    assert response.status_code == 204, response.get_json()
    assert response.data == b""


def test_tokens_before_the_cut_off_are_inactive_and_later_ones_work(app, client, factory, resource):
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    before = [factory.token(cid, secret)["access_token"] for _ in range(2)]
    assert all(active(client, t, resource) for t in before)
    revoke(client, cid, factory.admin_headers("acme"))
    assert not any(active(client, t, resource) for t in before)
    # At once, in the same second as the call: a later token is never born cut off.
    after = factory.token(cid, secret)["access_token"]
    assert active(client, after, resource)
    # The client's settings and ETag are untouched; the call is audited.
    with app.app_context():
        row = db.session.get(Client, cid)
        assert row.version == 1 and row.tokens_valid_after is not None
        actions = db.session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.target == cid)
        ).all()
        assert "client.tokens_revoked" in actions
        db.session.remove()


def test_the_cut_off_is_seen_at_once_by_another_instance(client, second, factory, resource):
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    token = factory.token(cid, secret)["access_token"]
    # The other instance has the client's record cached, as under load.
    assert active(second, token, resource)
    revoke(client, cid, factory.admin_headers("acme"))
    assert not active(second, token, resource)


def test_an_admin_token_is_refused_by_the_management_api_after_a_cut_off(client, factory, second):
    cid, secret = factory.admin("acme")
    token = factory.token(cid, secret)["access_token"]
    mine = {"Authorization": f"Bearer {token}"}
    assert client.get(API, headers=mine).status_code == 200
    assert second.get(API, headers=mine).status_code == 200
    revoke(client, cid, factory.admin_headers("acme"))
    for http in (client, second):
        refused = http.get(API, headers=mine)
        assert refused.status_code == 401
        assert refused.mimetype == "application/problem+json"
        assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    fresh = {"Authorization": f"Bearer {factory.token(cid, secret)['access_token']}"}
    assert client.get(API, headers=fresh).status_code == 200


def test_an_admin_may_cut_off_its_own_tokens(client, factory):
    cid, secret = factory.admin("acme")
    token = factory.token(cid, secret)["access_token"]
    revoke(client, cid, {"Authorization": f"Bearer {token}"})
    assert client.get(API, headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_disabling_sets_the_cut_off_so_enabling_brings_no_old_token_back(client, factory, resource):
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    old = factory.token(cid, secret)["access_token"]
    admin = factory.admin_headers("acme")
    url = f"{API}/{cid}"
    assert client.patch(url, json={"disabled": True}, headers=admin).status_code == 200
    assert not active(client, old, resource)
    assert client.patch(url, json={"disabled": False}, headers=admin).status_code == 200
    assert not active(client, old, resource)
    assert active(client, factory.token(cid, secret)["access_token"], resource)


def test_a_deleted_clients_tokens_are_inactive_on_another_instance_at_once(
    client, second, factory, resource
):
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    token = factory.token(cid, secret)["access_token"]
    assert active(second, token, resource)
    response = client.delete(f"{API}/{cid}", headers=factory.admin_headers("acme"))
    assert response.status_code == 204
    assert not active(second, token, resource)


def test_allowed_on_a_locked_client(client, factory, resource):
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE], locked=True)
    token = factory.token(cid, secret)["access_token"]
    revoke(client, cid, factory.admin_headers("acme"))
    assert not active(client, token, resource)


def test_another_accounts_client_is_not_found_and_keeps_its_tokens(client, factory, resource):
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    token = factory.token(cid, secret)["access_token"]
    response = client.post(f"{API}/{cid}/revoke-tokens", headers=factory.admin_headers("other"))
    assert response.status_code == 404
    assert response.get_json()["code"] == "client_not_found"
    assert active(client, token, resource)


def test_reading_scope_alone_is_not_enough(client, factory, resource):
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    token = factory.token(cid, secret)["access_token"]
    reader = factory.admin_headers("acme", scopes=["clients:read"])
    response = client.post(f"{API}/{cid}/revoke-tokens", headers=reader)
    assert response.status_code == 403
    assert response.get_json()["code"] == "insufficient_scope"
    assert active(client, token, resource)


def test_the_other_clients_of_the_account_keep_their_tokens(client, factory, resource):
    cid, _ = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    other, other_secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    token = factory.token(other, other_secret)["access_token"]
    revoke(client, cid, factory.admin_headers("acme"))
    assert active(client, token, resource)
