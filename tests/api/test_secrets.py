"""Integration: client secrets (docs/api.md §2.2) through HTTP, real database and crypto."""

from __future__ import annotations

import json
import threading
import typing
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from app.clients.hashing import hash_secret
from app.extensions import db
from app.models import AuditEvent, ClientSecret
from tests.conftest import TEST_PEPPER, basic_auth

API = "/api/v1/clients"
SECRET_FIELDS = {"id", "description", "hint", "created_at", "expires_at", "last_used_at"}


@pytest.fixture
def app_config(base_config, migrated, request) -> dict:
    """Per-test overrides through indirect parametrization."""
    return {**base_config, **getattr(request, "param", {})}


@pytest.fixture
def admin(factory):
    """Headers of an admin of account acme."""
    return factory.admin_headers("acme")


def parse_time(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)


def token_status(http, client_id: str, secret: str) -> int:
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(client_id, secret),
    )
    return response.status_code


def secret_rows(app, client_id: str) -> list[tuple]:
    """Every column of the client's secret rows: any change shows."""
    with app.app_context():
        rows = db.session.execute(
            sa.select(ClientSecret.__table__).where(ClientSecret.client_id == client_id)
        ).all()
        return sorted(tuple(r) for r in rows)


def audit_count(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))


def add(http, headers, client_id, **body):
    return http.post(f"{API}/{client_id}/secrets", json=body, headers=headers)


def test_add_shows_secret_once_and_list_masks_it(client, factory, admin):
    cid, first = factory.client("acme", scopes=["read"])
    response = add(client, admin, cid, description="ci deploy", expires_in=86400)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert set(body) == SECRET_FIELDS | {"secret"}
    secret = body["secret"]
    assert secret.startswith("ccs_") and len(secret) >= 4 + 43
    assert body["hint"] == secret[-4:]
    assert body["description"] == "ci deploy"
    assert body["last_used_at"] is None
    created = parse_time(body["created_at"])
    assert abs(parse_time(body["expires_at"]) - created - timedelta(seconds=86400)) < timedelta(
        seconds=2
    )
    assert response.headers["Location"] == f"{API}/{cid}/secrets/{body['id']}"
    assert client.get(response.headers["Location"], headers=admin).get_json() == {
        k: body[k] for k in SECRET_FIELDS
    }
    # Both the first secret and the new one authenticate.
    assert token_status(client, cid, secret) == 200
    assert token_status(client, cid, first) == 200

    listing = client.get(f"{API}/{cid}/secrets", headers=admin)
    assert listing.status_code == 200
    data = listing.get_json()["data"]
    assert [set(item) for item in data] == [SECRET_FIELDS, SECRET_FIELDS]
    assert data[1]["id"] == body["id"] and data[0]["hint"] == first[-4:]
    text = listing.get_data(as_text=True)
    for value in (first, secret):
        assert value not in text
        assert hash_secret(value, TEST_PEPPER.encode()) not in text


def test_add_with_empty_body_or_empty_object(client, factory, admin):
    cid, _ = factory.client("acme")
    empty = client.post(f"{API}/{cid}/secrets", headers=admin)
    assert empty.status_code == 201, empty.get_json()
    assert empty.get_json()["description"] is None
    assert empty.get_json()["expires_at"] is None
    assert add(client, admin, cid).status_code == 201
    nulls = add(client, admin, cid, description=None, expires_in=None)
    assert nulls.status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"description": 1},
        {"description": "x" * 201},
        {"description": ["a"]},
        {"expires_in": 59},
        {"expires_in": 0},
        {"expires_in": -60},
        {"expires_in": 31536001},
        {"expires_in": 10**30},
        {"expires_in": True},
        {"expires_in": 60.5},
        {"expires_in": "3600"},
        {"secret": "ccs_chosen_by_the_caller_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
        {"id": "mine"},
        {"hint": "abcd"},
        {"created_at": "2026-01-01T00:00:00Z"},
        {"last_used_at": None},
        {"secret_hash": "00"},
        {"unknown": 1},
        [],
        ["description"],
        "ci deploy",
        7,
        None,
    ],
)
def test_add_rejects_bad_bodies(client, factory, admin, app, body):
    cid, _ = factory.client("acme")
    before = (secret_rows(app, cid), audit_count(app))
    response = client.post(
        f"{API}/{cid}/secrets",
        data=json.dumps(body),
        headers={**admin, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.get_json()
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == 400 and problem["code"]
    if isinstance(body, dict):
        assert problem["errors"] and problem["errors"][0]["field"] == next(iter(body))
    assert (secret_rows(app, cid), audit_count(app)) == before


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b'{"description": "x"', "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b'{"description": "x"}', "text/plain", 415),
        (b"description=x", "application/x-www-form-urlencoded", 415),
        (b'{"description": "x"}', None, 415),
        (b'{"description": "' + b"x" * 70_000 + b'"}', "application/json", 413),
    ],
)
def test_add_rejects_bad_payloads(client, factory, admin, app, data, content_type, status):
    cid, _ = factory.client("acme")
    before = secret_rows(app, cid)
    headers = dict(admin)
    if content_type:
        headers["Content-Type"] = content_type
    for path in ("secrets", "secrets/rotate"):
        response = client.post(f"{API}/{cid}/{path}", data=data, headers=headers)
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["status"] == status
    assert secret_rows(app, cid) == before


def test_sixth_active_secret_is_conflict(client, factory, admin, app):
    cid, _ = factory.client("acme")
    ids = [add(client, admin, cid).get_json()["id"] for _ in range(4)]
    before = (secret_rows(app, cid), audit_count(app))
    response = add(client, admin, cid)
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "too_many_secrets"
    assert (secret_rows(app, cid), audit_count(app)) == before
    # Deleting one frees a slot; expired secrets do not count either.
    assert client.delete(f"{API}/{cid}/secrets/{ids[0]}", headers=admin).status_code == 204
    assert add(client, admin, cid).status_code == 201
    assert add(client, admin, cid).status_code == 409
    rotated = client.post(f"{API}/{cid}/secrets/rotate", json={}, headers=admin)
    assert rotated.status_code == 201
    assert add(client, admin, cid).status_code == 201
    assert len(client.get(f"{API}/{cid}/secrets", headers=admin).get_json()["data"]) == 7


def test_rotate_without_grace_stops_old_secrets_at_once(client, factory, admin, app):
    cid, first = factory.client("acme")
    second = add(client, admin, cid).get_json()["secret"]
    assert token_status(client, cid, first) == 200  # cached record now holds both
    response = client.post(f"{API}/{cid}/secrets/rotate", json={"grace_period": 0}, headers=admin)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert set(body) == SECRET_FIELDS | {"secret", "old_secrets_expire_at"}
    assert body["expires_at"] is None
    # Without grace the old secrets end when the new one is made.
    assert body["old_secrets_expire_at"] == body["created_at"]
    assert response.headers["Location"] == f"{API}/{cid}/secrets/{body['id']}"
    assert token_status(client, cid, first) == 401
    assert token_status(client, cid, second) == 401
    assert token_status(client, cid, body["secret"]) == 200
    now = datetime.now(UTC)
    listing = client.get(f"{API}/{cid}/secrets", headers=admin).get_json()["data"]
    old = [s for s in listing if s["id"] != body["id"]]
    assert len(old) == 2 and all(parse_time(s["expires_at"]) <= now for s in old)
    with app.app_context():
        event = db.session.scalars(
            sa.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)
        ).one()
        assert (event.action, event.target, event.account_id) == (
            "secret.rotated",
            body["id"],
            "acme",
        )


def test_rotate_default_grace_is_zero(client, factory, admin):
    cid, first = factory.client("acme")
    response = client.post(f"{API}/{cid}/secrets/rotate", headers=admin)
    assert response.status_code == 201
    assert token_status(client, cid, first) == 401
    body = response.get_json()
    assert body["old_secrets_expire_at"] == body["created_at"]


def test_one_rotation_default_for_every_face(app):
    """The API's schema, the CLI's option and the console's form offer the service's default."""
    from app.api.schemas import SecretRotate
    from app.cli.clients import secrets_rotate
    from app.clients.secrets import DEFAULT_GRACE_PERIOD
    from app.console.forms import GRACE_PERIODS

    assert DEFAULT_GRACE_PERIOD == 0  # docs/api.md: a rotation is often the answer to a leak
    hints = typing.get_type_hints(SecretRotate, include_extras=True)
    field = hints["grace_period"].__metadata__[0]
    assert field.json_schema_extra == {"default": DEFAULT_GRACE_PERIOD}
    option = next(p for p in secrets_rotate.params if p.name == "grace_period")
    assert option.default == DEFAULT_GRACE_PERIOD
    assert DEFAULT_GRACE_PERIOD in dict(GRACE_PERIODS)


def test_rotate_with_grace_keeps_old_secrets_until_then(client, factory, admin):
    cid, first = factory.client("acme")
    short = add(client, admin, cid, expires_in=120).get_json()
    response = client.post(
        f"{API}/{cid}/secrets/rotate", json={"grace_period": 3600}, headers=admin
    )
    assert response.status_code == 201
    new = response.get_json()
    assert parse_time(new["old_secrets_expire_at"]) - parse_time(new["created_at"]) == timedelta(
        seconds=3600
    )
    assert token_status(client, cid, first) == 200
    assert token_status(client, cid, short["secret"]) == 200
    assert token_status(client, cid, new["secret"]) == 200
    listing = {
        s["id"]: s for s in client.get(f"{API}/{cid}/secrets", headers=admin).get_json()["data"]
    }
    created = parse_time(new["created_at"])
    # An earlier expiry stays; a later (or no) expiry becomes now + grace.
    assert listing[short["id"]]["expires_at"] == short["expires_at"]
    first_row = next(s for s in listing.values() if s["id"] not in (short["id"], new["id"]))
    assert abs(parse_time(first_row["expires_at"]) - created - timedelta(seconds=3600)) < timedelta(
        seconds=2
    )
    assert listing[new["id"]]["expires_at"] is None


def test_rotate_works_with_five_active_secrets(client, factory, admin):
    """Rotation is the way out of a leak, so the limit never refuses it (documented)."""
    cid, _ = factory.client("acme")
    for _ in range(4):
        assert add(client, admin, cid).status_code == 201
    response = client.post(f"{API}/{cid}/secrets/rotate", json={"grace_period": 60}, headers=admin)
    assert response.status_code == 201
    # Six are active during the grace period, so adding waits until they expire.
    assert add(client, admin, cid).get_json()["code"] == "too_many_secrets"


@pytest.mark.parametrize(
    "body",
    [
        {"grace_period": -1},
        {"grace_period": 2592001},
        {"grace_period": True},
        {"grace_period": 1.0},
        {"grace_period": "60"},
        {"grace_period": None},
        {"grace": 60},
        {"description": "x"},
        {"expires_in": 60},
        [],
        "60",
    ],
)
def test_rotate_rejects_bad_bodies(client, factory, admin, app, body):
    cid, first = factory.client("acme")
    before = (secret_rows(app, cid), audit_count(app))
    response = client.post(f"{API}/{cid}/secrets/rotate", json=body, headers=admin)
    assert response.status_code == 400, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert (secret_rows(app, cid), audit_count(app)) == before
    assert token_status(client, cid, first) == 200


def test_delete_stops_the_secret_at_once(client, factory, admin, app):
    cid, first = factory.client("acme")
    new = add(client, admin, cid).get_json()
    assert token_status(client, cid, new["secret"]) == 200  # warm the cached record
    response = client.delete(f"{API}/{cid}/secrets/{new['id']}", headers=admin)
    assert response.status_code == 204 and response.data == b""
    assert token_status(client, cid, new["secret"]) == 401
    assert token_status(client, cid, first) == 200
    ids = [s["id"] for s in client.get(f"{API}/{cid}/secrets", headers=admin).get_json()["data"]]
    assert new["id"] not in ids and len(ids) == 1
    again = client.delete(f"{API}/{cid}/secrets/{new['id']}", headers=admin)
    assert again.status_code == 404
    assert again.get_json()["code"] == "secret_not_found"


@pytest.mark.parametrize(
    "secret_id",
    [
        "nope",
        str(uuid.uuid4()),
        "x" * 65,
        "x" * 3000,
        "%00",
        "%C3%BC",
        "%F0%9F%94%91",
        "1",
        "-1",
        "..%2F..",
        "'%20OR%201=1--",
    ],
)
def test_unknown_secret_ids_are_404(client, factory, admin, app, secret_id):
    cid, _ = factory.client("acme")
    before = (secret_rows(app, cid), audit_count(app))
    for method in ("get", "delete"):
        response = getattr(client, method)(f"{API}/{cid}/secrets/{secret_id}", headers=admin)
        assert response.status_code == 404, (method, response.get_data(as_text=True))
        assert response.mimetype == "application/problem+json"
    assert (secret_rows(app, cid), audit_count(app)) == before


def test_a_secret_of_another_client_is_404(client, factory, admin, app):
    cid, _ = factory.client("acme")
    other, _ = factory.client("acme")
    foreign = add(client, admin, other).get_json()["id"]
    before = secret_rows(app, other)
    assert client.delete(f"{API}/{cid}/secrets/{foreign}", headers=admin).status_code == 404
    assert client.get(f"{API}/{cid}/secrets/{foreign}", headers=admin).status_code == 404
    assert secret_rows(app, other) == before


def test_locked_client_refuses_secret_changes(client, factory, admin, app):
    cid, first = factory.client("acme", locked=True)
    with app.app_context():
        secret_id = db.session.scalar(
            sa.select(ClientSecret.id).where(ClientSecret.client_id == cid)
        )
    before = (secret_rows(app, cid), audit_count(app))
    for response in (
        add(client, admin, cid),
        client.post(f"{API}/{cid}/secrets/rotate", json={"grace_period": 0}, headers=admin),
        client.delete(f"{API}/{cid}/secrets/{secret_id}", headers=admin),
    ):
        assert response.status_code == 409
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["code"] == "client_locked"
    assert (secret_rows(app, cid), audit_count(app)) == before
    assert client.get(f"{API}/{cid}/secrets", headers=admin).status_code == 200
    assert token_status(client, cid, first) == 200


def test_audit_events_name_the_secret_never_its_value(client, factory, admin, app):
    cid, _ = factory.client("acme")
    created = add(client, admin, cid).get_json()
    rotated = client.post(f"{API}/{cid}/secrets/rotate", headers=admin).get_json()
    assert client.delete(f"{API}/{cid}/secrets/{created['id']}", headers=admin).status_code == 204
    with app.app_context():
        actor = db.session.scalar(
            sa.select(AuditEvent.actor).where(AuditEvent.action == "secret.created")
        )
        events = db.session.execute(
            sa.select(AuditEvent.action, AuditEvent.target, AuditEvent.account_id)
            .where(AuditEvent.action.like("secret.%"))
            .order_by(AuditEvent.id)
        ).all()
    assert [tuple(e) for e in events] == [
        ("secret.created", created["id"], "acme"),
        ("secret.rotated", rotated["id"], "acme"),
        ("secret.deleted", created["id"], "acme"),
    ]
    assert actor != "test" and actor != cid  # the admin client that made the call


def test_scopes_and_tokens(client, factory, app):
    cid, _ = factory.client("acme")
    reader = factory.admin_headers("acme", scopes=["clients:read"])
    assert client.get(f"{API}/{cid}/secrets", headers=reader).status_code == 200
    before = secret_rows(app, cid)
    for method, path in (
        ("post", "secrets"),
        ("post", "secrets/rotate"),
        ("delete", f"secrets/{uuid.uuid4()}"),
    ):
        response = getattr(client, method)(f"{API}/{cid}/{path}", json={}, headers=reader)
        assert response.status_code == 403
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
        anonymous = getattr(client, method)(f"{API}/{cid}/{path}", json={})
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    writer = factory.admin_headers("acme", scopes=["clients:write"])
    assert client.get(f"{API}/{cid}/secrets", headers=writer).status_code == 403
    assert client.get(f"{API}/{cid}/secrets").status_code == 401
    assert secret_rows(app, cid) == before


def test_tenancy_other_accounts_secrets_are_404(client, factory, app):
    """Account B's admin cannot list, add, rotate or delete A's secrets; A's rows stay."""
    cid, first = factory.client("acme")
    other = factory.admin_headers("globex")
    acme = factory.admin_headers("acme")
    secret_id = client.get(f"{API}/{cid}/secrets", headers=acme).get_json()["data"][0]["id"]
    missing = str(uuid.uuid4())
    before = (secret_rows(app, cid), audit_count(app))
    calls = [
        ("get", "secrets", None),
        ("get", f"secrets/{secret_id}", None),
        ("post", "secrets", {"description": "x"}),
        ("post", "secrets/rotate", {"grace_period": 0}),
        ("delete", f"secrets/{secret_id}", None),
    ]
    for method, path, body in calls:
        theirs = getattr(client, method)(f"{API}/{cid}/{path}", json=body, headers=other)
        absent = getattr(client, method)(f"{API}/{missing}/{path}", json=body, headers=other)
        assert theirs.status_code == 404, (method, path)
        assert theirs.get_json() == absent.get_json()
        assert theirs.mimetype == absent.mimetype == "application/problem+json"
    assert (secret_rows(app, cid), audit_count(app)) == before
    assert token_status(client, cid, first) == 200
    # The system account's admins manage every account.
    system = factory.admin_headers("system")
    assert client.get(f"{API}/{cid}/secrets", headers=system).status_code == 200


@pytest.mark.parametrize("app_config", [{"LAST_USED_RESOLUTION": 0}], indirect=True)
def test_last_used_at_is_written_after_authentication(client, factory, admin):
    cid, first = factory.client("acme")
    unused = add(client, admin, cid).get_json()
    listing = client.get(f"{API}/{cid}/secrets", headers=admin).get_json()["data"]
    assert all(s["last_used_at"] is None for s in listing)
    before = datetime.now(UTC) - timedelta(seconds=1)
    assert token_status(client, cid, first) == 200
    listing = {
        s["id"]: s for s in client.get(f"{API}/{cid}/secrets", headers=admin).get_json()["data"]
    }
    used = next(s for s in listing.values() if s["id"] != unused["id"])
    assert before <= parse_time(used["last_used_at"]) <= datetime.now(UTC)
    assert listing[unused["id"]]["last_used_at"] is None


def test_last_used_at_is_throttled(client, factory, admin):
    """With the default resolution (60 s) a token request does not write at once."""
    cid, first = factory.client("acme")
    assert token_status(client, cid, first) == 200
    listing = client.get(f"{API}/{cid}/secrets", headers=admin).get_json()["data"]
    assert listing[0]["last_used_at"] is None


def test_concurrent_adds_never_exceed_five(client, factory, admin, app):
    """Real threads on PostgreSQL: the client row lock serializes the count."""
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("row locks (SELECT ... FOR UPDATE) need PostgreSQL")
    cid, _ = factory.client("acme")
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        http = app.test_client()
        barrier.wait()
        status = http.post(f"{API}/{cid}/secrets", json={}, headers=admin).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=worker) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [201] * 4 + [409] * 4
    assert len(secret_rows(app, cid)) == 5
