"""Integration: `flask clients ...` and `flask secrets ...` over the real database."""

from __future__ import annotations

import json
import re

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditEvent
from tests.conftest import basic_auth


def audit_actions(app, target: str) -> list[tuple[str, str]]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(AuditEvent.actor, AuditEvent.action)
            .where(AuditEvent.target == target)
            .order_by(AuditEvent.id)
        ).all()
        return [tuple(r) for r in rows]


def token_status(http, client_id: str, secret: str) -> int:
    return http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(client_id, secret),
    ).status_code


def test_list_and_show(runner, factory):
    a, _ = factory.client("acme", name="alpha", tags=["t"])
    g, _ = factory.client("globex", name="gamma")
    everything = runner.invoke(args=["clients", "list", "--json"])
    assert everything.exit_code == 0, everything.output
    rows = json.loads(everything.output)
    assert {r["id"] for r in rows} == {a, g}
    assert all("secret" not in key for row in rows for key in row)
    only = json.loads(runner.invoke(args=["clients", "list", "--account", "acme", "--json"]).output)
    assert [r["name"] for r in only] == ["alpha"]
    text = runner.invoke(args=["clients", "list"])
    assert a in text.output and "alpha" in text.output and "gamma" in text.output
    shown = runner.invoke(args=["clients", "show", a])
    assert shown.exit_code == 0
    assert json.loads(shown.output)["tags"] == ["t"]
    missing = runner.invoke(args=["clients", "show", "nope"])
    assert missing.exit_code == 1
    assert "No such client" in missing.output


def test_list_walks_more_than_one_batch(runner, app, monkeypatch):
    from app.cli import clients as cli_operators
    from tests.api.test_paging import bulk

    monkeypatch.setattr(cli_operators, "_BATCH", 3)  # small batches, same keyset walk
    made = bulk(app, "acme", 7)
    rows = json.loads(runner.invoke(args=["clients", "list", "--json"]).output)
    assert [r["id"] for r in rows] == made


def test_lock_and_unlock(runner, client, factory, app):
    cid, _ = factory.client("acme", name="lockme")
    headers = factory.admin_headers("acme")
    url = f"/api/v1/clients/{cid}"
    locked = runner.invoke(args=["clients", "lock", cid])
    assert locked.exit_code == 0 and "locked" in locked.output
    assert client.get(url, headers=headers).get_json()["locked"] is True
    assert client.patch(url, json={"description": "x"}, headers=headers).status_code == 409
    again = runner.invoke(args=["clients", "lock", cid])
    assert again.exit_code == 0 and "already" in again.output
    assert runner.invoke(args=["clients", "unlock", cid]).exit_code == 0
    assert client.patch(url, json={"description": "x"}, headers=headers).status_code == 200
    actions = audit_actions(app, cid)
    assert actions.count(("cli", "client.updated")) == 2  # lock + unlock, not the no-op
    assert runner.invoke(args=["clients", "lock", "missing"]).exit_code == 1


def plain_secret(output: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.startswith("secret:"))


def test_secrets_rotate(runner, client, factory, app):
    cid, old = factory.client("acme", name="rot")
    result = runner.invoke(args=["secrets", "rotate", cid, "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["client_id"] == cid and body["secret"].startswith("ccs_")
    assert token_status(client, cid, body["secret"]) == 200
    assert token_status(client, cid, old) == 401  # no grace: the old one stops at once
    assert body["old_secrets_expire_at"] == body["created_at"]
    plain = runner.invoke(args=["secrets", "rotate", cid])
    assert "The old secret stopped working now." in plain.output
    graced = runner.invoke(args=["secrets", "rotate", cid, "--grace-period", "600"])
    assert graced.exit_code == 0
    assert re.search(
        r"The old secret works until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\.", graced.output
    )
    newest = next(
        line.split()[1] for line in graced.output.splitlines() if line.startswith("secret:")
    )
    assert token_status(client, cid, newest) == 200
    assert token_status(client, cid, plain_secret(plain.output)) == 200  # within its grace period
    assert [a for a in audit_actions(app, body["secret_id"])] == [("cli", "secret.rotated")]
    with app.app_context():
        stored = " ".join(
            str(v) for row in db.session.execute(sa.select(AuditEvent)).scalars()
            for v in (row.actor, row.action, row.target)
        )  # fmt: skip
    assert body["secret"] not in stored and newest not in stored


def test_secrets_rotate_refusals(runner, factory):
    cid, _ = factory.client("acme", name="locked", locked=True)
    refused = runner.invoke(args=["secrets", "rotate", cid])
    assert refused.exit_code == 1
    assert "locked" in refused.output
    assert "ccs_" not in refused.output
    assert runner.invoke(args=["secrets", "rotate", "missing"]).exit_code == 1
    bad = runner.invoke(args=["secrets", "rotate", cid, "--grace-period", "-1"])
    assert bad.exit_code == 2


def test_the_operator_may_change_the_bootstrap_admin(runner, client, factory, app):
    """The command line holds every management scope (docs/decisions.md): the
    way back in when the only full admin's secret is lost."""
    cid, old = factory.admin("system")
    assert runner.invoke(args=["clients", "lock", cid]).exit_code == 0
    assert runner.invoke(args=["clients", "unlock", cid]).exit_code == 0
    rotated = runner.invoke(args=["secrets", "rotate", cid, "--json"])
    assert rotated.exit_code == 0, rotated.output
    assert token_status(client, cid, json.loads(rotated.output)["secret"]) == 200
    assert token_status(client, cid, old) == 401
    assert audit_actions(app, cid).count(("cli", "client.updated")) == 2


def test_revoke_tokens(runner, client, factory, app):
    cid, secret = factory.client("acme", scopes=["read"], audiences=["https://orders.example"])
    resource = basic_auth(*factory.client("acme"))
    token = client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, headers=basic_auth(cid, secret)
    ).get_json()["access_token"]
    result = runner.invoke(args=["clients", "revoke-tokens", cid])
    assert result.exit_code == 0, result.output
    assert "revoked" in result.output
    introspected = client.post("/oauth2/introspect", data={"token": token}, headers=resource)
    assert introspected.get_json() == {"active": False}
    assert ("cli", "client.tokens_revoked") in audit_actions(app, cid)
    missing = runner.invoke(args=["clients", "revoke-tokens", "missing"])
    assert missing.exit_code == 1
