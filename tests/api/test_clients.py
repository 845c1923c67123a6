"""Integration: the clients resource (docs/api.md §2.1) through HTTP, real DB and crypto."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditEvent, Client, ClientSecret
from tests.conftest import basic_auth

API = "/api/v1/clients"


def counts(app) -> tuple[int, int, int, int]:
    """(clients, secrets, audit events, sum of versions): any change moves one of them."""
    with app.app_context():
        return (
            db.session.scalar(sa.select(sa.func.count()).select_from(Client)),
            db.session.scalar(sa.select(sa.func.count()).select_from(ClientSecret)),
            db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)),
            db.session.scalar(sa.select(sa.func.coalesce(sa.func.sum(Client.version), 0))),
        )


@pytest.fixture
def admin(factory):
    """Headers of an admin of account acme."""
    return factory.admin_headers("acme")


def create(client, headers, **body):
    body.setdefault("name", "reader")
    return client.post(API, json=body, headers=headers)


def test_create_returns_client_secret_and_location(client, admin, app, factory):
    factory.resource_server("acme", "https://api.example.com")
    response = create(
        client,
        admin,
        name="atm_data_reader",
        friendly_name="ATM Monitor Reader",
        description="reads ATM data",
        tags=["test"],
        owner="ops@example.com",
        scopes=["read", "write"],
        audiences=["https://api.example.com"],
        access_token_ttl=600,
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert response.headers["Location"] == f"{API}/{body['id']}"
    assert response.headers["ETag"]
    assert body["client_secret"].startswith("ccs_")
    assert body["secret_id"]
    assert body["account_id"] == "acme"
    assert body["client_type"] == "standard"
    assert body["locked"] is False and body["disabled"] is False
    assert body["created_at"].endswith("Z") and body["updated_at"].endswith("Z")
    assert set(body) == {
        "id", "account_id", "name", "friendly_name", "description", "tags", "client_type",
        "owner", "scopes", "audiences", "access_token_ttl", "locked", "disabled",
        "allowed_auth_methods", "dpop_bound_access_tokens",
        "tls_client_certificate_bound_access_tokens", "tls_client_auth_subject_dn",
        "tls_client_auth_san_dns", "tls_client_auth_san_uri", "tls_client_auth_san_ip",
        "tls_client_auth_san_email", "security_profile",
        "created_at", "updated_at", "client_secret", "secret_id",
    }  # fmt: skip
    # The secret works at the token endpoint, and is never shown again.
    token = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(body["id"], body["client_secret"]),
    )
    assert token.status_code == 200
    assert token.get_json()["expires_in"] == 600
    shown = client.get(response.headers["Location"], headers=admin)
    assert shown.status_code == 200
    assert body["client_secret"] not in shown.get_data(as_text=True)
    assert "client_secret" not in shown.get_json()
    with app.app_context():
        event = db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.target == body["id"])
        ).one()
        assert event.action == "client.created"


def test_create_defaults(client, admin):
    body = create(client, admin, name="min").get_json()
    assert body["friendly_name"] == "min"
    assert body["description"] is None and body["owner"] is None
    assert body["tags"] == [] and body["scopes"] == [] and body["audiences"] == []
    assert body["access_token_ttl"] == 3600


def test_name_taken_is_409_per_account(client, admin, factory):
    assert create(client, admin, name="dup").status_code == 201
    response = create(client, admin, name="dup")
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "name_taken"
    other = factory.admin_headers("globex")
    assert create(client, other, name="dup").status_code == 201


def test_get_patch_put_delete(client, admin, app):
    created = create(client, admin, name="one", tags=["a"], owner="x@example.com").get_json()
    url = f"{API}/{created['id']}"
    got = client.get(url, headers=admin)
    assert got.status_code == 200
    etag = got.headers["ETag"]

    patched = client.patch(url, json={"description": "new", "tags": ["b"]}, headers=admin)
    assert patched.status_code == 200
    body = patched.get_json()
    assert body["description"] == "new" and body["tags"] == ["b"]
    assert body["owner"] == "x@example.com"  # untouched by PATCH
    assert patched.headers["ETag"] != etag

    put = client.put(url, json={"name": "one-renamed", "scopes": ["read"]}, headers=admin)
    assert put.status_code == 200
    body = put.get_json()
    assert body["name"] == "one-renamed"
    assert body["friendly_name"] == "one-renamed"  # reset to the default
    assert body["description"] is None and body["owner"] is None and body["tags"] == []
    assert body["scopes"] == ["read"]
    assert body["created_at"] == created["created_at"]

    deleted = client.delete(url, headers=admin)
    assert deleted.status_code == 204
    assert client.get(url, headers=admin).status_code == 404
    with app.app_context():
        assert db.session.scalar(
            sa.select(sa.func.count()).select_from(ClientSecret)
            .where(ClientSecret.client_id == created["id"])
        ) == 0  # fmt: skip
        actions = db.session.scalars(
            sa.select(AuditEvent.action)
            .where(AuditEvent.target == created["id"])
            .order_by(AuditEvent.id)
        ).all()
        assert actions == ["client.created", "client.updated", "client.updated", "client.deleted"]


def test_patch_without_change_keeps_etag(client, admin):
    created = create(client, admin, name="same").get_json()
    url = f"{API}/{created['id']}"
    etag = client.get(url, headers=admin).headers["ETag"]
    again = client.patch(url, json={"name": "same"}, headers=admin)
    assert again.status_code == 200 and again.headers["ETag"] == etag


def test_delete_stops_secret_and_token_at_once(client, admin, factory):
    factory.resource_server("acme", "https://api.example.com")
    created = create(client, admin, name="gone", audiences=["https://api.example.com"])
    body = created.get_json()
    token = factory.token(body["id"], body["client_secret"])["access_token"]
    assert client.delete(f"{API}/{body['id']}", headers=admin).status_code == 204
    again = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(body["id"], body["client_secret"]),
    )
    assert again.status_code == 401
    introspected = client.post(
        "/oauth2/introspect", data={"token": token}, headers=basic_auth(*factory.client())
    )
    assert introspected.status_code == 200
    assert introspected.get_json() == {"active": False}


def test_rename_collision_is_409_and_changes_nothing(client, admin, app):
    create(client, admin, name="taken")
    other = create(client, admin, name="free").get_json()
    before = counts(app)
    for method in (client.patch, client.put):
        response = method(f"{API}/{other['id']}", json={"name": "taken"}, headers=admin)
        assert response.status_code == 409
        assert response.get_json()["code"] == "name_taken"
    assert counts(app) == before
    assert client.get(f"{API}/{other['id']}", headers=admin).get_json()["name"] == "free"


def test_if_match(client, admin, app):
    created = create(client, admin, name="etag").get_json()
    url = f"{API}/{created['id']}"
    etag = client.get(url, headers=admin).headers["ETag"]
    stale = client.patch(url, json={"description": "v2"}, headers=admin).headers["ETag"]
    assert stale != etag
    before = counts(app)
    for method, kwargs in (
        (client.patch, {"json": {"description": "v3"}}),
        (client.put, {"json": {"name": "etag"}}),
        (client.delete, {}),
    ):
        response = method(url, headers={**admin, "If-Match": etag}, **kwargs)
        assert response.status_code == 412
        assert response.mimetype == "application/problem+json"
    assert counts(app) == before
    assert client.get(url, headers=admin).get_json()["description"] == "v2"
    ok = client.patch(url, json={"description": "v3"}, headers={**admin, "If-Match": stale})
    assert ok.status_code == 200
    star = client.patch(url, json={"description": "v4"}, headers={**admin, "If-Match": "*"})
    assert star.status_code == 200
    current = star.headers["ETag"]
    assert client.delete(url, headers={**admin, "If-Match": current}).status_code == 204


def test_locked_client(client, admin, app):
    created = create(client, admin, name="locked", locked=True).get_json()
    url = f"{API}/{created['id']}"
    before = counts(app)
    refused = [
        client.patch(url, json={"description": "x"}, headers=admin),
        client.patch(url, json={"locked": False, "description": "x"}, headers=admin),
        client.patch(url, json={"locked": True}, headers=admin),
        client.patch(url, json={"disabled": True}, headers=admin),
        client.put(url, json={"name": "locked", "locked": False}, headers=admin),
        client.put(url, json={"name": "locked", "locked": True}, headers=admin),
        client.delete(url, headers=admin),
    ]
    for response in refused:
        assert response.status_code == 409, response.get_json()
        assert response.get_json()["code"] == "client_locked"
    assert counts(app) == before
    unlocked = client.patch(url, json={"locked": False}, headers=admin)
    assert unlocked.status_code == 200 and unlocked.get_json()["locked"] is False
    assert client.patch(url, json={"description": "x"}, headers=admin).status_code == 200
    assert client.patch(url, json={"locked": True}, headers=admin).status_code == 200
    assert client.delete(url, headers=admin).status_code == 409


def test_disabled_client_cannot_get_tokens(client, admin):
    body = create(client, admin, name="dis").get_json()
    patched = client.patch(f"{API}/{body['id']}", json={"disabled": True}, headers=admin)
    assert patched.status_code == 200
    response = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(body["id"], body["client_secret"]),
    )
    assert response.status_code == 401


def test_unknown_ids_of_every_shape_are_404(client, admin):
    for client_id in ("nope", "0" * 64, "x" * 500, "%00", "ü", "a b", "1;drop"):
        for method in (client.get, client.patch, client.put, client.delete):
            kwargs = {} if method in (client.get, client.delete) else {"json": {"name": "n"}}
            response = method(f"{API}/{client_id}", headers=admin, **kwargs)
            assert response.status_code == 404, (client_id, response.status_code)
            assert response.mimetype == "application/problem+json"


def test_concurrent_creates_with_one_name(app, factory, database_url):
    """Two threads, each its own test client: the unique constraint lets exactly one win."""
    if not database_url.startswith("postgresql"):
        pytest.skip("real write concurrency needs PostgreSQL")
    headers = factory.admin_headers("acme")
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def worker():
        http = app.test_client()
        barrier.wait()
        statuses.append(http.post(API, json={"name": "race"}, headers=headers).status_code)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 409, 409, 409]
    with app.app_context():
        assert db.session.scalar(
            sa.select(sa.func.count()).select_from(Client).where(Client.name == "race")
        ) == 1  # fmt: skip


BAD_FIELDS = [
    ("name", None),
    ("name", ""),
    ("name", "Upper"),
    ("name", "-lead"),
    ("name", "a" * 64),
    ("name", "naïve"),
    ("name", "trailing\n"),
    ("name", 12),
    ("friendly_name", ""),
    ("friendly_name", "x" * 201),
    ("friendly_name", 5),
    ("description", "x" * 2001),
    ("description", ["a"]),
    ("tags", "test"),
    ("tags", [""]),
    ("tags", ["x" * 65]),
    ("tags", [f"t{i}" for i in range(21)]),
    ("tags", [1]),
    ("tags", ["a", "a"]),
    ("tags", None),
    ("client_type", "root"),
    ("client_type", None),
    ("owner", "x" * 255),
    ("owner", 3),
    ("scopes", "read write"),
    ("scopes", ["read write"]),
    ("scopes", ['quo"te']),
    ("scopes", ["back\\slash"]),
    ("scopes", [""]),
    ("scopes", ["é"]),
    ("scopes", [f"s{i}" for i in range(101)]),
    ("audiences", [""]),
    ("audiences", "https://a"),
    ("audiences", [None]),
    ("access_token_ttl", 59),
    ("access_token_ttl", 86401),
    ("access_token_ttl", "3600"),
    ("access_token_ttl", 3600.5),
    ("access_token_ttl", True),
    ("access_token_ttl", None),
    ("locked", "false"),
    ("locked", 0),
    ("disabled", 1),
    ("disabled", None),
]


def test_bad_fields_are_400_and_change_nothing(client, admin, app):
    """One test over the whole table: a fresh database per case would cost seconds."""
    existing = create(client, admin, name="existing").get_json()
    url = f"{API}/{existing['id']}"
    before = counts(app)
    for field, value in BAD_FIELDS:
        body = {"name": "fresh", field: value}
        responses = [
            client.post(API, json=body, headers=admin),
            client.put(url, json=body, headers=admin),
            client.patch(url, json={field: value}, headers=admin),
        ]
        for response in responses:
            assert response.status_code == 400, (field, value, response.get_json())
            problem = response.get_json()
            assert response.mimetype == "application/problem+json"
            assert problem["status"] == 400
            assert problem["errors"][0]["field"].startswith(field), (field, value)
            assert problem["errors"][0]["message"]
    assert counts(app) == before


def test_read_only_and_unknown_fields_are_400(client, admin, app):
    existing = create(client, admin, name="existing").get_json()
    url = f"{API}/{existing['id']}"
    before = counts(app)
    for field in ("id", "account_id", "created_at", "updated_at", "version", "client_secret",
                  "secret_id", "Name", "extra"):  # fmt: skip
        value = existing.get(field, "x")
        for response in (
            client.post(API, json={"name": "fresh", field: value}, headers=admin),
            client.put(url, json={"name": "fresh", field: value}, headers=admin),
            client.patch(url, json={field: value}, headers=admin),
        ):
            assert response.status_code == 400, field
            assert response.get_json()["errors"][0]["field"] == field
    assert counts(app) == before


def test_bodies_that_are_not_json_objects(client, admin, app):
    existing = create(client, admin, name="existing").get_json()
    url = f"{API}/{existing['id']}"
    before = counts(app)
    cases = [
        ("application/json", b"{not json", 400),
        ("application/json", b"[]", 400),
        ("application/json", b'"name"', 400),
        ("application/json", b"null", 400),
        ("application/json", b"", 400),
        ("application/json", b'{"name": NaN}', 400),
        ("application/json", b"\xff\xfe", 400),
        ("application/json", b"[" * 5000 + b"]" * 5000, 400),
        ("text/plain", b'{"name": "x"}', 415),
        ("application/x-www-form-urlencoded", b"name=x", 415),
        (None, b'{"name": "x"}', 415),
    ]
    for content_type, data, status in cases:
        headers = dict(admin)
        if content_type:
            headers["Content-Type"] = content_type
        for method, target in ((client.post, API), (client.put, url), (client.patch, url)):
            response = method(target, data=data, headers=headers)
            assert response.status_code == status, (content_type, data[:20], response.get_json())
            assert response.mimetype == "application/problem+json"
    assert counts(app) == before


def test_huge_body_is_413_problem(client, admin, app):
    before = counts(app)
    response = client.post(API, json={"name": "big", "description": "x" * 70_000}, headers=admin)
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert counts(app) == before


def test_utf8_text_fields_round_trip(client, admin):
    body = create(
        client, admin, name="intl", friendly_name="Zürich Lesegerät ✓", tags=["日本"], owner="ü@x"
    ).get_json()
    shown = client.get(f"{API}/{body['id']}", headers=admin).get_json()
    assert shown["friendly_name"] == "Zürich Lesegerät ✓" and shown["tags"] == ["日本"]


def test_boundary_values_are_accepted(client, admin):
    body = create(
        client,
        admin,
        name="a" * 63,
        friendly_name="f" * 200,
        description="d" * 2000,
        tags=["t" * 64] + [f"t{i}" for i in range(19)],
        owner="o" * 254,
        scopes=["!#[]~", "read"],
        access_token_ttl=60,
    )
    assert body.status_code == 201, body.get_json()
    patched = client.patch(
        f"{API}/{body.get_json()['id']}", json={"access_token_ttl": 86400}, headers=admin
    )
    assert patched.status_code == 200
