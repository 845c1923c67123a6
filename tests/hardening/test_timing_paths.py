"""Integration tests: a wrong secret costs the same work whether or not the client exists.

Not a stopwatch test (timing on a shared CI machine is noise): the test
observes the real hashing and comparison functions by wrapping them with
counters and checks that an unknown client, a client whose secrets all
expired and a known client with a wrong secret each run one HMAC and at
least one constant-time comparison, and get byte-identical answers.
"""

from __future__ import annotations

import hmac
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.clients import hashing
from app.extensions import db
from app.models import ClientSecret
from app.timeutil import utcnow
from tests.conftest import basic_auth

TOKEN = {"grant_type": "client_credentials"}


@pytest.fixture
def counted(monkeypatch) -> dict:
    """Wrap hash_secret and hmac.compare_digest; the real functions still run."""
    calls = {"hash": 0, "compare": 0}
    real_hash = hashing.hash_secret
    real_compare = hmac.compare_digest

    def hash_secret(secret, pepper):
        calls["hash"] += 1
        return real_hash(secret, pepper)

    def compare_digest(a, b):
        calls["compare"] += 1
        return real_compare(a, b)

    monkeypatch.setattr(hashing, "hash_secret", hash_secret)
    monkeypatch.setattr(hashing.hmac, "compare_digest", compare_digest)
    return calls


def _attempt(client, counted, client_id: str, secret: str, post: bool = False):
    counted["hash"] = counted["compare"] = 0
    if post:
        response = client.post(
            "/oauth2/token", data={**TOKEN, "client_id": client_id, "client_secret": secret}
        )
    else:
        response = client.post("/oauth2/token", data=TOKEN, headers=basic_auth(client_id, secret))
    return response, dict(counted)


@pytest.mark.parametrize("post", [False, True], ids=["basic", "post"])
def test_wrong_secret_costs_the_same_for_known_and_unknown_clients(
    app, client, factory, counted, post
):
    known, secret = factory.client()
    expired, _ = factory.client()
    with app.app_context():
        db.session.execute(
            sa.update(ClientSecret)
            .where(ClientSecret.client_id == expired)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
        app.extensions["ccserver"].clients.clear()
    wrong = "ccs_" + "x" * 43

    answers = {}
    for name, client_id in {
        "known": known,
        "unknown": "00000000-0000-0000-0000-000000000000",
        "expired": expired,
    }.items():
        response, calls = _attempt(client, counted, client_id, wrong, post)
        assert response.status_code == 401
        # One HMAC of the presented secret, compared in constant time, on every path.
        assert calls["hash"] == 1, (name, calls)
        assert calls["compare"] >= 1, (name, calls)
        answers[name] = (response.get_data(), response.headers.get("WWW-Authenticate"))
    assert answers["known"] == answers["unknown"] == answers["expired"]

    # And the right secret goes through the very same function.
    response, calls = _attempt(client, counted, known, secret, post)
    assert response.status_code == 200
    assert calls["hash"] == 1


def test_every_candidate_secret_is_compared(app, client, factory, counted):
    """No early exit: with several active secrets, all are compared even when the first matches."""
    cid, secret = factory.client()
    admin = factory.admin_headers("system")
    for _ in range(3):
        created = client.post(f"/api/v1/clients/{cid}/secrets", json={}, headers=admin)
        assert created.status_code == 201
    response, calls = _attempt(client, counted, cid, secret)
    assert response.status_code == 200
    assert calls["hash"] == 1
    assert calls["compare"] >= 4
