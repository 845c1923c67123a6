"""Integration: the Alembic revisions build, drop and rebuild the schema on an empty database.

Runs on a fresh SQLite file always, and on a scratch PostgreSQL database (created and
dropped here, never the shared test database) when DATABASE_URL is PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from app import create_app
from app.clients.hashing import generate_secret, hash_secret
from app.extensions import db
from app.models import ResourceServer
from app.runtime import runtime
from app.signing import keys as keys_service
from tests.conftest import TEST_PEPPER, basic_auth

ROOT = Path(__file__).resolve().parent.parent
TABLES = {
    "clients",
    "client_secrets",
    "client_keys",
    "signing_keys",
    "audit_events",
    "revoked_tokens",
    "used_assertions",
    "auth_failures",
    "server_settings",
    "resource_servers",
    "console_sessions",
    "federated_credentials",
}


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'migrate.db'}"


def _app(url: str, tmp_path: Path):
    return create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": url,
            "KEYS_DIR": str(tmp_path / "keys"),
            "SECRET_PEPPER": TEST_PEPPER,
            "REDIS_URL": None,
        }
    )


def _tables() -> set[str]:
    return set(sa.inspect(db.engine).get_table_names()) - {"alembic_version"}


def _check_round_trip(url: str, tmp_path: Path) -> None:
    app = _app(url, tmp_path)
    with app.app_context():
        try:
            assert _tables() == set()
            upgrade()
            assert _tables() == TABLES
            inspector = sa.inspect(db.engine)
            uniques = {
                tuple(u["column_names"]) for u in inspector.get_unique_constraints("clients")
            }
            uniques |= {
                tuple(i["column_names"]) for i in inspector.get_indexes("clients") if i["unique"]
            }
            assert ("account_id", "name") in uniques
            secret_columns = {c["name"] for c in inspector.get_columns("client_secrets")}
            assert {"secret_hash", "expires_at", "last_used_at", "description"} <= secret_columns
            # The revisions and the models describe the same schema.
            with db.engine.connect() as conn:
                diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
            assert diff == [], diff

            downgrade(revision="base")
            db.session.remove()
            assert _tables() == set()

            upgrade()
            assert _tables() == TABLES
            upgrade()  # safe to run twice
            assert _tables() == TABLES
        finally:
            db.session.remove()
            db.engine.dispose()


def test_upgrade_downgrade_upgrade_sqlite(tmp_path):
    _check_round_trip(_sqlite_url(tmp_path), tmp_path)


def test_upgrade_downgrade_upgrade_postgresql(scratch_database_url, tmp_path):
    if not scratch_database_url.startswith("postgresql"):
        pytest.skip("DATABASE_URL is not PostgreSQL")
    _check_round_trip(scratch_database_url, tmp_path)


def test_single_head():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def test_flask_db_upgrade_command_twice(tmp_path):
    """`flask --app wsgi db upgrade` as an operator runs it, on an empty SQLite file."""
    env = {
        **os.environ,
        "DATABASE_URL": _sqlite_url(tmp_path),
        "KEYS_DIR": str(tmp_path / "keys"),
        "SECRET_PEPPER": TEST_PEPPER,
    }
    env.pop("REDIS_URL", None)
    flask = [sys.executable, "-m", "flask", "--app", "wsgi", "db"]
    for _ in range(2):
        done = subprocess.run(
            [*flask, "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
    engine = sa.create_engine(env["DATABASE_URL"])
    try:
        assert set(sa.inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def _revision_before(revision: str) -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    down = ScriptDirectory.from_config(config).get_revision(revision).down_revision
    assert isinstance(down, str)
    return down


def _check_allowed_auth_methods_keeps_data(url: str, tmp_path: Path) -> None:
    """Revision 0004 on a database with a client in it: the client and its values stay."""
    app = _app(url, tmp_path)
    before = _revision_before("0004")
    with app.app_context():
        try:
            upgrade(revision=before)
            db.session.execute(
                sa.text(
                    "INSERT INTO clients (id, account_id, name, friendly_name, tags, client_type,"
                    " scopes, audiences, access_token_ttl, locked, disabled, version, created_at,"
                    " updated_at) VALUES ('c1', 'acme', 'old', 'Old', '[\"t\"]', 'standard',"
                    " '[\"read\"]', '[]', 600, false, false, 3, :now, :now)"
                ),
                {"now": "2026-01-01 00:00:00+00:00"},
            )
            db.session.commit()
            upgrade(revision="0004")
            row = db.session.execute(
                sa.text(
                    "SELECT name, scopes, access_token_ttl, version, allowed_auth_methods"
                    " FROM clients WHERE id = 'c1'"
                )
            ).one()
            assert row[0] == "old" and row[2] == 600 and row[3] == 3
            assert row[4] is None  # any method, as before
            db.session.commit()
            downgrade(revision=before)
            db.session.remove()
            columns = {c["name"] for c in sa.inspect(db.engine).get_columns("clients")}
            assert "allowed_auth_methods" not in columns
            name = db.session.execute(sa.text("SELECT name FROM clients WHERE id = 'c1'")).scalar()
            assert name == "old"
        finally:
            db.session.remove()
            db.engine.dispose()


def test_allowed_auth_methods_revision_keeps_data_sqlite(tmp_path):
    _check_allowed_auth_methods_keeps_data(_sqlite_url(tmp_path), tmp_path)


def test_allowed_auth_methods_revision_keeps_data_postgresql(scratch_database_url, tmp_path):
    if not scratch_database_url.startswith("postgresql"):
        pytest.skip("DATABASE_URL is not PostgreSQL")
    _check_allowed_auth_methods_keeps_data(scratch_database_url, tmp_path)


# --- 0003: the audiences existing clients list become resource servers --------------------------


def _insert_client(conn, account_id, name, audiences, scopes, ttl, pepper):
    now = datetime.now(UTC)
    if conn.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    cid, secret = str(uuid.uuid4()), generate_secret()
    conn.execute(
        sa.text(
            "INSERT INTO clients (id, account_id, name, friendly_name, tags, client_type,"
            " scopes, audiences, access_token_ttl, locked, disabled, version, created_at,"
            " updated_at) VALUES (:id, :account, :name, :name, '[]', 'standard', :scopes,"
            " :audiences, :ttl, false, false, 1, :now, :now)"
        ),
        {
            "id": cid,
            "account": account_id,
            "name": name,
            "scopes": json.dumps(scopes),
            "audiences": json.dumps(audiences),
            "ttl": ttl,
            "now": now,
        },
    )
    conn.execute(
        sa.text(
            "INSERT INTO client_secrets (id, client_id, secret_hash, hint, created_at)"
            " VALUES (:id, :cid, :hash, :hint, :now)"
        ),
        {
            "id": str(uuid.uuid4()),
            "cid": cid,
            "hash": hash_secret(secret, pepper),
            "hint": secret[-4:],
            "now": now,
        },
    )
    return cid, secret


def _check_audiences_become_resource_servers(url: str, tmp_path: Path) -> None:
    app = _app(url, tmp_path)
    with app.app_context():
        try:
            upgrade(revision="0002")
            management = app.config["MANAGEMENT_AUDIENCE"]
            default = app.config["DEFAULT_AUDIENCE"]
            pepper = runtime().pepper
            with db.engine.begin() as conn:
                made = {
                    "acme": _insert_client(
                        conn,
                        "acme",
                        "a",
                        ["https://a.example", "https://both.example"],
                        ["read", "write"],
                        600,
                        pepper,
                    ),
                    "globex": _insert_client(
                        conn, "globex", "g", ["https://both.example"], ["read"], 900, pepper
                    ),
                    "acme2": _insert_client(
                        conn, "acme", "a2", ["https://a.example"], [], 3600, pepper
                    ),
                    "builtin": _insert_client(conn, "acme", "b", [default], ["x"], 3600, pepper),
                    "none": _insert_client(conn, "globex", "n", [], ["y"], 120, pepper),
                    "admin": _insert_client(conn, "system", "adm", [management], [], 3600, pepper),
                }
            upgrade()
            servers = {
                rs.identifier: (rs.account_id, rs.shared, rs.scopes, rs.access_token_ttl)
                for rs in db.session.scalars(sa.select(ResourceServer))
            }
            assert servers == {
                "https://a.example": ("acme", False, [], None),
                "https://both.example": ("system", True, [], None),
            }
            # Revisions 0005 and 0007 give the existing clients no cut-off, no
            # binding requirement, no certificate rule and no profile.
            later = db.session.execute(
                sa.text(
                    "SELECT tokens_valid_after, dpop_bound_access_tokens, "
                    "tls_client_certificate_bound_access_tokens, tls_client_auth_subject_dn, "
                    "tls_client_auth_san_dns, security_profile FROM clients"
                )
            ).all()
            assert len(later) == 6
            assert {tuple(row) for row in later} == {(None, False, False, None, None, None)}
            db.session.remove()

            # Every client gets the token it got before: its first audience (or
            # the default), all its scopes, its own lifetime.
            keys_service.init_keys(
                app.config["SIGNING_ALG"], app.config["KEYS_DIR"], app.config["KEYS_PASSPHRASE"]
            )
            db.session.commit()
            runtime().keyring.invalidate()
            http = app.test_client()
            expected = {
                "acme": ("https://a.example", "read write", 600),
                "globex": ("https://both.example", "read", 900),
                "acme2": ("https://a.example", "", 3600),
                "builtin": (default, "x", 3600),
                "none": (default, "y", 120),
            }
            for key, (aud, scope, ttl) in expected.items():
                cid, secret = made[key]
                response = http.post(
                    "/oauth2/token",
                    data={"grant_type": "client_credentials"},
                    headers=basic_auth(cid, secret),
                )
                assert response.status_code == 200, (key, response.get_json())
                body = response.get_json()
                claims = jwt.decode(body["access_token"], options={"verify_signature": False})
                assert (claims["aud"], claims["scope"], body["expires_in"]) == (aud, scope, ttl)
            cid, secret = made["acme"]
            both = http.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials", "resource": "https://both.example"},
                headers=basic_auth(cid, secret),
            )
            assert both.status_code == 200

            downgrade(revision="0004")
            db.session.remove()
            assert "resource_servers" not in _tables()
            assert db.session.execute(sa.text("SELECT count(*) FROM clients")).scalar() == 6
        finally:
            db.session.remove()
            db.engine.dispose()


def test_audiences_become_resource_servers_sqlite(tmp_path):
    _check_audiences_become_resource_servers(_sqlite_url(tmp_path), tmp_path)


def test_audiences_become_resource_servers_postgresql(scratch_database_url, tmp_path):
    if not scratch_database_url.startswith("postgresql"):
        pytest.skip("DATABASE_URL is not PostgreSQL")
    _check_audiences_become_resource_servers(scratch_database_url, tmp_path)


# --- 0008: federated credentials -------------------------------------------------------------


def _insert_credential(conn, fid: str, client_id: str, name: str, **values) -> None:
    row = {
        "id": fid,
        "client_id": client_id,
        "name": name,
        "issuer": "https://token.actions.githubusercontent.com",
        "subject": "repo:acme/billing:ref:refs/heads/main",
        "subject_pattern": None,
        "claims": json.dumps({"repository_owner": "acme"}),
        "audience": "http://localhost:5000",
        "jwks_uri": None,
        "jwks": None,
        "max_token_age": 3600,
        "single_use": False,
        "created_at": "2026-12-01 00:00:00+00:00",
        **values,
    }
    conn.execute(
        sa.text(
            "INSERT INTO federated_credentials (id, client_id, name, issuer, subject,"
            " subject_pattern, claims, audience, jwks_uri, jwks, max_token_age, single_use,"
            " created_at) VALUES (:id, :client_id, :name, :issuer, :subject, :subject_pattern,"
            " :claims, :audience, :jwks_uri, :jwks, :max_token_age, :single_use, :created_at)"
        ),
        row,
    )


def _check_federated_credentials_revision(url: str, tmp_path: Path) -> None:
    """Revision 0008 on a database with clients: the table, its rules, and back down."""
    app = _app(url, tmp_path)
    with app.app_context():
        try:
            upgrade(revision="0007")
            with db.engine.begin() as conn:
                cid, _ = _insert_client(conn, "acme", "ci", [], ["read"], 600, runtime().pepper)
            upgrade(revision="0008")
            with db.engine.begin() as conn:
                _insert_credential(conn, "f1", cid, "github")
                _insert_credential(
                    conn, "f2", cid, "k8s", subject=None, subject_pattern="system:serviceaccount:*"
                )
            refused = [
                # Both a subject and a pattern, or neither.
                {"subject_pattern": "repo:*"},
                {"subject": None},
                # max_token_age outside 60..86400.
                {"max_token_age": 59},
                {"max_token_age": 86401},
                # The same name twice for one client.
                {"name": "github"},
                # A client that does not exist.
                {"client_id": "nobody"},
            ]
            for values in refused:
                name = values.pop("name", "other")
                with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
                    if conn.dialect.name == "sqlite":
                        conn.execute(sa.text("PRAGMA foreign_keys = ON"))
                    _insert_credential(conn, "f9", values.pop("client_id", cid), name, **values)
            rows = db.session.execute(
                sa.text("SELECT id, name, claims FROM federated_credentials ORDER BY id")
            ).all()
            assert [(r[0], r[1]) for r in rows] == [("f1", "github"), ("f2", "k8s")]
            claims = rows[0][2] if isinstance(rows[0][2], dict) else json.loads(rows[0][2])
            assert claims == {"repository_owner": "acme"}
            db.session.remove()
            if db.engine.dialect.name == "postgresql":
                # ON DELETE CASCADE: a client's credentials go with it.
                with db.engine.begin() as conn:
                    conn.execute(sa.text("DELETE FROM clients WHERE id = :id"), {"id": cid})
                    left = conn.execute(sa.text("SELECT count(*) FROM federated_credentials"))
                    assert left.scalar() == 0
                    cid, _ = _insert_client(conn, "acme", "ci", [], ["read"], 600, runtime().pepper)
                    _insert_credential(conn, "f1", cid, "github")

            downgrade(revision="0007")
            db.session.remove()
            assert "federated_credentials" not in _tables()
            assert db.session.execute(sa.text("SELECT name FROM clients")).scalar() == "ci"
            db.session.remove()
            upgrade()
            assert "federated_credentials" in _tables()
        finally:
            db.session.remove()
            db.engine.dispose()


def test_federated_credentials_revision_sqlite(tmp_path):
    _check_federated_credentials_revision(_sqlite_url(tmp_path), tmp_path)


def test_federated_credentials_revision_postgresql(scratch_database_url, tmp_path):
    if not scratch_database_url.startswith("postgresql"):
        pytest.skip("DATABASE_URL is not PostgreSQL")
    _check_federated_credentials_revision(scratch_database_url, tmp_path)
