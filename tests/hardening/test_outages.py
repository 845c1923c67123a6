"""Integration tests: outages of the database and of Redis (issue 7, item 4).

A database that is gone or whose connections are killed gives fast 503s in
each family's error shape (never a 500 or a hang) and the service resumes by
itself; Redis down with REDIS_URL set makes rate limits fail open and
revocation checks fail closed.
"""

from __future__ import annotations

import logging
import threading
import time

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from app import create_app
from app.extensions import db
from app.runtime import runtime
from tests.conftest import basic_auth

TOKEN = {"grant_type": "client_credentials"}
CLOSED_PORT_DB = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"
CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"


def assert_oauth_503(response) -> None:
    assert response.status_code == 503, response.get_data()[:300]
    assert response.get_json()["error"] == "temporarily_unavailable"
    assert response.headers["Cache-Control"] == "no-store"


def assert_problem_503(response) -> None:
    assert response.status_code == 503, response.get_data()[:300]
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["status"] == 503


# --- database down ------------------------------------------------------------


@pytest.fixture
def down_app(base_config, tmp_path):
    """An app whose database is a closed port: nothing listens there."""
    config = {**base_config, "SQLALCHEMY_DATABASE_URI": CLOSED_PORT_DB, "REDIS_URL": None}
    config["KEYS_DIR"] = str(tmp_path / "keys")
    app = create_app(config)
    yield app
    with app.app_context():
        db.engine.dispose()


def test_database_down_gives_fast_503s(down_app):
    http = down_app.test_client()
    started = time.monotonic()
    ready = http.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["database"] is False
    assert http.get("/healthz").status_code == 200  # the process itself is alive
    assert_oauth_503(http.post("/oauth2/token", data=TOKEN, headers=basic_auth("a", "b")))
    assert_oauth_503(
        http.post("/oauth2/token", data={**TOKEN, "client_id": "a", "client_secret": "b"})
    )
    # A token that is not a JWT is refused from its shape alone: no database needed.
    api = http.get("/api/v1/clients", headers={"Authorization": "Bearer not-a-token"})
    assert api.status_code == 401, api.get_data()[:300]
    assert api.mimetype == "application/problem+json"
    # A well-formed one names a signing key only the database knows: 503, not 401.
    signed = jwt.encode(
        {"sub": "someone"},
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": "a-kid-to-look-up", "typ": "at+jwt"},
    )
    assert_problem_503(http.get("/api/v1/clients", headers={"Authorization": f"Bearer {signed}"}))
    # No hang: everything above answered well inside the 5 s connect timeout.
    assert time.monotonic() - started < 5


# --- database connections killed under load (PostgreSQL) ----------------------


@pytest.fixture
def on_postgres(app) -> bool:
    with app.app_context():
        return db.engine.dialect.name == "postgresql"


def test_killed_connections_give_503_and_service_resumes(app, factory, on_postgres):
    if not on_postgres:
        pytest.skip("pg_terminate_backend is PostgreSQL's; SQLite has no server connections")
    cid, secret = factory.client()
    admin = factory.admin_headers("system")
    statuses: list[int] = []
    stop = threading.Event()
    lock = threading.Lock()

    def load():
        http = app.test_client()
        while not stop.is_set():
            for response in (
                http.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, secret)),
                http.get("/api/v1/clients?limit=5", headers=admin),
                http.get("/readyz"),
            ):
                if response.status_code == 503 and response.mimetype.endswith("problem+json"):
                    assert response.get_json()["status"] == 503
                with lock:
                    statuses.append(response.status_code)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    killer = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"], poolclass=sa.pool.NullPool)
    try:
        for _ in range(3):
            time.sleep(0.3)
            with killer.begin() as conn:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        killer.dispose()
    assert statuses, "the load produced no requests"
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert statuses.count(200) > 0
    # Resumes by itself: pool_pre_ping replaces the dead connections.
    http = app.test_client()
    assert factory.token(cid, secret)["access_token"]
    assert http.get("/api/v1/clients?limit=5", headers=admin).status_code == 200
    assert http.get("/readyz").status_code == 200


# --- connection pool exhausted ------------------------------------------------


@pytest.fixture
def tiny_pool_config(base_config, migrated) -> dict:
    return {
        **base_config,
        "SQLALCHEMY_ENGINE_OPTIONS": {
            "pool_pre_ping": True,
            # A token request may hold two at once (its session and a short
            # Core connection), so two is the smallest pool that serves one.
            "pool_size": 2,
            "max_overflow": 0,
            "pool_timeout": 0.3,
        },
    }


@pytest.fixture
def mode() -> str:
    """Overridden by a test's parametrize: "tiny_pool"."""
    return "normal"


@pytest.fixture
def app_config(request, base_config, migrated, mode) -> dict:
    if mode == "tiny_pool":
        return request.getfixturevalue("tiny_pool_config")
    return dict(base_config)


@pytest.fixture
def redis_down_app(app):
    """A second instance on the same database whose REDIS_URL is a closed port."""
    other = create_app({**app.config, "REDIS_URL": CLOSED_PORT_REDIS})
    yield other
    with other.app_context():
        db.engine.dispose()


@pytest.mark.parametrize("mode", ["tiny_pool"])
def test_exhausted_pool_is_503_not_500(app, factory):
    cid, secret = factory.client()
    admin = factory.admin_headers("system")
    http = app.test_client()
    with app.app_context():
        app.extensions["ccserver"].clients.clear()
        held = [db.engine.connect(), db.engine.connect()]  # every connection of the pool
        executor = runtime().autocommit
        if executor is not None:
            # The token path's statements (app/state/autocommit.py) have a pool of the same size.
            held += [executor.engine.connect(), executor.engine.connect()]
        try:
            started = time.monotonic()
            assert_oauth_503(
                http.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, secret))
            )
            assert_problem_503(http.get("/api/v1/clients", headers=admin))
            assert time.monotonic() - started < 3
        finally:
            for conn in held:
                conn.close()
    assert (
        http.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, secret)).status_code == 200
    )


# --- Redis down with REDIS_URL set --------------------------------------------


def test_redis_down_rate_limits_fail_open(redis_down_app, factory, caplog, monkeypatch):
    cid, secret = factory.client()
    http = redis_down_app.test_client()
    # `flask db upgrade` in this process (the session fixture) runs Alembic's
    # fileConfig, which disables loggers that already exist.
    monkeypatch.setattr(logging.getLogger("app.state.failures"), "disabled", False)
    with caplog.at_level(logging.WARNING, logger="app.state.failures"):
        statuses = [
            http.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, f"w{i}")).status_code
            for i in range(30)
        ]
    # Past the limit of 20, yet no 429 (fail open) and no 500.
    assert statuses == [401] * 30
    assert any("rate limits off" in r.getMessage() for r in caplog.records)
    assert (
        http.post("/oauth2/token", data=TOKEN, headers=basic_auth(cid, secret)).status_code == 200
    )


def assert_shared_state_503(response, mimetype: str) -> None:
    """The fail-closed answer of app.state.jti: 503, retry in a second, never cached."""
    assert response.status_code == 503, response.get_data()[:300]
    assert response.mimetype == mimetype
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Cache-Control"] == "no-store"


def test_redis_down_revocation_checks_fail_closed(redis_down_app, factory):
    """Neither the deny-list's reads nor its writes pretend to work without Redis."""
    cid, secret = factory.client()
    token = factory.token(cid, secret)["access_token"]
    http = redis_down_app.test_client()

    # Cannot tell whether the token was revoked: never an introspection answer,
    # active or not (RFC 6749 §5.2 shape, no "active" member).
    response = http.post(
        "/oauth2/introspect", data={"token": token}, headers=basic_auth(cid, secret)
    )
    assert_shared_state_503(response, "application/json")
    assert set(response.get_json()) == {"error", "error_description"}
    assert response.get_json()["error"] == "temporarily_unavailable"

    # The management API cannot check its bearer token either: refused, not served.
    admin_id, admin_secret = factory.admin("system")
    admin_token = factory.token(admin_id, admin_secret)["access_token"]
    api = http.get("/api/v1/clients", headers={"Authorization": f"Bearer {admin_token}"})
    assert_shared_state_503(api, "application/problem+json")
    problem = api.get_json()
    assert problem["status"] == 503
    assert problem["code"] == "service_unavailable"
    assert {"type", "title", "detail"} <= set(problem)

    # A revocation that cannot be recorded is not confirmed: a 200 here would
    # tell the client its token is dead while it stays usable (fail open).
    revoke = http.post("/oauth2/revoke", data={"token": token}, headers=basic_auth(cid, secret))
    assert_shared_state_503(revoke, "application/json")
    assert revoke.get_json()["error"] == "temporarily_unavailable"
