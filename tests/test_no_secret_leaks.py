"""Integration: no client secret or secret hash leaks through responses, logs or the database.

A scenario creates secrets through the API and the CLI, uses them at the
token, introspection and revocation endpoints (successes and failures),
lists, rotates and deletes them and reads the audit log, while every log
record of every logger is captured at DEBUG, every response is recorded and
the process's stdout/stderr is captured. Each secret may then appear only in
the one response (or CLI output) that created it, and its hash nowhere.
"""

from __future__ import annotations

import json
import logging
import re
import uuid

import pytest
import sqlalchemy as sa

from app.clients.hashing import hash_secret
from app.extensions import db
from app.models import AuditEvent, ClientSecret
from tests.conftest import TEST_PEPPER, basic_auth

API = "/api/v1"
SECRET_RE = re.compile(r"ccs_[A-Za-z0-9_-]{20,}")


@pytest.fixture
def recorded(app) -> list[dict]:
    """Every response the app sends during the test: status, headers and body."""
    records: list[dict] = []

    def record(response):
        from flask import request

        body = b"" if response.direct_passthrough else response.get_data()
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        records.append(
            {"url": request.full_path, "text": headers + "\n\n" + body.decode("latin-1")}
        )
        return response

    # Index 0 runs last, so the record holds the final headers.
    app.after_request_funcs.setdefault(None, []).insert(0, record)
    return records


@pytest.fixture
def all_logs(caplog):
    """Capture every logger at DEBUG (SQLAlchemy's too), also those that do not propagate."""
    caplog.set_level(logging.DEBUG)
    loggers = [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level) for logger in loggers]
    quiet = [logger for logger in loggers if not logger.propagate]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    for logger in quiet:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in quiet:
        logger.removeHandler(caplog.handler)
    for logger, level in saved:
        logger.setLevel(level)


def log_text(caplog) -> str:
    formatter = logging.Formatter()
    lines = []
    for record in caplog.records:
        lines.append(formatter.format(record))
        lines.append(repr(record.__dict__))
    return "\n".join(lines)


def database_text(app) -> tuple[str, str]:
    """(audit_events rows, every other stored value but the secret hashes) as text."""
    with app.app_context():
        audit = repr(db.session.execute(sa.select(AuditEvent.__table__)).all())
        other = []
        for table in db.metadata.sorted_tables:
            if table.name == "audit_events":
                continue
            columns = [c for c in table.columns if c is not ClientSecret.__table__.c.secret_hash]
            other.append(repr(db.session.execute(sa.select(*columns)).all()))
        return audit, "\n".join(other)


def test_no_secret_or_hash_leaks_anywhere(app, client, runner, factory, recorded, all_logs, capfd):
    # name -> (secret, where it was shown): ("response", index) or ("cli", output).
    secrets: dict[str, tuple[str, tuple]] = {}

    def note(name: str, secret: str, where: tuple) -> str:
        assert secret.startswith("ccs_")
        secrets[name] = (secret, where)
        return secret

    def created(response, field: str, name: str) -> dict:
        assert response.status_code == 201, response.get_json()
        body = response.get_json()
        note(name, body[field], ("response", len(recorded) - 1))
        return body

    # CLI: an admin client for the account, its secret printed once.
    result = runner.invoke(
        args=["admin", "create", "--account", "acme", "--name", "leak-admin", "--json"]
    )
    assert result.exit_code == 0, result.output
    cli = json.loads(result.output)
    note("cli-admin", cli["client_secret"], ("cli", result.output))
    token = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(cli["client_id"], cli["client_secret"]),
    ).get_json()["access_token"]
    admin = {"Authorization": f"Bearer {token}"}
    system = factory.admin_headers("system")

    # API: a client and more secrets, each shown once.
    body = created(
        client.post(f"{API}/clients", json={"name": "leaky", "scopes": ["read"]}, headers=admin),
        "client_secret",
        "first",
    )
    cid = body["id"]
    second = created(
        client.post(f"{API}/clients/{cid}/secrets", json={"description": "ci"}, headers=admin),
        "secret",
        "second",
    )
    created(client.post(f"{API}/clients/{cid}/secrets", headers=admin), "secret", "third")
    rotated = created(
        client.post(
            f"{API}/clients/{cid}/secrets/rotate", json={"grace_period": 600}, headers=admin
        ),
        "secret",
        "rotated",
    )
    # The operators' `flask secrets rotate`.
    result = runner.invoke(args=["secrets", "rotate", cid, "--grace-period", "600"])
    assert result.exit_code == 0, result.output
    match = SECRET_RE.search(result.output)
    assert match, result.output
    note("cli-rotated", match.group(0), ("cli", result.output))
    other_id, other_secret = factory.client("acme")
    note("factory", other_secret, ("nowhere",))

    # Token endpoint: successes and every kind of failure.
    first = secrets["first"][0]
    for secret in (first, rotated["secret"]):
        ok = client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            headers=basic_auth(cid, secret),
        )
        assert ok.status_code == 200
    ok = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": cid, "client_secret": first},
    )
    assert ok.status_code == 200
    access = ok.get_json()["access_token"]
    failures = [
        {"headers": basic_auth(cid, first[:-1] + ("A" if first[-1] != "A" else "B"))},
        {"headers": basic_auth(other_id, first)},
        {"headers": basic_auth(str(uuid.uuid4()), first)},
        {"data": {"client_id": other_id, "client_secret": second["secret"]}},
        {"query": f"?client_secret={first}", "headers": basic_auth(cid, "ccs_wrong")},
        {"headers": basic_auth(cid, first), "data": {"client_secret": first}},
    ]
    for failure in failures:
        response = client.post(
            "/oauth2/token" + failure.get("query", ""),
            data={"grant_type": "client_credentials", **failure.get("data", {})},
            headers=failure.get("headers", {}),
        )
        assert response.status_code in (400, 401), response.get_json()
    introspected = client.post(
        "/oauth2/introspect", data={"token": access}, headers=basic_auth(cid, first)
    )
    assert introspected.get_json()["active"] is True
    assert (
        client.post(
            "/oauth2/introspect", data={"token": access}, headers=basic_auth(cid, "ccs_no")
        ).status_code
        == 401
    )
    assert (
        client.post(
            "/oauth2/revoke", data={"token": access}, headers=basic_auth(cid, second["secret"])
        ).status_code
        == 200
    )

    # Bad input that carries a secret must not be echoed back.
    for bad in (
        client.post(f"{API}/clients/{cid}/secrets", json={"secret": first}, headers=admin),
        client.patch(f"{API}/clients/{cid}", json={"name": first}, headers=admin),
        client.patch(f"{API}/clients/{cid}", json={"tags": [first] * 30}, headers=admin),
        client.post(f"{API}/clients", json={"name": "x", "client_secret": first}, headers=admin),
    ):
        assert bad.status_code == 400

    # The admin console: sign-in forms and the secret pages.
    csrf_re = re.compile(r'name="csrf_token" value="([^"]+)"')
    page = client.get("/console/signin").get_data(as_text=True)
    form = {"csrf_token": csrf_re.search(page).group(1), "client_id": cli["client_id"]}
    refused = client.post("/console/signin", data={**form, "client_secret": first})
    assert refused.status_code == 401
    signed_in = client.post("/console/signin", data={**form, "client_secret": cli["client_secret"]})
    assert signed_in.status_code == 303
    page = client.get(f"/console/clients/{cid}").get_data(as_text=True)
    csrf = csrf_re.search(page).group(1)
    for path, data, name in (
        (f"{cid}/secrets/rotate", {"grace_period": "3600", "confirm": "yes"}, "console-rotated"),
        (f"{other_id}/secrets", {"description": "console", "expires_in": "0"}, "console-new"),
    ):
        posted = client.post(f"/console/clients/{path}", data={**data, "csrf_token": csrf})
        assert posted.status_code == 303, posted.status_code
        # Post/redirect/get: the secret is on the page the POST redirects to, once.
        response = client.get(posted.headers["Location"])
        assert response.status_code == 200, response.status_code
        match = SECRET_RE.search(response.get_data(as_text=True))
        assert match, "the console shows the new secret once"
        note(name, match.group(0), ("response", len(recorded) - 1))
    assert client.get(f"/console/clients/{cid}").status_code == 200
    assert client.get("/console/audit").status_code == 200

    # Reading and changing secrets, reading the audit log.
    listing = client.get(f"{API}/clients/{cid}/secrets", headers=admin)
    assert listing.status_code == 200 and len(listing.get_json()["data"]) >= 4
    for path in (f"clients/{cid}/secrets/{second['id']}", f"clients/{cid}", "clients"):
        assert client.get(f"{API}/{path}", headers=admin).status_code == 200, path
    assert (
        client.delete(f"{API}/clients/{cid}/secrets/{second['id']}", headers=admin).status_code
        == 204
    )
    for headers in (admin, system):
        assert client.get(f"{API}/audit-events?limit=1000", headers=headers).status_code == 200
    assert client.delete(f"{API}/clients/{cid}", headers=admin).status_code == 204

    captured = capfd.readouterr()
    logs = log_text(all_logs) + "\n" + captured.out + "\n" + captured.err
    audit, stored = database_text(app)
    assert len(all_logs.records) > 0 and len(recorded) > 20
    assert "secret." in audit  # the audit trail did record the secret changes

    pepper = TEST_PEPPER.encode()
    for name, (secret, where) in secrets.items():
        digest = hash_secret(secret, pepper)
        # A fragment catches truncated or re-encoded copies too.
        for needle in (secret, secret[4:20], digest, digest[:16]):
            assert needle not in logs, f"{name}: found in the logs"
            assert needle not in audit, f"{name}: found in audit_events"
            assert needle not in stored, f"{name}: stored outside secret_hash"
        shown_in = [i for i, rec in enumerate(recorded) if secret[4:20] in rec["text"]]
        expected = [where[1]] if where[0] == "response" else []
        assert shown_in == expected, f"{name}: shown in {[recorded[i]['url'] for i in shown_in]}"
        assert not [rec["url"] for rec in recorded if digest[:16] in rec["text"]], name
    assert not SECRET_RE.search(logs), "something secret-shaped was logged"
