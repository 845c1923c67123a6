"""Integration tests: concurrent requests lose nothing (docs/api.md §2.1, §2.2).

Real threads, each with its own Flask test client, against the real
database. Row locks (SELECT ... FOR UPDATE) make these guarantees on
PostgreSQL; SQLite serializes writers with a file lock instead, and tests
whose interleaving SQLite cannot offer are skipped there.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.extensions import db
from tests.conftest import basic_auth

TOKEN = {"grant_type": "client_credentials"}


@pytest.fixture
def app_config(base_config, migrated) -> dict:
    # Threads here fail no authentication, but keep the limiter out of the way.
    return {**base_config, "AUTH_FAILURE_LIMIT_CLIENT": 0, "AUTH_FAILURE_LIMIT_ADDRESS": 0}


@pytest.fixture
def on_postgres(app) -> bool:
    with app.app_context():
        return db.engine.dialect.name == "postgresql"


def run_together(app, jobs, workers: int | None = None):
    """Run callables(http) at the same moment, one test client per thread; results in order."""
    workers = workers or len(jobs)
    barrier = threading.Barrier(min(workers, len(jobs)))
    started = iter(range(len(jobs)))
    lock = threading.Lock()

    def call(job):
        http = app.test_client()
        with lock:
            first_wave = next(started) < workers
        if first_wave:
            barrier.wait(timeout=30)
        return job(http)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(call, jobs))


def test_token_requests_during_rotation_with_grace_all_succeed(app, factory):
    cid, secret = factory.client()
    admin = factory.admin_headers("system")
    probe = factory.http.post(
        f"/api/v1/clients/{cid}/secrets/rotate", json={"grace_period": 60}, headers=admin
    )
    assert probe.status_code == 201
    # The probe made a second secret; rotate again concurrently with the load.
    current = probe.get_json()["secret"]

    def token(http):
        return http.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, secret))

    def token_new(http):
        return http.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, current))

    def rotate(http):
        return http.post(
            f"/api/v1/clients/{cid}/secrets/rotate", json={"grace_period": 60}, headers=admin
        )

    jobs = [token] * 25 + [rotate] + [token_new] * 25
    results = run_together(app, jobs, workers=51)
    rotation = results[25]
    assert rotation.status_code == 201, rotation.get_json()
    failures = [(r.status_code, r.get_json()) for r in results if r is not rotation]
    assert all(status == 200 for status, _ in failures), failures
    newest = rotation.get_json()["secret"]
    # All three secrets work: the old ones inside their grace period.
    for value in (secret, current, newest):
        response = factory.http.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, value))
        assert response.status_code == 200


FIELDS = {
    "friendly_name": "Renamed by thread",
    "description": "written by its own thread",
    "tags": ["concurrency", "test"],
    "owner": "ops@example.com",
    "scopes": ["read", "write", "admin-ish"],
    "audiences": ["https://api.example.com"],
    "access_token_ttl": 1234,
}


def test_concurrent_patches_to_different_fields_lose_none(app, factory, on_postgres):
    if not on_postgres:
        pytest.skip("SQLite has no row locks; concurrent read-modify-write is PostgreSQL's case")
    cid, _ = factory.client(scopes=["read"])
    factory.resource_server("acme", "https://api.example.com")  # for the audiences patch
    admin = factory.admin_headers("system")

    def patcher(field, value):
        def job(http):
            return http.patch(f"/api/v1/clients/{cid}", json={field: value}, headers=admin)

        return job

    for _ in range(3):  # a few rounds: interleavings differ from run to run
        results = run_together(app, [patcher(f, v) for f, v in FIELDS.items()])
        assert [r.status_code for r in results] == [200] * len(FIELDS), [
            r.get_json() for r in results
        ]
    body = factory.http.get(f"/api/v1/clients/{cid}", headers=admin).get_json()
    for field, value in FIELDS.items():
        assert body[field] == value, field


def test_stale_if_match_is_412_and_changes_nothing(app, factory, on_postgres):
    cid, _ = factory.client()
    admin = factory.admin_headers("system")
    first = factory.http.get(f"/api/v1/clients/{cid}", headers=admin)
    etag = first.headers["ETag"]

    # Sequential: a write moves the ETag; the old one no longer matches.
    moved = factory.http.patch(
        f"/api/v1/clients/{cid}",
        json={"description": "first"},
        headers={**admin, "If-Match": etag},
    )
    assert moved.status_code == 200
    assert moved.headers["ETag"] != etag
    for method, body in (("PATCH", {"description": "stale"}), ("PUT", {"name": "stale"})):
        stale = factory.http.open(
            f"/api/v1/clients/{cid}",
            method=method,
            json=body,
            headers={**admin, "If-Match": etag},
        )
        assert stale.status_code == 412
        assert stale.mimetype == "application/problem+json"
    stale_delete = factory.http.delete(
        f"/api/v1/clients/{cid}", headers={**admin, "If-Match": etag}
    )
    assert stale_delete.status_code == 412
    now = factory.http.get(f"/api/v1/clients/{cid}", headers=admin)
    assert now.get_json()["description"] == "first"
    assert now.headers["ETag"] == moved.headers["ETag"]

    if not on_postgres:
        return
    # Concurrent: ten writers hold the same ETag; exactly one may win.
    etag = now.headers["ETag"]

    def writer(i):
        def job(http):
            return http.patch(
                f"/api/v1/clients/{cid}",
                json={"description": f"writer {i}"},
                headers={**admin, "If-Match": etag},
            )

        return job

    results = run_together(app, [writer(i) for i in range(10)])
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [412] * 9, statuses
    winner = next(r for r in results if r.status_code == 200).get_json()["description"]
    assert (
        factory.http.get(f"/api/v1/clients/{cid}", headers=admin).get_json()["description"]
        == winner
    )


def test_concurrent_deletes_and_lists_never_fail(app, factory, on_postgres):
    admin = factory.admin_headers("system")
    ids = [factory.client(name=f"victim-{i:02d}")[0] for i in range(24)]

    def delete(cid):
        return lambda http: http.delete(f"/api/v1/clients/{cid}", headers=admin)

    def list_all(http):
        seen, url, pages = [], "/api/v1/clients?limit=5", 0
        while url and pages < 50:
            response = http.get(url, headers=admin)
            if response.status_code != 200:
                return response.status_code, response.get_json()
            body = response.get_json()
            seen.extend(item["id"] for item in body["data"])
            cursor = body["next_cursor"]
            url = f"/api/v1/clients?limit=5&cursor={cursor}" if cursor else None
            pages += 1
        return 200, seen

    # Every victim is deleted (on PostgreSQL twice, racing: the row lock lets
    # one win; SQLite has no row locks) while six listers page through.
    rounds = 2 if on_postgres else 1
    jobs = [delete(cid) for cid in ids] * rounds + [list_all] * 6
    # On SQLite at most 8 at once, as two gunicorn workers of four threads
    # would: its writers queue on one file lock.
    results = run_together(app, jobs, workers=len(jobs) if on_postgres else 8)
    deletes = results[: rounds * len(ids)]
    for i, cid in enumerate(ids):
        statuses = sorted(r.status_code for r in deletes[i :: len(ids)])
        assert statuses == [204, 404][:rounds], cid
    for status, seen in results[rounds * len(ids) :]:
        assert status == 200, seen
        assert len(seen) == len(set(seen)), "a client appeared twice while paging"
    remaining = factory.http.get("/api/v1/clients?limit=1000", headers=admin).get_json()["data"]
    assert not set(ids) & {item["id"] for item in remaining}
