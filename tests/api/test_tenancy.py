"""Integration: account A's admin cannot read, change, delete or list account B's clients.

The secrets and keys endpoints have their own tenancy tests next to them.
"""

from __future__ import annotations

import uuid

import pytest

from tests.api.test_clients import counts

API = "/api/v1/clients"

# (method, path template, JSON body or None); {id} is the target client.
CLIENT_CALLS = [
    ("GET", "/api/v1/clients/{id}", None),
    ("PATCH", "/api/v1/clients/{id}", {"description": "mine now"}),
    ("PATCH", "/api/v1/clients/{id}", {"locked": False}),
    ("PUT", "/api/v1/clients/{id}", {"name": "stolen"}),
    ("DELETE", "/api/v1/clients/{id}", None),
]


@pytest.fixture
def tenants(factory, client):
    """Admin headers of acme, and a client of globex (locked, to cover that path too)."""
    acme = factory.admin_headers("acme")
    globex = factory.admin_headers("globex")
    created = client.post(API, json={"name": "globex-app", "tags": ["t"]}, headers=globex)
    assert created.status_code == 201
    return acme, globex, created.get_json()


@pytest.mark.parametrize(("method", "path", "body"), CLIENT_CALLS)
def test_other_accounts_client_is_404_like_a_missing_one(client, app, tenants, method, path, body):
    acme, globex, victim = tenants
    before = counts(app)
    kwargs = {"json": body} if body is not None else {}
    theirs = client.open(path.format(id=victim["id"]), method=method, headers=acme, **kwargs)
    missing = client.open(path.format(id=uuid.uuid4()), method=method, headers=acme, **kwargs)
    assert theirs.status_code == 404
    assert theirs.get_json() == missing.get_json()
    assert theirs.mimetype == "application/problem+json"
    assert "ETag" not in theirs.headers
    assert counts(app) == before
    # The owner still sees it unchanged.
    own = client.get(f"{API}/{victim['id']}", headers=globex)
    assert own.status_code == 200
    assert own.get_json() == {
        k: v for k, v in victim.items() if k not in ("client_secret", "secret_id")
    }


@pytest.mark.parametrize(
    "query", ["", "?tag=t", "?name_prefix=globex", "?limit=1000", "?account_id=acme"]
)
def test_listing_shows_only_own_account(client, tenants, query):
    acme, _globex, victim = tenants
    response = client.get(f"{API}{query}", headers=acme)
    assert response.status_code == 200
    accounts = {c["account_id"] for c in response.get_json()["data"]}
    assert accounts <= {"acme"}
    assert victim["id"] not in response.get_data(as_text=True)
    assert client.get(f"{API}?account_id=globex", headers=acme).status_code == 400


def test_create_lands_in_callers_account(client, tenants):
    acme, globex, _victim = tenants
    response = client.post(API, json={"name": "mine", "account_id": "globex"}, headers=acme)
    assert response.status_code == 400
    assert response.get_json()["errors"][0]["field"] == "account_id"
    made = client.post(API, json={"name": "globex-app"}, headers=acme)
    assert made.status_code == 201  # names are unique per account only
    assert made.get_json()["account_id"] == "acme"
    assert client.get(f"{API}/{made.get_json()['id']}", headers=globex).status_code == 404


def test_audit_log_shows_only_own_account(client, tenants):
    acme, _globex, victim = tenants
    events = client.get("/api/v1/audit-events?limit=1000", headers=acme).get_json()["data"]
    assert events
    assert {e["account_id"] for e in events} == {"acme"}
    assert victim["id"] not in {e["target"] for e in events}
    refused = client.get("/api/v1/audit-events?account_id=globex", headers=acme)
    assert refused.status_code == 400


def test_system_admin_sees_and_manages_every_account(client, factory, tenants):
    _acme, _globex, victim = tenants
    system = factory.admin_headers("system")
    url = f"{API}/{victim['id']}"
    assert client.get(url, headers=system).status_code == 200
    assert client.patch(url, json={"description": "ops"}, headers=system).status_code == 200
    made = client.post(API, json={"name": "for-initech", "account_id": "initech"}, headers=system)
    assert made.status_code == 201 and made.get_json()["account_id"] == "initech"
    bad = client.post(API, json={"name": "x", "account_id": "Bad Account"}, headers=system)
    assert bad.status_code == 400
    listed = client.get(f"{API}?account_id=initech", headers=system).get_json()["data"]
    assert [c["name"] for c in listed] == ["for-initech"]
    events = client.get("/api/v1/audit-events?limit=1000", headers=system).get_json()["data"]
    assert {"acme", "globex", "initech", "system"} <= {e["account_id"] for e in events}
    assert client.delete(url, headers=system).status_code == 204
