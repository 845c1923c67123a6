"""Integration: the per-process client cache is bounded (docs/api.md §2.2 "at once").

Two app instances in one process share one database (and Redis when
TEST_REDIS_URL is set) but each has its own client cache, as two servers
would. A change made through instance A's API takes effect on A from the
response on, and on B within CLIENT_CACHE_TTL (default 2 s; docs/api.md §2.2
allows 5).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from app import create_app
from app.extensions import db
from tests.conftest import basic_auth

BOUND = 5.0


@pytest.fixture
def instance_b(app, app_config) -> Iterator:
    other = create_app(dict(app_config))
    yield other
    with other.app_context():
        db.session.remove()
        db.engine.dispose()


def token_status(http, client_id: str, secret: str) -> int:
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(client_id, secret),
    )
    assert response.status_code in (200, 401), response.get_json()
    return response.status_code


def seconds_until_refused(http, client_id: str, secret: str, since: float) -> float:
    """Poll the token endpoint until it refuses; seconds since `since` (fails past the bound)."""
    while True:
        if token_status(http, client_id, secret) == 401:
            return time.monotonic() - since
        if time.monotonic() - since > BOUND:
            pytest.fail(f"still accepted {BOUND:.0f} s after the change")
        time.sleep(0.05)


def check_bound(
    app, client, instance_b, factory, change: Callable[[str, dict[str, str]], None]
) -> None:
    """Warm B's cache, make the change on A, then A refuses at once and B within the TTL."""
    http_b = instance_b.test_client()
    admin = factory.admin_headers("acme")
    cid, secret = factory.client("acme", scopes=["read"])
    assert token_status(http_b, cid, secret) == 200  # B now caches the record
    assert token_status(client, cid, secret) == 200
    change(cid, admin)
    changed_at = time.monotonic()
    assert token_status(client, cid, secret) == 401  # A: from the response on
    elapsed = seconds_until_refused(http_b, cid, secret, changed_at)
    assert app.config["CLIENT_CACHE_TTL"] <= BOUND
    assert elapsed <= BOUND


def test_deleted_secret_is_refused_everywhere_within_the_bound(app, client, instance_b, factory):
    def delete_secret(cid, admin):
        secrets = client.get(f"/api/v1/clients/{cid}/secrets", headers=admin).get_json()
        (secret_id,) = [s["id"] for s in secrets["data"]]
        response = client.delete(f"/api/v1/clients/{cid}/secrets/{secret_id}", headers=admin)
        assert response.status_code == 204

    check_bound(app, client, instance_b, factory, delete_secret)


def test_disabled_client_is_refused_everywhere_within_the_bound(app, client, instance_b, factory):
    def disable(cid, admin):
        response = client.patch(f"/api/v1/clients/{cid}", json={"disabled": True}, headers=admin)
        assert response.status_code == 200

    check_bound(app, client, instance_b, factory, disable)


def test_deleted_client_is_refused_everywhere_within_the_bound(app, client, instance_b, factory):
    def delete(cid, admin):
        assert client.delete(f"/api/v1/clients/{cid}", headers=admin).status_code == 204

    check_bound(app, client, instance_b, factory, delete)


def test_rotation_without_grace_is_refused_everywhere_within_the_bound(
    app, client, instance_b, factory
):
    def rotate(cid, admin):
        response = client.post(
            f"/api/v1/clients/{cid}/secrets/rotate", json={"grace_period": 0}, headers=admin
        )
        assert response.status_code == 201

    check_bound(app, client, instance_b, factory, rotate)


def test_cache_ttl_default_is_within_the_documented_bound(base_config, migrated):
    fresh = create_app({k: v for k, v in base_config.items() if k != "CLIENT_CACHE_TTL"})
    assert 0 < fresh.config["CLIENT_CACHE_TTL"] <= BOUND
    with fresh.app_context():
        db.engine.dispose()
