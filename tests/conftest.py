"""Shared fixtures: a migrated database (SQLite, or PostgreSQL from DATABASE_URL),
a fresh app per test with emptied tables and new signing keys, and helpers.

Integration tests throughout: real database, real crypto, HTTP through
Flask's test client.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

from app import create_app  # noqa: E402
from app.clients.resource_servers import (  # noqa: E402
    built_in_audiences,
    create_resource_server,
)
from app.clients.service import create_client  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import ResourceServer  # noqa: E402
from app.runtime import runtime  # noqa: E402
from app.settings import ENVIRONMENT_VARIABLES  # noqa: E402
from app.signing import keys as keys_service  # noqa: E402

TEST_PEPPER = "test-pepper-not-for-production-0123456789"
ISSUER = "http://localhost:5000"


def _database_url(tmp_path_factory) -> str:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgresql"):
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    return _database_url(tmp_path_factory)


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def base_config(database_url, keys_dir) -> dict:
    return {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "KEYS_DIR": keys_dir,
        "KEYS_PASSPHRASE": None,
        "SECRET_PEPPER": TEST_PEPPER,
        "ISSUER": ISSUER,
        "SIGNING_ALG": "ES256",
        "REDIS_URL": os.environ.get("TEST_REDIS_URL") or None,
        "DEFAULT_AUDIENCE": None,
        "MANAGEMENT_AUDIENCE": None,
    }


@pytest.fixture(scope="session")
def migrated(base_config) -> str:
    """Bring the test database to head once per session, from migrations only."""
    from flask_migrate import upgrade

    url = base_config["SQLALCHEMY_DATABASE_URI"]
    if url.startswith("postgresql"):
        # Start from nothing so the revisions, not leftovers, make the schema,
        # and before create_app, which checks the pepper against what an
        # earlier session left behind.
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        engine.dispose()
    app = create_app(dict(base_config))
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return base_config["SQLALCHEMY_DATABASE_URI"]


def empty_tables() -> None:
    with db.engine.begin() as conn:
        for table in reversed(db.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch):
    """Keep tests independent of the developer's shell: create_app reads the
    environment when it runs, so every setting's variable is removed.

    DATABASE_URL stays: it picks the test database (see database_url), and
    every app the tests build names its database in the overrides.
    """
    for name in ENVIRONMENT_VARIABLES:
        if name != "DATABASE_URL":
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def app_config(base_config, migrated) -> dict:
    """Override per test module to change configuration."""
    return dict(base_config)


@pytest.fixture
def app(app_config) -> Iterator:
    app = create_app(app_config)
    with app.app_context():
        empty_tables()
        keys_service.init_keys(
            app.config["SIGNING_ALG"],
            app.config["KEYS_DIR"],
            app.config["KEYS_PASSPHRASE"],
        )
        db.session.commit()
        runtime().keyring.invalidate()
        redis = runtime().redis
        if redis is not None:
            redis.flushdb()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_app(app_config, app):
    """Other instances on the same database (and Redis), with config overrides.

    Each has its own caches, key ring and rate-limit feed; its pools are
    closed (and its feed stopped) after the test.
    """
    made = []

    def make(**overrides):
        extra = create_app({**app_config, **overrides})
        made.append(extra)
        return extra

    yield make
    for extra in made:
        with extra.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_wsgi(wsgi_app, port: int) -> Iterator[str]:
    """Serve a WSGI app on 127.0.0.1:port in a thread; yields its base URL."""
    server = make_server("127.0.0.1", port, wsgi_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


# The app served on loopback at the address its ISSUER names, as a deployment
# is: for tests whose clients (the examples, the README's shell, a browser)
# reach it over HTTP. A module opts in with an `app_config` that returns
# `live_config` (with its own additions) and asks for `live_url`.
@pytest.fixture
def live_port() -> int:
    return free_port()


@pytest.fixture
def live_config(base_config, migrated, live_port) -> dict:
    return {**base_config, "ISSUER": f"http://127.0.0.1:{live_port}"}


@pytest.fixture
def live_url(app, live_port) -> Iterator[str]:
    yield from serve_wsgi(app, live_port)


def basic_auth(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


class Factory:
    """Creates clients through the service layer and gets tokens through HTTP."""

    def __init__(self, app, http):
        self.app = app
        self.http = http

    def client(self, account_id: str = "acme", **fields) -> tuple[str, str]:
        """Create a client; returns (client_id, secret)."""
        fields.setdefault("name", f"client-{os.urandom(4).hex()}")
        with self.app.app_context():
            # Audiences must be resource servers of the account (docs/api.md
            # §2.1): register those a test names that exist nowhere yet.
            for audience in fields.get("audiences", ()):
                if audience not in built_in_audiences() and not db.session.scalar(
                    sa.select(ResourceServer.id).where(ResourceServer.identifier == audience)
                ):
                    self.resource_server(account_id, audience)
            created, _secret, plaintext = create_client(
                account_id, fields, "test", runtime().pepper
            )
            db.session.commit()
            return created.id, plaintext

    def resource_server(self, account_id: str = "acme", identifier: str | None = None, **fields):
        """Register a resource server through the service layer; returns its id."""
        identifier = identifier or f"https://api-{os.urandom(4).hex()}.example"
        fields.setdefault("name", identifier[:200])
        with self.app.app_context():
            rs = create_resource_server(
                account_id,
                {"identifier": identifier, **fields},
                "test",
                caller_is_system=account_id == "system",
            )
            db.session.commit()
            return rs.id

    def admin(self, account_id: str = "system", scopes=None) -> tuple[str, str]:
        from app.clients.service import ACCOUNT_MANAGEMENT_SCOPES, MANAGEMENT_SCOPES

        if scopes is None:
            scopes = MANAGEMENT_SCOPES if account_id == "system" else ACCOUNT_MANAGEMENT_SCOPES
        return self.client(
            account_id,
            client_type="admin",
            scopes=list(scopes),
            audiences=[self.app.config["MANAGEMENT_AUDIENCE"]],
        )

    def token(self, client_id: str, secret: str, **params) -> dict:
        """A token response body; asserts success."""
        response = self.http.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", **params},
            headers=basic_auth(client_id, secret),
        )
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def admin_headers(self, account_id: str = "system", scopes=None) -> dict[str, str]:
        """Authorization headers of a fresh admin client of the account."""
        cid, secret = self.admin(account_id, scopes)
        token = self.token(cid, secret)["access_token"]
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def factory(app, client) -> Factory:
    return Factory(app, client)


@contextmanager
def scratch_database(directory) -> Iterator[str]:
    """A fresh empty database: a new PostgreSQL one if DATABASE_URL is PostgreSQL."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgresql"):
        yield f"sqlite:///{directory / 'scratch.db'}"
        return
    import uuid

    base = sa.make_url(url)
    name = f"{base.database}_scratch_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def scratch_database_url(tmp_path) -> Iterator[str]:
    with scratch_database(tmp_path) as url:
        yield url


# Tests that run once per shared-state backend (database, Redis).
@pytest.fixture(params=["database", "redis"])
def backend(request) -> str:
    """Where shared state lives; Redis cases need TEST_REDIS_URL."""
    if request.param == "redis" and not os.environ.get("TEST_REDIS_URL"):
        pytest.skip("TEST_REDIS_URL is not set")
    return request.param


@pytest.fixture
def backend_config(base_config, migrated, backend) -> dict:
    """The base configuration with REDIS_URL set for the Redis backend only."""
    redis_url = os.environ.get("TEST_REDIS_URL") if backend == "redis" else None
    return {**base_config, "REDIS_URL": redis_url}
