"""Integration: resource servers (docs/api.md §2.7) through HTTP, their tenancy and the
`shared` rule, client `audiences` tied to them, and their rules at the token endpoint."""

from __future__ import annotations

import uuid

import jwt
import pytest
from sqlalchemy import event

from app.extensions import db
from app.models import AuditEvent, Client, ResourceServer
from tests.conftest import basic_auth

API = "/api/v1/resource-servers"
CLIENTS = "/api/v1/clients"


def _token(client, cid, secret, **params):
    return client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", **params},
        headers=basic_auth(cid, secret),
    )


def _claims(body):
    return jwt.decode(body["access_token"], options={"verify_signature": False})


def _rs_count(app) -> int:
    with app.app_context():
        return db.session.query(ResourceServer).count()


@pytest.fixture
def acme(factory):
    return factory.admin_headers("acme")


@pytest.fixture
def globex(factory):
    return factory.admin_headers("globex")


@pytest.fixture
def system(factory):
    return factory.admin_headers("system")


def _create(client, headers, identifier=None, **fields):
    body = {"identifier": identifier or f"https://{uuid.uuid4().hex[:8]}.example", **fields}
    body.setdefault("name", "Billing API")
    return client.post(API, json=body, headers=headers)


def test_create_get_list_patch_put_delete(client, acme, app):
    made = _create(
        client,
        acme,
        "https://billing.acme.example",
        scopes=[{"value": "invoices:read", "description": "Read invoices"}],
        access_token_ttl=600,
    )
    assert made.status_code == 201, made.get_json()
    rs = made.get_json()
    assert made.headers["Location"].endswith(f"{API}/{rs['id']}")
    assert made.headers["ETag"]
    assert rs["account_id"] == "acme" and rs["shared"] is False
    assert rs["dpop_bound_access_tokens"] is False
    assert rs["tls_client_certificate_bound_access_tokens"] is False
    assert rs["scopes"] == [{"value": "invoices:read", "description": "Read invoices"}]

    shown = client.get(f"{API}/{rs['id']}", headers=acme)
    assert shown.status_code == 200 and shown.get_json() == rs
    etag = shown.headers["ETag"]

    listed = client.get(API, headers=acme).get_json()
    assert [r["id"] for r in listed["data"]] == [rs["id"]] and listed["next_cursor"] is None

    patched = client.patch(
        f"{API}/{rs['id']}",
        json={"description": "Invoices", "dpop_bound_access_tokens": True},
        headers={**acme, "If-Match": etag},
    )
    assert patched.status_code == 200
    assert patched.get_json()["description"] == "Invoices"
    assert patched.get_json()["dpop_bound_access_tokens"] is True
    # A stale If-Match changes nothing.
    stale = client.patch(
        f"{API}/{rs['id']}", json={"name": "x"}, headers={**acme, "If-Match": etag}
    )
    assert stale.status_code == 412
    # PUT resets omitted optional fields to their defaults.
    put = client.put(f"{API}/{rs['id']}", json={"name": "Billing"}, headers=acme)
    assert put.status_code == 200
    body = put.get_json()
    assert body["name"] == "Billing" and body["description"] is None
    assert body["scopes"] == [] and body["access_token_ttl"] is None
    assert body["dpop_bound_access_tokens"] is False
    assert client.delete(f"{API}/{rs['id']}", headers=acme).status_code == 204
    assert client.get(f"{API}/{rs['id']}", headers=acme).status_code == 404
    with app.app_context():
        actions = [
            e.action for e in AuditEvent.query.filter_by(target=rs["id"]).order_by(AuditEvent.id)
        ]
    assert actions == [
        "resource_server.created",
        "resource_server.updated",
        "resource_server.updated",
        "resource_server.deleted",
    ]


def test_identifier_unique_on_the_server_and_immutable(client, acme, globex):
    rs = _create(client, acme, "https://one.example").get_json()
    taken = _create(client, globex, "https://one.example")
    assert taken.status_code == 409 and taken.get_json()["code"] == "identifier_taken"
    changed = client.patch(
        f"{API}/{rs['id']}", json={"identifier": "https://two.example"}, headers=acme
    )
    assert changed.status_code == 400
    assert changed.get_json()["errors"][0]["field"] == "identifier"
    same = client.patch(f"{API}/{rs['id']}", json={"identifier": rs["identifier"]}, headers=acme)
    assert same.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 201},
        {"identifier": "has space"},
        {"identifier": "x" * 1025},
        {"access_token_ttl": 59},
        {"access_token_ttl": 86401},
        {"scopes": [{"value": "a b"}]},
        {"scopes": [{"value": "a"}, {"value": "a"}]},
        {"scopes": [{"value": "a", "extra": 1}]},
        {"id": "mine"},
        {"created_at": "2026-01-01T00:00:00.000Z"},
        {"shared": "yes"},
    ],
)
def test_invalid_bodies_are_400(client, acme, app, body):
    before = _rs_count(app)
    response = _create(client, acme, **body) if "identifier" not in body else None
    if response is None:
        response = client.post(API, json={"name": "n", **body}, headers=acme)
    assert response.status_code == 400, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert _rs_count(app) == before


def test_management_audience_is_not_a_resource_server(client, acme, app):
    response = _create(client, acme, app.config["MANAGEMENT_AUDIENCE"])
    assert response.status_code == 400


def test_paging_and_name_prefix(client, acme):
    ids = [_create(client, acme, name=f"api {i}").get_json()["id"] for i in range(5)]
    _create(client, acme, name="other")
    page = client.get(f"{API}?limit=2&name_prefix=api", headers=acme)
    assert page.status_code == 200 and 'rel="next"' in page.headers["Link"]
    seen = [r["id"] for r in page.get_json()["data"]]
    cursor = page.get_json()["next_cursor"]
    while cursor:
        page = client.get(f"{API}?limit=2&name_prefix=api&cursor={cursor}", headers=acme)
        seen += [r["id"] for r in page.get_json()["data"]]
        cursor = page.get_json()["next_cursor"]
    assert seen == ids
    bad = client.get(f"{API}?cursor=garbage", headers=acme)
    assert bad.status_code == 400 and bad.get_json()["code"] == "invalid_cursor"
    # A client listing's cursor is not a resource server listing's.
    clients_page = client.get(f"{CLIENTS}?limit=1", headers=acme).get_json()
    if clients_page["next_cursor"]:
        foreign = client.get(f"{API}?cursor={clients_page['next_cursor']}", headers=acme)
        assert foreign.status_code == 400


# --- Tenancy: an attacker with an account of its own ----------------------------------------


def test_other_accounts_resource_server_is_404(client, acme, globex, app):
    theirs = _create(client, globex, "https://globex-api.example").get_json()
    missing = str(uuid.uuid4())
    for method, body in (("GET", None), ("PATCH", {"name": "mine"}), ("PUT", {"name": "m"})):
        kwargs = {"json": body} if body else {}
        a = client.open(f"{API}/{theirs['id']}", method=method, headers=acme, **kwargs)
        b = client.open(f"{API}/{missing}", method=method, headers=acme, **kwargs)
        assert a.status_code == 404 and a.get_json() == b.get_json()
    assert client.delete(f"{API}/{theirs['id']}", headers=acme).status_code == 404
    assert client.get(API, headers=acme).get_json()["data"] == []
    listed = client.get(f"{API}?account_id=globex", headers=acme)
    assert listed.status_code == 400
    assert client.get(f"{API}/{theirs['id']}", headers=globex).get_json() == theirs


def test_acme_cannot_register_globex_identifier_or_create_in_globex(client, acme, globex):
    _create(client, globex, "https://globex-api.example")
    again = _create(client, acme, "https://globex-api.example")
    assert again.status_code == 409
    elsewhere = _create(client, acme, account_id="globex")
    assert elsewhere.status_code == 400


def test_acme_cannot_list_globex_api_in_audiences(client, acme, globex):
    _create(client, globex, "https://globex-api.example")
    body = {"name": "thief", "audiences": ["https://globex-api.example"]}
    created = client.post(CLIENTS, json=body, headers=acme)
    assert created.status_code == 400
    assert created.get_json()["errors"][0]["field"] == "audiences"
    own = client.post(CLIENTS, json={"name": "thief"}, headers=acme).get_json()
    patched = client.patch(
        f"{CLIENTS}/{own['id']}", json={"audiences": ["https://globex-api.example"]}, headers=acme
    )
    assert patched.status_code == 400
    put = client.put(
        f"{CLIENTS}/{own['id']}",
        json={"name": "thief", "audiences": ["https://globex-api.example"]},
        headers=acme,
    )
    assert put.status_code == 400
    # Nor an identifier registered nowhere.
    nowhere = client.post(
        CLIENTS, json={"name": "n", "audiences": ["https://nowhere.example"]}, headers=acme
    )
    assert nowhere.status_code == 400


def test_a_token_for_globex_api_cannot_be_minted_by_acme(client, factory, app):
    factory.resource_server("globex", "https://globex-api.example")
    cid, secret = factory.client("acme", name="plain")
    response = _token(client, cid, secret, resource="https://globex-api.example")
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_target"
    # Even with a row written past the service (as a broken write path would),
    # the token endpoint refuses another account's resource server.
    with app.app_context():
        row = db.session.get(Client, cid)
        row.audiences = ["https://globex-api.example"]
        db.session.commit()
        app.extensions["ccserver"].clients.clear()
    response = _token(client, cid, secret, resource="https://globex-api.example")
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_target"
    response = _token(client, cid, secret)  # the first audience is the default target
    assert response.status_code == 400


def test_acme_cannot_create_or_set_shared(client, acme, system):
    refused = _create(client, acme, shared=True)
    assert refused.status_code == 400 and refused.get_json()["errors"][0]["field"] == "shared"
    mine = _create(client, acme).get_json()
    patched = client.patch(f"{API}/{mine['id']}", json={"shared": True}, headers=acme)
    assert patched.status_code == 400
    # A system admin shares only the system account's.
    assert _create(client, system, account_id="acme", shared=True).status_code == 400
    assert _create(client, system, shared=True).status_code == 201


def test_shared_readable_by_every_admin_writable_by_system_only(client, acme, system, factory):
    shared = _create(client, system, "https://shared.example", shared=True).get_json()
    private = _create(client, system, "https://system-only.example").get_json()
    listed = [r["id"] for r in client.get(API, headers=acme).get_json()["data"]]
    assert listed == [shared["id"]]
    assert client.get(f"{API}/{shared['id']}", headers=acme).status_code == 200
    assert client.get(f"{API}/{private['id']}", headers=acme).status_code == 404
    for method, body in (("PATCH", {"name": "mine"}), ("PUT", {"name": "m"}), ("DELETE", None)):
        kwargs = {"json": body} if body else {}
        response = client.open(f"{API}/{shared['id']}", method=method, headers=acme, **kwargs)
        assert response.status_code == 403, method
    assert client.get(f"{API}/{shared['id']}", headers=acme).get_json() == shared
    # Acme may use it in audiences and get tokens for it; not the private one.
    ok = client.post(
        CLIENTS, json={"name": "user", "audiences": ["https://shared.example"]}, headers=acme
    )
    assert ok.status_code == 201
    cid, secret = ok.get_json()["id"], ok.get_json()["client_secret"]
    assert _claims(_token(client, cid, secret).get_json())["aud"] == "https://shared.example"
    refused = client.post(
        CLIENTS, json={"name": "u2", "audiences": ["https://system-only.example"]}, headers=acme
    )
    assert refused.status_code == 400
    # Unsharing while another account uses it, or deleting it, is refused.
    unshare = client.patch(f"{API}/{shared['id']}", json={"shared": False}, headers=system)
    assert unshare.status_code == 409 and unshare.get_json()["code"] == "resource_server_in_use"


def test_delete_in_use_is_409(client, acme, factory):
    rs = _create(client, acme, "https://in-use.example").get_json()
    made = client.post(
        CLIENTS, json={"name": "user", "audiences": ["https://in-use.example"]}, headers=acme
    ).get_json()
    refused = client.delete(f"{API}/{rs['id']}", headers=acme)
    assert refused.status_code == 409 and refused.get_json()["code"] == "resource_server_in_use"
    assert client.get(f"{API}/{rs['id']}", headers=acme).status_code == 200
    client.patch(f"{CLIENTS}/{made['id']}", json={"audiences": []}, headers=acme)
    assert client.delete(f"{API}/{rs['id']}", headers=acme).status_code == 204


def test_scopes_are_needed(client, factory):
    reader = factory.admin_headers("acme", scopes=["clients:read"])
    assert _create(client, reader).status_code == 403
    assert client.get(API, headers=reader).status_code == 200


# --- The token endpoint ----------------------------------------------------------------------


def test_scopes_restricted_and_lifetime_capped(client, factory, app):
    factory.resource_server(
        "acme",
        "https://billing.example",
        scopes=[{"value": "invoices:read"}, {"value": "invoices:write"}],
        access_token_ttl=300,
    )
    cid, secret = factory.client(
        "acme",
        scopes=["invoices:read", "other"],
        audiences=["https://billing.example"],
        access_token_ttl=3600,
    )
    # Omitted scope: the client's scopes the resource server defines.
    body = _token(client, cid, secret).get_json()
    assert body["scope"] == "invoices:read" and body["expires_in"] == 300
    claims = _claims(body)
    assert claims["exp"] - claims["iat"] == 300 and claims["scope"] == "invoices:read"
    refused = _token(client, cid, secret, scope="invoices:read other")
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_scope"
    assert _token(client, cid, secret, scope="invoices:read").status_code == 200


def test_resource_server_without_scopes_or_ttl_changes_nothing(client, factory):
    factory.resource_server("acme", "https://any.example")
    cid, secret = factory.client(
        "acme", scopes=["a", "b"], audiences=["https://any.example"], access_token_ttl=900
    )
    body = _token(client, cid, secret).get_json()
    assert body["scope"] == "a b" and body["expires_in"] == 900


def test_a_longer_resource_server_ttl_does_not_extend_the_client_ttl(client, factory):
    factory.resource_server("acme", "https://long.example", access_token_ttl=7200)
    cid, secret = factory.client("acme", audiences=["https://long.example"], access_token_ttl=600)
    assert _token(client, cid, secret).get_json()["expires_in"] == 600


def test_a_change_takes_effect_at_once_in_this_process(client, factory, acme):
    rs_id = factory.resource_server("acme", "https://live.example")
    cid, secret = factory.client("acme", scopes=["x"], audiences=["https://live.example"])
    assert _token(client, cid, secret).get_json()["scope"] == "x"  # cached now
    patched = client.patch(f"{API}/{rs_id}", json={"scopes": [{"value": "y"}]}, headers=acme)
    assert patched.status_code == 200
    refused = _token(client, cid, secret, scope="x")
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_scope"


def test_a_warm_cache_reads_no_database(client, factory, app):
    factory.resource_server("acme", "https://warm.example", scopes=[{"value": "x"}])
    cid, secret = factory.client("acme", scopes=["x"], audiences=["https://warm.example"])
    assert _token(client, cid, secret).status_code == 200
    store = app.extensions["ccserver"].resource_servers
    with app.app_context():
        statements = []

        def count(*args):
            statements.append(args[2])

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            record = store.get("https://warm.example")
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
    assert record is not None and record.scopes == frozenset({"x"})
    assert statements == []
    # Nor does a token request: no statement touches resource_servers.
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            assert _token(client, cid, secret).status_code == 200
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
    assert not [s for s in statements if "resource_servers" in s]
