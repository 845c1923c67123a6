"""Integration: token revocation (RFC 7009) and the shared deny-list (database or Redis)."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import RevokedToken, UsedAssertion
from app.runtime import runtime
from app.state import jti as jti_state
from app.timeutil import utcnow
from tests.conftest import basic_auth
from tests.oauth.assertions import (
    ISSUER,
    assertion_form,
    claims_for,
    make_key,
    mint_access_token,
    register_key,
    sign,
)

REVOKE = "/oauth2/revoke"
AUDIENCE = "https://api.example.com"


@pytest.fixture
def app_config(backend_config) -> dict:
    return backend_config


@pytest.fixture
def owner(factory):
    return factory.client("acme", scopes=["read"], audiences=[AUDIENCE])


def revoke(client, creds, token, **extra):
    return client.post(REVOKE, data={"token": token, **extra}, headers=basic_auth(*creds))


def is_active(client, factory, token) -> bool:
    caller = factory.client("acme")
    response = client.post("/oauth2/introspect", data={"token": token}, headers=basic_auth(*caller))
    assert response.status_code == 200
    return response.get_json()["active"]


def revoked_rows(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(RevokedToken))


def test_revoke_own_token(app, client, factory, owner, backend):
    token = factory.token(*owner)["access_token"]
    other = factory.token(*owner)["access_token"]
    response = revoke(client, owner, token, token_type_hint="access_token")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    # RFC 7009 §2.2: the status says it all; the body is empty.
    assert response.get_data() == b""
    assert not is_active(client, factory, token)
    # Only that token: another token of the same client stays active.
    assert is_active(client, factory, other)
    # Revoking again, and revoking garbage or unknown tokens, is 200 too (RFC 7009 §2.2).
    for junk in (token, "garbage", "a.b.c", "", "x" * 9000):
        assert revoke(client, owner, junk).status_code == 200, junk
    if backend == "redis":
        jti = jwt.decode(token, options={"verify_signature": False})["jti"]
        with app.app_context():
            ttl = runtime().redis.ttl(jti_state.REVOKED_PREFIX + jti)
        # The deny-list entry lives exactly as long as the token would have.
        assert 3590 <= ttl <= 3600
        assert revoked_rows(app) == 0
    else:
        assert revoked_rows(app) == 1


def test_revoked_admin_token_is_refused_by_management_api(client, factory):
    cid, secret = factory.admin("acme")
    token = factory.token(cid, secret)["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/clients", headers=headers).status_code == 200
    assert revoke(client, (cid, secret), token).status_code == 200
    response = client.get("/api/v1/clients", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", DPoP algs="ES256 ES384 PS256 RS256 EdDSA"'
    )
    assert response.mimetype == "application/problem+json"


def test_expired_token_is_200_and_not_stored(app, client, owner, factory):
    """An expired token cannot be used anyway: nothing to deny."""
    now = int(time.time())
    expired = mint_access_token(
        app, client_id=owner[0], iat=now - 7200, nbf=now - 7200, exp=now - 60
    )
    assert revoke(client, owner, expired).status_code == 200
    assert revoked_rows(app) == 0


def test_another_clients_token_is_refused_and_stays_active(client, factory, owner):
    token = factory.token(*owner)["access_token"]
    thief = factory.client("acme")
    response = revoke(client, thief, token)
    # RFC 7009 §2.1: the request is refused and the client informed (RFC 6749 §5.2 error).
    assert response.status_code == 400
    assert response.get_json()["error"] == "unauthorized_client"
    assert response.headers["Cache-Control"] == "no-store"
    assert is_active(client, factory, token)
    # Even a client of another account, or an admin, cannot revoke it.
    admin = factory.admin("acme")
    assert revoke(client, admin, token).status_code == 400
    assert is_active(client, factory, token)


def test_revoke_with_private_key_jwt(client, factory, owner):
    admin = factory.admin_headers("acme")
    pair = make_key("ES256")
    register_key(client, admin, owner[0], pair)
    token = factory.token(*owner)["access_token"]
    for aud in (ISSUER, f"{ISSUER}/oauth2/revoke"):
        form = assertion_form(sign(pair, claims_for(owner[0], aud=aud)), token=token)
        assert client.post(REVOKE, data=form).status_code == 200
    assert not is_active(client, factory, token)


def test_caller_must_authenticate(client, factory, owner):
    token = factory.token(*owner)["access_token"]
    response = client.post(REVOKE, data={"token": token})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    response = revoke(client, (owner[0], "ccs_wrong"), token)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    assert is_active(client, factory, token)


def test_missing_token_is_invalid_request(client, owner):
    response = client.post(REVOKE, data={}, headers=basic_auth(*owner))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


def test_issuing_writes_no_row(app, client, factory, owner):
    for _ in range(3):
        factory.token(*owner)
    assert revoked_rows(app) == 0
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(UsedAssertion)) == 0


def test_purge_keeps_the_deny_list_bounded(app, client, factory, owner, backend, monkeypatch):
    """Rows live until the token's exp: old ones are purged as new revocations arrive."""
    if backend == "redis":
        pytest.skip("Redis expires its keys itself (TTL checked in test_revoke_own_token)")
    past = utcnow() - timedelta(seconds=1)
    with app.app_context():
        db.session.execute(
            sa.insert(RevokedToken),
            [{"jti": f"old-{i}", "client_id": owner[0], "expires_at": past} for i in range(50)],
        )
        db.session.execute(
            sa.insert(UsedAssertion),
            [{"key": f"{owner[0]}:old-{i}", "expires_at": past} for i in range(50)],
        )
        db.session.commit()
        assert runtime().jti.is_revoked("old-1") is False  # expired rows never count
    assert revoked_rows(app) == 50
    # Purge on the next insert rather than waiting a minute.
    monkeypatch.setattr(jti_state, "PURGE_EVERY", 1)
    token = factory.token(*owner)["access_token"]
    assert revoke(client, owner, token).status_code == 200
    with app.app_context():
        jtis = db.session.scalars(sa.select(RevokedToken.jti)).all()
        used = db.session.scalar(sa.select(sa.func.count()).select_from(UsedAssertion))
    assert jtis == [jwt.decode(token, options={"verify_signature": False})["jti"]]
    assert used == 0
    assert not is_active(client, factory, token)


def test_purge_expired_function(app, owner, backend):
    if backend == "redis":
        pytest.skip("database deny-list only")
    now = utcnow()
    with app.app_context():
        db.session.execute(
            sa.insert(RevokedToken),
            [
                {"jti": "gone", "client_id": owner[0], "expires_at": now - timedelta(seconds=5)},
                {"jti": "kept", "client_id": owner[0], "expires_at": now + timedelta(hours=1)},
            ],
        )
        db.session.commit()
        assert runtime().jti.purge_expired() == 1
        assert db.session.scalars(sa.select(RevokedToken.jti)).all() == ["kept"]
        assert runtime().jti.is_revoked("kept") is True


def test_replay_cache_takes_over_expired_rows_and_admits_one_racer(app, owner, backend):
    """One jti is used once while live; a row left by an expired assertion does not block it."""
    import threading

    now = utcnow()
    later = now + timedelta(minutes=5)
    with app.app_context():
        if backend == "database":
            db.session.execute(
                sa.insert(UsedAssertion),
                [{"key": f"{owner[0]}:reused", "expires_at": now - timedelta(seconds=1)}],
            )
            db.session.commit()
        assert runtime().jti.use_once(f"{owner[0]}:reused", later) is True
        assert runtime().jti.use_once(f"{owner[0]}:reused", later) is False
        assert runtime().jti.use_once("another-client:reused", later) is True

    results: list[bool] = []
    start = threading.Barrier(12)

    def use() -> None:
        with app.app_context():
            start.wait()
            results.append(runtime().jti.use_once(f"{owner[0]}:raced", later))

    threads = [threading.Thread(target=use) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 11 + [True]
