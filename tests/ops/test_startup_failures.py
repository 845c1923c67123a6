"""Integration: each start-up failure ends in one line naming the setting, and a non-zero exit.

The real commands run in subprocesses with a bad environment, as an operator
would meet them (docs/operations.md, "When it does not start"): a wrong
DATABASE_URL host, a missing database, an unsupported scheme, an unusable
KEYS_DIR, a lost pepper beside a database in use, a schema never made, a
port already taken.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import sqlalchemy as sa

from app.settings import build_settings
from tests.ops.helpers import (
    TEST_PEPPER,
    assert_one_line_failure,
    flask,
    operator_env,
    serve_py,
)

#: A port nothing listens on: connecting is refused at once.
REFUSED_URL = "postgresql+psycopg://postgres@127.0.0.1:1/ccserver"
#: RFC 6761: .invalid never resolves.
UNKNOWN_HOST_URL = "postgresql+psycopg://postgres@db.invalid:5432/ccserver"


@pytest.fixture
def keys_dir(tmp_path):
    return tmp_path / "keys"


def test_unsupported_scheme_names_database_url(tmp_path, keys_dir):
    env = operator_env("mysql://root@localhost/ccserver", keys_dir)
    for args in (["db", "upgrade"], ["admin", "bootstrap"]):
        done = flask(env, *args)
        line = assert_one_line_failure(done, "DATABASE_URL", "mysql")
        # What to write instead, and no misleading "No such command".
        assert "postgresql+psycopg://" in line
        assert "No such command" not in done.stderr
        assert "ModuleNotFoundError" not in done.stderr


def test_a_driver_that_is_not_installed_is_named(tmp_path, keys_dir):
    env = operator_env("postgresql+psycopg2://postgres@127.0.0.1/x", keys_dir)
    assert_one_line_failure(flask(env, "db", "upgrade"), "DATABASE_URL", "psycopg2")


def test_postgresql_scheme_alone_means_psycopg(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db.example:5432/ccserver")
    assert build_settings().database_url == "postgresql+psycopg://u:p@db.example:5432/ccserver"


@pytest.mark.parametrize(
    ("url", "command"),
    [
        (REFUSED_URL, ["db", "upgrade"]),
        (REFUSED_URL, ["keys", "init"]),
        (REFUSED_URL, ["admin", "bootstrap"]),
        (UNKNOWN_HOST_URL, ["db", "upgrade"]),
    ],
    ids=["refused-upgrade", "refused-keys", "refused-admin", "unknown-host"],
)
def test_an_unreachable_database_names_database_url(keys_dir, url, command):
    done = flask(operator_env(url, keys_dir, SECRET_PEPPER=TEST_PEPPER), *command)
    line = assert_one_line_failure(done, "DATABASE_URL", "cannot connect")
    assert "check the host" in line


def test_an_unreachable_database_with_a_fresh_keys_dir_names_database_url_first(keys_dir):
    """No pepper yet and no database to ask: the database is what to fix."""
    done = flask(operator_env(REFUSED_URL, keys_dir), "db", "upgrade")
    line = assert_one_line_failure(done, "DATABASE_URL", "cannot connect")
    assert line.startswith("error: DATABASE_URL")
    assert not (keys_dir / "pepper").exists()


def test_a_missing_postgresql_database_says_create_it(keys_dir):
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgresql"):
        pytest.skip("needs a PostgreSQL server (DATABASE_URL)")
    missing = sa.make_url(url).set(database="ccserver_no_such_db")
    env = operator_env(missing.render_as_string(hide_password=False), keys_dir)
    line = assert_one_line_failure(flask(env, "db", "upgrade"), "DATABASE_URL", "does not exist")
    assert "createdb ccserver_no_such_db" in line


def test_a_database_without_schema_says_db_upgrade(tmp_path, keys_dir):
    env = operator_env(f"sqlite:///{tmp_path / 'empty.db'}", keys_dir)
    for args in (["admin", "bootstrap"], ["keys", "init"]):
        assert_one_line_failure(flask(env, *args), "db upgrade")


def test_an_unusable_keys_dir_names_keys_dir(tmp_path):
    """A KEYS_DIR that cannot be made (its parent is a file: unwritable, even for root)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    env = operator_env(f"sqlite:///{tmp_path / 'db.sqlite'}", blocker / "keys")
    for args in (["db", "upgrade"], ["keys", "init"]):
        line = assert_one_line_failure(flask(env, *args), "KEYS_DIR", str(blocker / "keys"))
        assert "point KEYS_DIR elsewhere" in line


def test_an_unusable_sqlite_path_names_database_url(tmp_path, keys_dir):
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = operator_env(f"sqlite:///{blocker / 'db.sqlite'}", keys_dir)
    assert_one_line_failure(flask(env, "db", "upgrade"), "DATABASE_URL", "SQLite")


def test_a_bad_setting_is_one_line(tmp_path, keys_dir):
    env = operator_env(f"sqlite:///{tmp_path / 'db.sqlite'}", keys_dir, SIGNING_ALG="HS256")
    assert_one_line_failure(flask(env, "db", "upgrade"), "SIGNING_ALG")


def test_an_empty_keys_dir_beside_a_database_in_use_is_refused(scratch_database_url, tmp_path):
    """The pepper file is gone (a new, empty KEYS_DIR); the secrets are not: no new pepper."""
    keys_dir = tmp_path / "keys"
    env = operator_env(scratch_database_url, keys_dir)
    for args in (["db", "upgrade"], ["keys", "init"], ["admin", "bootstrap"]):
        assert flask(env, *args).returncode == 0
    fresh = tmp_path / "fresh-keys"
    fresh.mkdir()
    moved = {**env, "KEYS_DIR": str(fresh)}
    for args in (["keys", "list"], ["db", "upgrade"], ["admin", "bootstrap"]):
        line = assert_one_line_failure(flask(moved, *args), "KEYS_DIR", "pepper")
        assert "client secrets" in line and "restore" in line
    assert not (fresh / "pepper").exists()
    # Serving refuses the same way, in one JSON line.
    done = serve_py({**moved, "PORT": str(_free_port()), "WORKERS": "1"})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [error] = [json.loads(x) for x in done.stderr.splitlines() if '"level":"error"' in x]
    assert "KEYS_DIR" in error["message"] and "pepper" in error["message"]
    assert not (fresh / "pepper").exists()


def test_keys_init_twice_says_what_exists(tmp_path, keys_dir):
    env = operator_env(f"sqlite:///{tmp_path / 'db.sqlite'}", keys_dir)
    assert flask(env, "db", "upgrade").returncode == 0
    first = flask(env, "keys", "init")
    assert first.returncode == 0
    kids = [line.split()[3] for line in first.stdout.splitlines() if line.startswith("created")]
    assert len(kids) == 2
    again = flask(env, "keys", "init")
    assert again.returncode == 0  # "safe to run twice" (docs/api.md §4)
    assert "already initialised" in again.stdout
    for kid in kids:
        assert kid in again.stdout
    assert "current key" in again.stdout and "next key" in again.stdout
    assert str(keys_dir) in again.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_prod_refuses_a_port_in_use(tmp_path, keys_dir):
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # SO_REUSEPORT, as granian binds: a second granian would start beside it.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("0.0.0.0", 0))  # noqa: S104
        taken.listen()
        port = taken.getsockname()[1]
        env = operator_env(
            f"sqlite:///{tmp_path / 'db.sqlite'}", keys_dir, PORT=str(port), WORKERS="1"
        )
        done = serve_py(env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = [json.loads(x) for x in done.stderr.splitlines() if x.strip()]
    assert line["level"] == "error"
    assert "PORT" in line["message"] and f":{port} is already in use" in line["message"]
    # Refused before anything else: no database made.
    assert not (tmp_path / "db.sqlite").exists()


def test_serve_prod_with_an_unreachable_database_is_one_json_line(keys_dir):
    env = operator_env(REFUSED_URL, keys_dir, PORT=str(_free_port()), WORKERS="1")
    done = serve_py({**env, "SECRET_PEPPER": TEST_PEPPER})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [json.loads(x) for x in done.stderr.splitlines() if x.strip()]
    [error] = [x for x in lines if x["level"] == "error"]
    assert error["message"].startswith("DATABASE_URL: cannot connect")


def test_serve_prod_with_an_unsupported_scheme_is_one_json_line(keys_dir):
    env = operator_env("mysql://root@localhost/x", keys_dir, PORT=str(_free_port()))
    done = serve_py(env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [error] = [json.loads(x) for x in done.stderr.splitlines() if x.strip()]
    assert "DATABASE_URL" in error["message"] and "mysql" in error["message"]


def test_serve_prod_with_an_unusable_keys_dir_is_one_json_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = operator_env(
        f"sqlite:///{tmp_path / 'db.sqlite'}", blocker / "keys", PORT=str(_free_port())
    )
    done = serve_py(env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [error] = [json.loads(x) for x in done.stderr.splitlines() if '"level":"error"' in x]
    assert error["message"].startswith("KEYS_DIR: cannot use")
