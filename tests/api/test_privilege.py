"""The privilege rule (docs/api.md §2): no admin changes an admin holding a
management scope it lacks, nor makes one; 403 insufficient_privilege and
nothing changes. Through HTTP, real database and crypto."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.clients.service import MANAGEMENT_SCOPES
from app.extensions import db
from app.models import AuditEvent, Client, ClientKey, ClientSecret
from tests.conftest import basic_auth

API = "/api/v1/clients"
WEAK = ["clients:read", "clients:write"]


def snapshot(app) -> dict[str, list[tuple]]:
    """Every row a management call could change: any change shows."""
    with app.app_context():
        tables = (Client, ClientSecret, ClientKey, AuditEvent)
        state = {
            t.__tablename__: sorted(map(tuple, db.session.execute(sa.select(t.__table__)).all()))
            for t in tables
        }
        db.session.remove()
        return state


def assert_refused(response) -> None:
    assert response.status_code == 403, response.get_json()
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == "insufficient_privilege"
    assert body["status"] == 403


@pytest.fixture
def strong(client, factory):
    """An admin of the system account holding every management scope (the
    bootstrap admin's shape), with a second secret and a key; returns
    (client id, secret id, kid)."""
    cid, _ = factory.admin("system")
    full = factory.admin_headers("system")
    secret_id = client.post(f"{API}/{cid}/secrets", json={}, headers=full).get_json()["id"]
    kid = client.post(f"{API}/{cid}/keys", json={}, headers=full).get_json()["kid"]
    return cid, secret_id, kid


@pytest.fixture
def weak(factory):
    """Headers of a system admin holding only clients:read clients:write."""
    return factory.admin_headers("system", scopes=WEAK)


def operations(cid: str, secret_id: str, kid: str) -> dict[str, tuple[str, str, dict | None]]:
    return {
        "patch": ("PATCH", f"{API}/{cid}", {"description": "mine now"}),
        "put": ("PUT", f"{API}/{cid}", {"name": "taken-over"}),
        "lock": ("PATCH", f"{API}/{cid}", {"locked": True}),
        "unlock": ("PATCH", f"{API}/{cid}", {"locked": False}),
        "disable": ("PATCH", f"{API}/{cid}", {"disabled": True}),
        "demote": ("PATCH", f"{API}/{cid}", {"scopes": WEAK}),
        "delete": ("DELETE", f"{API}/{cid}", None),
        "add_secret": ("POST", f"{API}/{cid}/secrets", {}),
        "rotate_secret": ("POST", f"{API}/{cid}/secrets/rotate", {}),
        "delete_secret": ("DELETE", f"{API}/{cid}/secrets/{secret_id}", None),
        "add_key": ("POST", f"{API}/{cid}/keys", {}),
        "delete_key": ("DELETE", f"{API}/{cid}/keys/{kid}", None),
        "revoke_tokens": ("POST", f"{API}/{cid}/revoke-tokens", None),
    }


OPERATIONS = list(operations("c", "s", "k"))


@pytest.mark.parametrize("operation", OPERATIONS)
def test_each_change_to_a_stronger_admin_is_refused(app, client, strong, weak, operation):
    method, url, body = operations(*strong)[operation]
    before = snapshot(app)
    response = client.open(url, method=method, json=body, headers=weak)
    assert_refused(response)
    assert snapshot(app) == before


@pytest.mark.parametrize("operation", ["unlock", "add_secret", "delete_key"])
def test_a_lock_changes_nothing_about_the_refusal(app, client, factory, strong, weak, operation):
    """Locked or not, the weaker admin gets 403 first: it cannot unlock to go on."""
    full = factory.admin_headers("system")
    assert (
        client.patch(f"{API}/{strong[0]}", json={"locked": True}, headers=full).status_code == 200
    )
    method, url, body = operations(*strong)[operation]
    before = snapshot(app)
    assert_refused(client.open(url, method=method, json=body, headers=weak))
    assert snapshot(app) == before


def test_the_takeover_of_the_bootstrap_admin_fails_at_the_first_step(app, client, strong, weak):
    """The attack: add a secret to the bootstrap admin, take its token, rotate
    the signing keys. The first step is refused; nothing to go on with."""
    cid = strong[0]
    before = snapshot(app)
    response = client.post(f"{API}/{cid}/secrets", json={"description": "x"}, headers=weak)
    assert_refused(response)
    assert "secret" not in response.get_json()
    assert_refused(client.patch(f"{API}/{cid}", json={"locked": False}, headers=weak))
    assert_refused(client.post(f"{API}/{cid}/secrets/rotate", json={}, headers=weak))
    assert client.post("/api/v1/signing-keys/rotate", headers=weak).status_code == 403
    assert snapshot(app) == before


def test_an_account_admin_cannot_change_its_accounts_stronger_admin(app, client, factory):
    auditor, _ = factory.admin("acme")  # clients:read clients:write audit:read
    weak = factory.admin_headers("acme", scopes=WEAK)
    before = snapshot(app)
    for name, (method, url, body) in operations(auditor, "s", "k").items():
        assert_refused(client.open(url, method=method, json=body, headers=weak)), name
    assert snapshot(app) == before


def test_creating_or_editing_into_a_stronger_admin_is_refused(app, client, factory, weak):
    before = snapshot(app)
    body = {"name": "stronger", "client_type": "admin", "scopes": [*WEAK, "keys:write"]}
    assert_refused(client.post(API, json=body, headers=weak))
    assert snapshot(app) == before
    # A standard client the weak admin may manage cannot be made a stronger admin.
    created = client.post(API, json={"name": "plain"}, headers=weak)
    assert created.status_code == 201
    url = f"{API}/{created.get_json()['id']}"
    before = snapshot(app)
    promote = {"client_type": "admin", "scopes": ["audit:read"]}
    assert_refused(client.patch(url, json=promote, headers=weak))
    assert_refused(client.put(url, json={"name": "plain", **promote}, headers=weak))
    assert snapshot(app) == before


def test_a_token_narrower_than_its_client_is_the_callers_measure(client, factory):
    """The caller holds what its token grants: a token asked with fewer scopes
    cannot change an admin holding the others, itself included."""
    cid, secret = factory.admin("acme", scopes=WEAK)
    narrow = factory.token(cid, secret, scope="clients:write")["access_token"]
    response = client.patch(
        f"{API}/{cid}", json={"description": "x"}, headers={"Authorization": f"Bearer {narrow}"}
    )
    assert_refused(response)


def test_equal_or_weaker_admins_and_standard_clients_may_be_changed(client, factory, weak):
    peer, _ = factory.admin("system", scopes=WEAK)
    reader, _ = factory.admin("system", scopes=["clients:read"])
    plain, _ = factory.client("acme")
    for cid in (peer, reader, plain):
        assert client.post(f"{API}/{cid}/secrets", json={}, headers=weak).status_code == 201
        assert client.post(f"{API}/{cid}/keys", json={}, headers=weak).status_code == 201
        body = {"locked": True}
        assert client.patch(f"{API}/{cid}", json=body, headers=weak).status_code == 200
        body = {"locked": False}
        assert client.patch(f"{API}/{cid}", json=body, headers=weak).status_code == 200
        assert client.delete(f"{API}/{cid}", headers=weak).status_code == 204
    body = {"name": "peer2", "client_type": "admin", "scopes": WEAK}
    assert client.post(API, json=body, headers=weak).status_code == 201


def test_a_full_admin_may_change_the_bootstrap_admin(client, factory, strong):
    cid, secret_id, kid = strong
    full = factory.admin_headers("system")
    response = client.post(f"{API}/{cid}/secrets", json={}, headers=full)
    assert response.status_code == 201
    token = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(cid, response.get_json()["secret"]),
    ).get_json()
    assert set(token["scope"].split()) == set(MANAGEMENT_SCOPES)
