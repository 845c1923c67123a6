"""Integration: /api/v1/signing-keys (docs/api.md §2.4) through HTTP, real keys and database."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditEvent, SigningKey
from app.runtime import runtime
from app.signing import keys as keys_service
from app.timeutil import utcnow

LIST = "/api/v1/signing-keys"
ROTATE = "/api/v1/signing-keys/rotate"
FIELDS = {"kid", "alg", "status", "created_at", "activated_at", "retires_at"}


def statuses(app) -> dict[str, list[str]]:
    with app.app_context():
        return {s: [k.kid for k in keys] for s, keys in keys_service.keys_by_status().items()}


def test_list_shows_status_and_times_never_key_material(client, app, factory):
    keys = statuses(app)
    response = client.get(LIST, headers=factory.admin_headers())
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    data = response.get_json()["data"]
    assert {(k["kid"], k["status"]) for k in data} == {
        (keys["current"][0], "current"),
        (keys["next"][0], "next"),
    }
    for item in data:
        assert set(item) == FIELDS
        assert item["alg"] == "ES256"
        assert item["created_at"].endswith("Z")
        assert item["retires_at"] is None
    current = next(k for k in data if k["status"] == "current")
    assert current["activated_at"].endswith("Z")
    assert next(k for k in data if k["status"] == "next")["activated_at"] is None


def test_rotate_promotes_next_retires_current_and_makes_new_next(client, app, factory):
    headers = factory.admin_headers()
    before = statuses(app)
    response = client.post(ROTATE, headers=headers)
    assert response.status_code == 200
    data = response.get_json()["data"]
    by_status = {}
    for item in data:
        assert set(item) == FIELDS
        by_status.setdefault(item["status"], []).append(item)
    assert [k["kid"] for k in by_status["current"]] == before["next"]
    assert [k["kid"] for k in by_status["retired"]] == before["current"]
    assert len(by_status["next"]) == 1
    assert by_status["next"][0]["kid"] not in before["current"] + before["next"]
    assert by_status["retired"][0]["retires_at"] is not None
    # The new next key is published at once, the retired one still is.
    kids = {k["kid"] for k in client.get("/.well-known/jwks.json").get_json()["keys"]}
    assert kids == {k["kid"] for k in data}
    # The list now agrees with the response.
    assert client.get(LIST, headers=headers).get_json()["data"] == data


def test_rotate_is_audited_as_the_calling_admin(client, app, factory):
    admin_id, secret = factory.admin()
    token = factory.token(admin_id, secret)["access_token"]
    before = statuses(app)
    response = client.post(ROTATE, headers={"Authorization": f"Bearer {token}"}, json={})
    assert response.status_code == 200
    with app.app_context():
        events = db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "signing_key.rotated")
        ).all()
    assert [(e.actor, e.target, e.account_id) for e in events] == [
        (admin_id, before["next"][0], "system")
    ]


def test_rotation_switches_this_instances_signing_key_once_published(client, app, factory):
    cid, secret = factory.client(scopes=["read"])
    headers = factory.admin_headers()
    # A next key older than JWKS max-age + refresh + skew: signed with at once.
    with app.app_context():
        key = keys_service.keys_by_status()["next"][0]
        key.created_at = utcnow() - timedelta(days=30)
        promoted = key.kid
        db.session.commit()
        runtime().keyring.invalidate()
    assert client.post(ROTATE, headers=headers).status_code == 200
    token = factory.token(cid, secret)["access_token"]
    assert jwt.get_unverified_header(token)["kid"] == promoted


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"kid": "x"}', "application/json"),
        ('{"status": "current"}', "application/json"),
        ("[]", "application/json"),
        ('"rotate"', "application/json"),
        ("{not json", "application/json"),
    ],
)
def test_rotate_rejects_any_field_or_non_object(client, app, factory, body, content_type):
    headers = {**factory.admin_headers(), "Content-Type": content_type}
    before = statuses(app)
    response = client.post(ROTATE, data=body, headers=headers)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["status"] == 400
    assert statuses(app) == before


def test_rotate_with_non_json_body_is_415(client, app, factory):
    response = client.post(
        ROTATE, data="x=1", headers={**factory.admin_headers(), "Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.mimetype == "application/problem+json"


@pytest.mark.parametrize(("method", "path"), [("get", LIST), ("post", ROTATE)])
def test_account_admins_are_refused(client, app, factory, method, path):
    # An account admin may not even be given keys:* scopes; with every scope
    # its account may hold it still gets 403 here.
    headers = factory.admin_headers("acme")
    before = statuses(app)
    response = getattr(client, method)(path, headers=headers)
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    assert statuses(app) == before


@pytest.mark.parametrize(
    ("method", "path", "scopes"),
    [("get", LIST, ["keys:write"]), ("post", ROTATE, ["keys:read", "clients:write"])],
)
def test_system_admin_without_the_scope_is_403(client, app, factory, method, path, scopes):
    headers = factory.admin_headers("system", scopes=scopes)
    before = statuses(app)
    response = getattr(client, method)(path, headers=headers)
    assert response.status_code == 403
    assert "insufficient_scope" in response.headers["WWW-Authenticate"]
    assert statuses(app) == before


@pytest.mark.parametrize(("method", "path"), [("get", LIST), ("post", ROTATE)])
def test_no_token_is_401(client, app, method, path):
    before = statuses(app)
    response = getattr(client, method)(path)
    assert response.status_code == 401
    assert (
        response.headers["WWW-Authenticate"] == 'Bearer, DPoP algs="ES256 ES384 PS256 RS256 EdDSA"'
    )
    assert statuses(app) == before


def test_list_includes_retired_keys_until_purged(client, app, factory):
    headers = factory.admin_headers()
    assert client.post(ROTATE, headers=headers).status_code == 200
    with app.app_context():
        retired = db.session.scalars(
            sa.select(SigningKey).where(SigningKey.status == "retired")
        ).one()
        retired_kid = retired.kid
    data = client.get(LIST, headers=headers).get_json()["data"]
    assert [k["status"] for k in data] == ["next", "current", "retired"]
    assert data[2]["kid"] == retired_kid

    with app.app_context():
        db.session.get(SigningKey, retired_kid).retires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
        assert keys_service.purge_expired_keys(app.config["KEYS_DIR"]) == [retired_kid]
        db.session.commit()
    data = client.get(LIST, headers=headers).get_json()["data"]
    assert [k["status"] for k in data] == ["next", "current"]
