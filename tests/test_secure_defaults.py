"""Integration: secure defaults at start (docs/security.md#files-and-modes, #the-pepper).

File modes of KEYS_DIR, the pepper, the PEMs and a SQLite database; the warning
without KEYS_PASSPHRASE; the pepper's fingerprint in the database and the
refusal to start with another pepper or to replace a lost one; the shortest
SECRET_PEPPER. Real files, real crypto, a real database (SQLite, or a scratch
PostgreSQL database when DATABASE_URL is PostgreSQL); the CLI as operators run
it (a `flask` subprocess) where that is how the behaviour is met.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app import create_app
from app.clients.hashing import FINGERPRINT_LABEL, pepper_fingerprint
from app.clients.pepper import PepperError
from app.clients.service import create_client
from app.extensions import db
from app.models import PEPPER_FINGERPRINT, Client, ClientSecret, ServerSetting
from app.runtime import runtime
from app.settings import ENVIRONMENT_VARIABLES, SettingsError, build_settings
from tests.conftest import TEST_PEPPER

ROOT = Path(__file__).resolve().parent.parent
OTHER_PEPPER = "another-pepper-of-more-than-32-bytes-0123"
CLOSED_PORT_DB = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`flask --app wsgi ARGS` as an operator runs it, under the usual umask 022."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        umask=0o022,
    )


def operator_env(database_url: str, keys_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT_VARIABLES}
    env.update(DATABASE_URL=database_url, KEYS_DIR=str(keys_dir), **extra)
    return env


def config(database_url: str, keys_dir: Path, **overrides) -> dict:
    return {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "KEYS_DIR": str(keys_dir),
        "SECRET_PEPPER": TEST_PEPPER,
        "REDIS_URL": None,
        **overrides,
    }


def started(settings: dict):
    """create_app, with its engine closed again when the test is done with it."""
    app = create_app(settings)
    with app.app_context():
        db.engine.dispose()
    return app


def migrate(database_url: str, keys_dir: Path, revision: str = "head", **overrides) -> None:
    app = create_app(config(database_url, keys_dir, **overrides))
    with app.app_context():
        upgrade(revision=revision)
        db.session.remove()
        db.engine.dispose()


def stored_fingerprint(app) -> str | None:
    with app.app_context():
        try:
            return db.session.scalar(
                sa.select(ServerSetting.value).where(ServerSetting.name == PEPPER_FINGERPRINT)
            )
        finally:
            db.session.remove()
            db.engine.dispose()


def add_client_on_the_first_schema(app) -> str:
    """A client and a secret written with revision 0001's columns only.

    The ORM models carry the newest schema's columns, so they cannot write
    a database that an older revision made.
    """
    client_id = f"old-{os.urandom(3).hex()}"
    now = "2026-01-01 00:00:00+00:00"
    with app.app_context():
        db.session.execute(
            sa.text(
                "INSERT INTO clients (id, account_id, name, friendly_name, tags, client_type,"
                " scopes, audiences, access_token_ttl, locked, disabled, version, created_at,"
                " updated_at) VALUES (:id, 'acme', :id, :id, '[]', 'standard', '[]', '[]',"
                " 3600, false, false, 1, :now, :now)"
            ),
            {"id": client_id, "now": now},
        )
        db.session.execute(
            sa.text(
                "INSERT INTO client_secrets (id, client_id, secret_hash, hint, created_at)"
                " VALUES (:sid, :id, :hash, 'abcd', :now)"
            ),
            {"sid": f"s-{client_id}", "id": client_id, "hash": "0" * 64, "now": now},
        )
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return client_id


def add_client_with_secret(app) -> str:
    with app.app_context():
        client, _secret, _plaintext = create_client(
            "acme", {"name": f"c-{os.urandom(3).hex()}"}, "test", runtime().pepper
        )
        db.session.commit()
        client_id = client.id
        db.session.remove()
        db.engine.dispose()
    return client_id


# --- files and modes ------------------------------------------------------------------------


def test_cli_makes_keys_dir_0700_and_database_pepper_and_keys_0600(tmp_path):
    """A first `db upgrade` and `keys init` under umask 022 leave nothing readable to others."""
    keys_dir = tmp_path / "keys"
    database = tmp_path / "ccserver.db"
    env = operator_env(f"sqlite:///{database}", keys_dir)
    for args in (["db", "upgrade"], ["keys", "init"]):
        done = flask(env, *args)
        assert done.returncode == 0, done.stderr
    assert mode(database) == 0o600
    assert mode(keys_dir) == 0o700
    assert mode(keys_dir / "pepper") == 0o600
    pems = list(keys_dir.glob("*.pem"))
    assert len(pems) == 2
    assert {mode(pem) for pem in pems} == {0o600}
    # Nothing was looser, so nothing was tightened.
    assert "tightened" not in done.stderr


def test_looser_modes_are_tightened_at_start_with_a_warning(tmp_path):
    keys_dir = tmp_path / "keys"
    database = tmp_path / "ccserver.db"
    env = operator_env(f"sqlite:///{database}", keys_dir)
    for args in (["db", "upgrade"], ["keys", "init"]):
        assert flask(env, *args).returncode == 0
    pem = next(keys_dir.glob("*.pem"))
    pepper = (keys_dir / "pepper").read_text().strip()
    # What a copy with `cp -r`, an archive or a careless chmod leaves behind.
    os.chmod(keys_dir, 0o755)
    os.chmod(keys_dir / "pepper", 0o644)
    os.chmod(pem, 0o640)
    os.chmod(database, 0o644)

    done = flask(env, "keys", "list")
    assert done.returncode == 0, done.stderr
    assert mode(keys_dir) == 0o700
    assert mode(keys_dir / "pepper") == 0o600
    assert mode(pem) == 0o600
    assert mode(database) == 0o600
    for path, before, after in (
        (keys_dir, "0755", "0700"),
        (keys_dir / "pepper", "0644", "0600"),
        (pem, "0640", "0600"),
        (database, "0644", "0600"),
    ):
        assert f"{path} {before} -> {after}" in done.stderr
    assert "KEYS_DIR was readable by group or other; tightened" in done.stderr
    assert pepper not in done.stderr + done.stdout

    again = flask(env, "keys", "list")
    assert again.returncode == 0 and "tightened" not in again.stderr


def test_create_app_makes_a_new_sqlite_file_0600_whatever_the_umask(tmp_path):
    database = tmp_path / "sub" / "fresh.db"
    old = os.umask(0o002)
    try:
        app = started(config(f"sqlite:///{database}", tmp_path / "keys"))
    finally:
        os.umask(old)
    assert mode(database) == 0o600
    with app.app_context():
        upgrade()
        db.session.remove()
        db.engine.dispose()
    assert mode(database) == 0o600


def test_a_relative_sqlite_path_lives_under_the_instance_folder(tmp_path):
    """Flask-SQLAlchemy reads a relative SQLite path under the instance folder; so do we."""
    name = f"relative-{os.urandom(4).hex()}.db"
    app = started(config(f"sqlite:///{name}", tmp_path / "keys"))
    made = Path(app.instance_path) / name
    try:
        assert mode(made) == 0o600
        assert not (Path.cwd() / name).exists()
    finally:
        made.unlink(missing_ok=True)


# --- KEYS_PASSPHRASE ------------------------------------------------------------------------


def production(database_url, keys_dir: Path, **overrides) -> dict:
    return config(database_url, keys_dir, TESTING=False, **overrides)


def test_every_start_without_keys_passphrase_warns(migrated, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        app = started(production(migrated, tmp_path / "keys"))
    warnings = [r for r in caplog.records if "KEYS_PASSPHRASE is not set" in r.getMessage()]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING for r in warnings)
    assert str(tmp_path / "keys") in warnings[0].getMessage()
    # Never a secret: not the pepper, not the Flask key derived from it.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert TEST_PEPPER not in logged
    assert app.config["SECRET_KEY"] not in logged


def test_a_start_with_keys_passphrase_does_not_warn_nor_log_it(migrated, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    started(production(migrated, tmp_path / "keys", KEYS_PASSPHRASE="a-long-passphrase-1234"))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "KEYS_PASSPHRASE is not set" not in logged
    assert "a-long-passphrase-1234" not in logged
    assert TEST_PEPPER not in logged


# --- the pepper's fingerprint ---------------------------------------------------------------


def test_first_start_stores_a_fingerprint_that_is_not_the_pepper(scratch_database_url, tmp_path):
    migrate(scratch_database_url, tmp_path / "keys")
    app = started(config(scratch_database_url, tmp_path / "keys"))
    stored = stored_fingerprint(app)
    pepper = TEST_PEPPER.encode()
    assert stored == hmac.new(pepper, FINGERPRINT_LABEL, hashlib.sha256).hexdigest()
    assert stored == pepper_fingerprint(pepper)
    assert stored != hashlib.sha256(pepper).hexdigest()
    assert TEST_PEPPER not in stored and pepper.hex() not in stored
    # Later starts with the same pepper find it and change nothing.
    assert stored_fingerprint(started(config(scratch_database_url, tmp_path / "keys"))) == stored


def test_a_start_with_another_pepper_is_refused_in_one_line(scratch_database_url, tmp_path):
    migrate(scratch_database_url, tmp_path / "keys")
    add_client_with_secret(started(config(scratch_database_url, tmp_path / "keys")))
    with pytest.raises(PepperError) as refused:
        create_app(config(scratch_database_url, tmp_path / "keys", SECRET_PEPPER=OTHER_PEPPER))
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("refusing to start: SECRET_PEPPER is not the pepper")
    assert "server_settings" in message
    assert OTHER_PEPPER not in message and TEST_PEPPER not in message
    # A SettingsError, like any other setting the server cannot run with.
    assert isinstance(refused.value, SettingsError)
    # The right pepper still starts.
    started(config(scratch_database_url, tmp_path / "keys"))


def test_the_cli_refuses_another_pepper(scratch_database_url, tmp_path):
    keys_dir = tmp_path / "keys"
    env = operator_env(scratch_database_url, keys_dir, SECRET_PEPPER=TEST_PEPPER)
    for args in (["db", "upgrade"], ["keys", "init"]):
        assert flask(env, *args).returncode == 0
    done = flask({**env, "SECRET_PEPPER": OTHER_PEPPER}, "keys", "list")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "refusing to start: SECRET_PEPPER is not the pepper" in last
    assert OTHER_PEPPER not in done.stderr and TEST_PEPPER not in done.stderr


def test_a_lost_pepper_file_is_not_replaced_while_secrets_exist(scratch_database_url, tmp_path):
    """The issue's operator: the pepper file is gone, client secrets are not."""
    keys_dir = tmp_path / "keys"
    env = operator_env(scratch_database_url, keys_dir)
    for args in (["db", "upgrade"], ["keys", "init"]):
        assert flask(env, *args).returncode == 0
    made = flask(env, "admin", "create", "--account", "acme", "--name", "ops", "--json")
    assert made.returncode == 0, made.stderr
    (keys_dir / "pepper").unlink()

    done = flask(env, "keys", "list")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert f"refusing to start: {keys_dir / 'pepper'} is missing" in last
    assert "client secrets" in last
    assert not (keys_dir / "pepper").exists()


def test_a_lost_pepper_file_is_not_replaced_once_a_fingerprint_exists(
    scratch_database_url, tmp_path
):
    keys_dir = tmp_path / "keys"
    migrate(scratch_database_url, keys_dir, SECRET_PEPPER=None)
    app = started(config(scratch_database_url, keys_dir, SECRET_PEPPER=None))
    assert (keys_dir / "pepper").is_file()
    assert stored_fingerprint(app) == pepper_fingerprint((keys_dir / "pepper").read_bytes().strip())
    (keys_dir / "pepper").unlink()
    with pytest.raises(PepperError, match="is missing"):
        create_app(config(scratch_database_url, keys_dir, SECRET_PEPPER=None))
    assert not (keys_dir / "pepper").exists()


def test_a_pepper_file_is_made_on_a_fresh_database_only(scratch_database_url, tmp_path):
    keys_dir = tmp_path / "keys"
    started(config(scratch_database_url, keys_dir, SECRET_PEPPER=None))
    assert mode(keys_dir / "pepper") == 0o600 and mode(keys_dir) == 0o700


def test_no_pepper_file_is_made_while_the_database_cannot_be_reached(tmp_path):
    keys_dir = tmp_path / "keys"
    with pytest.raises(
        PepperError, match="^DATABASE_URL: cannot connect.*pepper file .* is missing"
    ):
        create_app(config(CLOSED_PORT_DB, keys_dir, SECRET_PEPPER=None))
    assert not (keys_dir / "pepper").exists()


def test_a_configured_pepper_starts_while_the_database_is_down(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    app = started(config(CLOSED_PORT_DB, tmp_path / "keys"))
    assert app.test_client().get("/readyz").status_code == 503
    assert any("pepper was not checked" in r.getMessage() for r in caplog.records)


def test_upgrade_to_the_fingerprint_table_keeps_data_and_downgrades(scratch_database_url, tmp_path):
    keys_dir = tmp_path / "keys"
    migrate(scratch_database_url, keys_dir, revision="0001")
    # An app on the old schema (no server_settings table) starts and works.
    client_id = add_client_on_the_first_schema(started(config(scratch_database_url, keys_dir)))

    migrate(scratch_database_url, keys_dir)
    app = started(config(scratch_database_url, keys_dir))
    assert stored_fingerprint(app) == pepper_fingerprint(TEST_PEPPER.encode())
    with app.app_context():
        assert db.session.scalar(sa.select(Client.id).where(Client.id == client_id)) == client_id
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ClientSecret)) == 1
        # End the read's transaction: a downgrade that alters `clients` waits for it.
        db.session.remove()
        downgrade(revision="0001")
        db.session.remove()
        tables = set(sa.inspect(db.engine).get_table_names())
        assert "server_settings" not in tables
        assert db.session.scalar(sa.select(Client.id).where(Client.id == client_id)) == client_id
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ClientSecret)) == 1
        db.session.remove()
        db.engine.dispose()


# --- the shortest pepper --------------------------------------------------------------------


@pytest.mark.parametrize("pepper", ["x" * 31, "é" * 15 + "x"])
def test_secret_pepper_under_32_bytes_is_refused_without_echoing_it(pepper):
    with pytest.raises(SettingsError) as refused:
        build_settings({"SECRET_PEPPER": pepper})
    message = str(refused.value)
    assert "SECRET_PEPPER: must be at least 32 bytes" in message
    assert pepper not in message


def test_secret_pepper_of_32_bytes_is_accepted():
    assert build_settings({"SECRET_PEPPER": "x" * 32}).secret_pepper == "x" * 32
    assert build_settings({"SECRET_PEPPER": "é" * 16}).secret_pepper == "é" * 16


def test_the_cli_refuses_a_short_secret_pepper(tmp_path):
    env = operator_env(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "keys")
    done = flask({**env, "SECRET_PEPPER": "short-pepper"}, "db", "upgrade")
    assert done.returncode != 0
    assert "SECRET_PEPPER: must be at least 32 bytes" in done.stderr.strip().splitlines()[-1]
    assert "short-pepper" not in done.stderr


def test_a_short_pepper_file_is_refused(scratch_database_url, tmp_path):
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o700)
    (keys_dir / "pepper").write_text("only-20-bytes-long!!\n")
    # A PepperError: one line naming KEYS_DIR, not a traceback (app/startup.py).
    with pytest.raises(PepperError, match="fewer than 32 bytes.*KEYS_DIR="):
        create_app(config(scratch_database_url, keys_dir, SECRET_PEPPER=None))
