"""Integration: Bearer authorization of the management API (docs/api.md §2)."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from app.extensions import db
from app.models import Client
from app.runtime import runtime
from tests.conftest import ISSUER, basic_auth

API = "/api/v1/clients"
MGMT_AUDIENCE = f"{ISSUER}/api"


def assert_invalid_token(response) -> None:
    assert response.status_code == 401, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", DPoP algs="ES256 ES384 PS256 RS256 EdDSA"'
    )
    assert response.get_json()["status"] == 401


def signed_token(app, **overrides) -> str:
    """A token signed with the server's real current key, with claims overridden."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "x",
        "client_id": "x",
        "aud": MGMT_AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
        "scope": "clients:read",
    }
    claims.update(overrides)
    with app.app_context():
        key = runtime().keyring.snapshot().current
        return jwt.encode(
            claims, key.private_key, algorithm=key.alg, headers={"kid": key.kid, "typ": "at+jwt"}
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic Zm9vOmJhcg=="}, bearer(" ")])
def test_missing_token_is_401_bearer(client, headers):
    response = client.get(API, headers=headers)
    assert response.status_code == 401
    assert (
        response.headers["WWW-Authenticate"] == 'Bearer, DPoP algs="ES256 ES384 PS256 RS256 EdDSA"'
    )
    assert response.mimetype == "application/problem+json"


def test_garbage_and_tampered_tokens(client, factory):
    good = factory.admin_headers("acme")["Authorization"].split()[1]
    head, payload, sig = good.split(".")
    tampered = ".".join([head, payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB"), sig])
    for token in ("garbage", "a.b.c", tampered, good + "x", "é" * 20):
        assert_invalid_token(client.get(API, headers=bearer(token)))


def test_expired_token(client, app, factory):
    cid, _ = factory.admin("acme")
    token = signed_token(app, sub=cid, client_id=cid, iat=1, nbf=1, exp=int(time.time()) - 1)
    assert_invalid_token(client.get(API, headers=bearer(token)))
    # The same claims unexpired are accepted, so it is the expiry that failed.
    fresh = signed_token(app, sub=cid, client_id=cid)
    assert client.get(API, headers=bearer(fresh)).status_code == 200


def test_wrong_issuer_and_unsigned(client, app, factory):
    cid, _ = factory.admin("acme")
    assert_invalid_token(
        client.get(API, headers=bearer(signed_token(app, sub=cid, iss="https://evil")))
    )
    unsigned = jwt.encode({"sub": cid, "aud": MGMT_AUDIENCE}, None, algorithm="none")
    assert_invalid_token(client.get(API, headers=bearer(unsigned)))


def test_wrong_audience(client, factory):
    cid, secret = factory.client(
        "acme",
        client_type="admin",
        scopes=["clients:read"],
        audiences=["https://api.example.com", MGMT_AUDIENCE],
    )
    other = factory.token(cid, secret, audience="https://api.example.com")["access_token"]
    assert_invalid_token(client.get(API, headers=bearer(other)))
    right = factory.token(cid, secret, audience=MGMT_AUDIENCE)["access_token"]
    assert client.get(API, headers=bearer(right)).status_code == 200


def test_standard_client_token_is_refused(app, client, factory):
    """A standard client listing the management audience (stored before the
    rule) gets no token for it; a token from its admin days is 401."""
    cid, secret = factory.client(
        "acme", client_type="admin", scopes=["clients:read"], audiences=[MGMT_AUDIENCE]
    )
    token = factory.token(cid, secret)["access_token"]
    assert client.get(API, headers=bearer(token)).status_code == 200
    with app.app_context():
        # Straight to the row, as a database from before the rule holds it.
        row = db.session.get(Client, cid)
        row.client_type, row.scopes = "standard", ["read"]
        db.session.commit()
        runtime().clients.invalidate(cid)
    assert_invalid_token(client.get(API, headers=bearer(token)))
    for params in ({}, {"audience": MGMT_AUDIENCE}, {"resource": MGMT_AUDIENCE}):
        response = client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", **params},
            headers=basic_auth(cid, secret),
        )
        assert response.status_code == 400, params
        assert response.get_json()["error"] == "invalid_target"


def test_a_standard_client_cannot_list_the_management_audience(client, factory):
    system = factory.admin_headers("system")
    body = {"name": "std", "scopes": ["read"], "audiences": [MGMT_AUDIENCE]}
    refused = client.post(API, json=body, headers=system)
    assert refused.status_code == 400
    assert refused.get_json()["errors"] == [
        {"field": "audiences", "message": "the management audience is for admin clients"}
    ]
    del body["audiences"]
    created = client.post(API, json=body, headers=system).get_json()
    url = f"{API}/{created['id']}"
    for method in (client.patch, client.put):
        sent = {"name": "std", "audiences": [MGMT_AUDIENCE]}
        response = method(url, json=sent, headers=system)
        assert response.status_code == 400, method
        assert response.get_json()["errors"][0]["field"] == "audiences"
    # An admin may list it; demoting the admin must drop it too.
    admin, _ = factory.admin("acme")
    demote = {"client_type": "standard", "scopes": []}
    response = client.patch(f"{API}/{admin}", json=demote, headers=system)
    assert response.status_code == 400
    assert response.get_json()["errors"][0]["field"] == "audiences"


def test_insufficient_scope_is_403(client, factory):
    headers = factory.admin_headers("acme", scopes=["clients:read"])
    assert client.get(API, headers=headers).status_code == 200
    response = client.post(API, json={"name": "x"}, headers=headers)
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    audit = client.get("/api/v1/audit-events", headers=headers)
    assert audit.status_code == 403


def test_deleted_disabled_and_demoted_admins_stop_at_once(client, factory):
    system = factory.admin_headers("system")
    for change in ("delete", "disable", "demote", "drop_scope"):
        cid, secret = factory.admin("acme")
        headers = bearer(factory.token(cid, secret)["access_token"])
        assert client.get(API, headers=headers).status_code == 200
        url = f"{API}/{cid}"
        if change == "delete":
            assert client.delete(url, headers=system).status_code == 204
        elif change == "disable":
            assert client.patch(url, json={"disabled": True}, headers=system).status_code == 200
        elif change == "demote":
            body = {"client_type": "standard", "scopes": [], "audiences": []}
            assert client.patch(url, json=body, headers=system).status_code == 200
        else:
            body = {"scopes": ["clients:write"]}
            assert client.patch(url, json=body, headers=system).status_code == 200
            response = client.get(API, headers=headers)
            assert response.status_code == 403, change
            continue
        assert_invalid_token(client.get(API, headers=headers))


def test_revoked_token_is_refused(client, factory):
    cid, secret = factory.admin("acme")
    token = factory.token(cid, secret)["access_token"]
    assert client.get(API, headers=bearer(token)).status_code == 200
    revoked = client.post("/oauth2/revoke", data={"token": token}, headers=basic_auth(cid, secret))
    assert revoked.status_code == 200
    assert_invalid_token(client.get(API, headers=bearer(token)))


MANAGEMENT = ["clients:read", "clients:write", "keys:read", "keys:write", "audit:read"]


@pytest.mark.parametrize("scope", MANAGEMENT)
def test_management_scopes_only_for_admin_clients(client, factory, scope):
    headers = factory.admin_headers("system")
    response = client.post(API, json={"name": "std", "scopes": [scope]}, headers=headers)
    assert response.status_code == 400
    assert response.get_json()["errors"][0]["field"] == "scopes"
    created = client.post(API, json={"name": "std", "scopes": ["read"]}, headers=headers)
    url = f"{API}/{created.get_json()['id']}"
    assert client.patch(url, json={"scopes": [scope]}, headers=headers).status_code == 400
    assert (
        client.put(url, json={"name": "std", "scopes": [scope]}, headers=headers).status_code == 400
    )
    # An admin client may hold them (system account: all five).
    body = {"name": "adm", "client_type": "admin", "scopes": [scope]}
    assert client.post(API, json=body, headers=headers).status_code == 201
    # Demoting an admin that holds one is refused too.
    adm = client.get(f"{API}?name_prefix=adm", headers=headers).get_json()["data"][0]
    demote = client.patch(f"{API}/{adm['id']}", json={"client_type": "standard"}, headers=headers)
    assert demote.status_code == 400


@pytest.mark.parametrize("scope", ["keys:read", "keys:write"])
def test_keys_scopes_only_in_the_system_account(client, factory, scope):
    acme = factory.admin_headers("acme")
    body = {"name": "adm", "client_type": "admin", "scopes": [scope]}
    response = client.post(API, json=body, headers=acme)
    assert response.status_code == 400
    assert response.get_json()["errors"][0]["field"] == "scopes"
    system = factory.admin_headers("system")
    body["account_id"] = "acme"
    assert client.post(API, json=body, headers=system).status_code == 400


def test_admins_cannot_grant_management_scopes_they_lack(client, factory):
    cid, secret = factory.admin("acme", scopes=["clients:read", "clients:write"])
    headers = bearer(factory.token(cid, secret)["access_token"])
    body = {"name": "stronger", "client_type": "admin", "scopes": ["audit:read"]}
    refused = client.post(API, json=body, headers=headers)
    assert refused.status_code == 403
    assert refused.get_json()["code"] == "insufficient_privilege"
    # Nor by editing itself into more power.
    own = f"{API}/{cid}"
    grown = {"scopes": ["clients:read", "clients:write", "audit:read"]}
    refused = client.patch(own, json=grown, headers=headers)
    assert refused.status_code == 403
    assert refused.get_json()["code"] == "insufficient_privilege"
    # Scopes it holds it may grant, and an unrelated edit of its own keeps them.
    body["scopes"] = ["clients:read"]
    assert client.post(API, json=body, headers=headers).status_code == 201
    assert client.patch(own, json={"description": "me"}, headers=headers).status_code == 200
    assert client.get("/api/v1/audit-events", headers=headers).status_code == 403
