"""Integration: `flask admin create | bootstrap` through Flask's CLI runner, then HTTP."""

from __future__ import annotations

import json
import re

import jwt
import sqlalchemy as sa

from app.clients.service import ACCOUNT_MANAGEMENT_SCOPES, MANAGEMENT_SCOPES
from app.extensions import db
from app.models import AuditEvent, Client, ClientSecret
from tests.conftest import basic_auth

SECRET_RE = re.compile(r"ccs_[A-Za-z0-9_-]{43}")


def token(http, client_id: str, secret: str):
    return http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(client_id, secret),
    )


def test_admin_create_json_prints_only_credentials(app, runner, client):
    result = runner.invoke(args=["admin", "create", "--account", "acme", "--name", "ops", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert set(body) == {"client_id", "client_secret"}
    assert SECRET_RE.fullmatch(body["client_secret"])
    assert result.stdout.strip() == json.dumps(body)

    response = token(client, body["client_id"], body["client_secret"])
    assert response.status_code == 200, response.get_json()
    claims = jwt.decode(response.get_json()["access_token"], options={"verify_signature": False})
    assert claims["account_id"] == "acme"
    assert claims["aud"] == app.config["MANAGEMENT_AUDIENCE"]
    assert set(claims["scope"].split()) == set(ACCOUNT_MANAGEMENT_SCOPES)

    with app.app_context():
        row = db.session.get(Client, body["client_id"])
        assert row.client_type == "admin"
        assert row.name == "ops" and row.friendly_name == "ops"
        # Only a hash is stored.
        stored = db.session.scalars(sa.select(ClientSecret.secret_hash)).all()
        assert body["client_secret"] not in stored
        actions = db.session.execute(sa.select(AuditEvent.actor, AuditEvent.action)).all()
        assert ("cli", "client.created") in [tuple(a) for a in actions]


def test_admin_create_system_account_gets_every_scope(runner, client):
    result = runner.invoke(
        args=["admin", "create", "--account", "system", "--name", "root", "--json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    granted = token(client, body["client_id"], body["client_secret"]).get_json()["scope"]
    assert set(granted.split()) == set(MANAGEMENT_SCOPES)


def test_admin_create_human_output(runner, client):
    result = runner.invoke(args=["admin", "create", "--account", "acme", "--name", "ops"])
    assert result.exit_code == 0, result.output
    client_id = re.search(r"client_id:\s+(\S+)", result.output).group(1)
    secret = re.search(r"client_secret:\s+(\S+)", result.output).group(1)
    assert token(client, client_id, secret).status_code == 200


def test_admin_create_duplicate_name_fails_cleanly(app, runner):
    first = runner.invoke(args=["admin", "create", "--account", "acme", "--name", "ops", "--json"])
    assert first.exit_code == 0
    again = runner.invoke(args=["admin", "create", "--account", "acme", "--name", "ops", "--json"])
    assert again.exit_code != 0
    assert again.stdout == ""
    assert "ops" in again.stderr and "already exists" in again.stderr
    assert "Traceback" not in again.output
    assert again.exception is None or isinstance(again.exception, SystemExit)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Client)) == 1
    # The same name in another account is fine.
    other = runner.invoke(args=["admin", "create", "--account", "globex", "--name", "ops"])
    assert other.exit_code == 0, other.output


def test_admin_create_rejects_bad_name_and_account(runner):
    for args in (
        ["--account", "acme", "--name", "Bad Name"],
        ["--account", "ACME!", "--name", "ops"],
        ["--account", "acme", "--name", ""],
    ):
        result = runner.invoke(args=["admin", "create", *args])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output


def test_admin_create_requires_account_and_name(runner):
    assert runner.invoke(args=["admin", "create", "--name", "ops"]).exit_code == 2
    assert runner.invoke(args=["admin", "create", "--account", "acme"]).exit_code == 2


def test_bootstrap_prints_secret_only_the_first_time(app, runner, client):
    first = runner.invoke(args=["admin", "bootstrap"])
    assert first.exit_code == 0, first.output
    secret = SECRET_RE.search(first.output).group(0)
    client_id = re.search(r"client_id:\s+(\S+)", first.output).group(1)
    response = token(client, client_id, secret)
    assert response.status_code == 200
    assert set(response.get_json()["scope"].split()) == set(MANAGEMENT_SCOPES)

    second = runner.invoke(args=["admin", "bootstrap"])
    assert second.exit_code == 0, second.output
    assert SECRET_RE.search(second.output) is None
    assert "client_secret" not in second.output
    with app.app_context():
        admins = db.session.scalars(
            sa.select(Client).where(Client.account_id == "system", Client.client_type == "admin")
        ).all()
        assert [c.id for c in admins] == [client_id]


def test_bootstrap_skips_when_a_system_admin_exists(app, runner):
    made = runner.invoke(args=["admin", "create", "--account", "system", "--name", "root"])
    assert made.exit_code == 0, made.output
    result = runner.invoke(args=["admin", "bootstrap"])
    assert result.exit_code == 0
    assert SECRET_RE.search(result.output) is None
    with app.app_context():
        admins = db.session.scalars(sa.select(Client.name).where(Client.account_id == "system"))
        assert admins.all() == ["root"]
