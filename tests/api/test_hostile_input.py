"""Integration: NUL and lone surrogates in any string of any body are a 400 (issue 13, item 6).

The operations and their string fields are read from the OpenAPI document, so
a new operation or field is covered without touching this file. Runs on
SQLite and, with DATABASE_URL, on PostgreSQL (which refuses NUL in text).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import sqlalchemy as sa

from app.api.schemas import UNSTORABLE_MESSAGE
from app.extensions import db

API = "/api/v1"
METHODS = ("post", "put", "patch", "delete", "get")
HOSTILE = {"lone surrogate": "ok\ud800", "low surrogate": "\udfffok", "nul": "ok\x00ok"}


def _resolve(schemas: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def string_slots(schemas: dict, schema: dict, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path, value builder) for every place a string may go in a body schema.

    A path is the keys and list indexes from the body's root; the builder
    wraps a string into what that place holds.
    """
    schema = _resolve(schemas, schema)
    found: list[tuple[tuple, Any]] = []
    options = [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]
    for option in options:
        option = _resolve(schemas, option)
        kind = option.get("type")
        if kind == "string" or (kind is None and "enum" in option):
            found.append((path, lambda text: text))
        elif kind == "array":
            for sub, build in string_slots(schemas, option.get("items", {}), (*path, 0)):
                found.append((sub, build))
        elif kind == "object" or "properties" in option:
            for name, prop in option.get("properties", {}).items():
                found += string_slots(schemas, prop, (*path, name))
            if option.get("additionalProperties", False) not in (False, None):
                found.append(((*path, "zz_extra"), lambda text: text))
    # One entry per path.
    return list({p: (p, b) for p, b in found}.values())


def body_with(path: tuple, text: str) -> Any:
    """The smallest body holding `text` at `path`."""
    value: Any = text
    for part in reversed(path):
        value = [value] if isinstance(part, int) else {part: value}
    return value


def field_name(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def test_every_string_field_of_every_body_refuses_nul_and_lone_surrogates(client, factory):
    document = client.get(f"{API}/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    headers = {**factory.admin_headers("system"), "Content-Type": "application/json"}
    cid, _ = factory.client("acme")
    checked: set[tuple[str, str]] = set()
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method not in METHODS or "requestBody" not in op:
                continue
            url = re.sub(
                r"\{[a-z_]+\}", lambda m: cid if m.group(0) == "{client_id}" else "x", path
            )
            content = op["requestBody"]["content"]
            if "application/json" not in content:
                continue  # /oauth2 forms: app.oauth.requests refuses NUL and bad UTF-8 itself
            assert path.startswith(API), path
            slots = string_slots(schemas, content["application/json"]["schema"])
            for slot, build in slots:
                for label, text in HOSTILE.items():
                    body = body_with(slot, build(text))
                    # ensure_ascii: the surrogate travels as a \ud800 escape, as a client sends it.
                    data = json.dumps(body).encode("ascii")
                    response = client.open(url, method=method.upper(), data=data, headers=headers)
                    where = (method, path, slot, label)
                    assert response.status_code == 400, (where, response.get_data(as_text=True))
                    assert response.mimetype == "application/problem+json", where
                    problem = response.get_json()
                    assert problem["code"] == "validation_error", where
                    assert {"field": field_name(slot), "message": UNSTORABLE_MESSAGE} in problem[
                        "errors"
                    ], (where, problem)
                checked.add((op["operationId"], field_name(slot)))
            # A field *name* with a lone surrogate or NUL is refused too, never echoed.
            for text in HOSTILE.values():
                data = json.dumps({text: "x"}).encode("ascii")
                response = client.open(url, method=method.upper(), data=data, headers=headers)
                assert response.status_code == 400, (method, path)
                assert response.get_json()["errors"][0]["field"] == "body"
    names = {field for _, field in checked}
    # The fields of the issue, and nested ones, are among those derived.
    assert {
        "friendly_name",
        "description",
        "owner",
        "tags[0]",
        "scopes[0]",
        "audiences[0]",
        "name",
        "public_jwk.kty",
        "public_jwk.zz_extra",
        "allowed_auth_methods[0]",
    } <= names, names
    operations = {op for op, _ in checked}
    assert {
        "createClient",
        "patchClient",
        "replaceClient",
        "createClientSecret",
        "createClientKey",
    } <= (operations), operations
    # Nothing was stored by any of them.
    with client.application.app_context():
        count = db.session.scalar(sa.text("SELECT count(*) FROM clients"))
    assert count == 2  # the admin and cid


def test_query_parameters_refuse_nul(client, factory):
    headers = factory.admin_headers("acme")
    response = client.get(f"{API}/clients?name_prefix=a%00", headers=headers)
    assert response.status_code == 400
    assert response.get_json()["errors"][0] == {
        "field": "name_prefix",
        "message": UNSTORABLE_MESSAGE,
    }


def test_secret_description_nul_is_400_not_503(client, factory):
    """The issue: on PostgreSQL this was 503 "database unavailable" with Retry-After."""
    headers = factory.admin_headers("acme")
    cid, _ = factory.client("acme")
    response = client.post(
        f"{API}/clients/{cid}/secrets", json={"description": "a\x00b"}, headers=headers
    )
    assert response.status_code == 400
    assert "Retry-After" not in response.headers


def test_a_database_data_error_is_400_and_never_503(app, client):
    """A value the database refuses (DataError) is the input's fault, not an outage."""
    with app.app_context():
        dialect = db.engine.dialect.name
    if dialect != "postgresql":
        pytest.skip("SQLite stores NUL; the real DataError comes from PostgreSQL")

    @app.post(f"{API}/zz-store-text")
    def store_text():
        db.session.execute(sa.text("SELECT CAST(:v AS text)"), {"v": "a\x00b"})
        return "stored"

    response = client.post(f"{API}/zz-store-text")
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "invalid_value"
    assert "Retry-After" not in response.headers


def test_an_integrity_error_is_409_not_503(app, client):
    @app.post(f"{API}/zz-duplicate")
    def duplicate():
        db.session.execute(
            sa.text("INSERT INTO server_settings (name, value, created_at) VALUES ('zz', 'a', :t)"),
            {"t": "2026-01-01 00:00:00+00:00"},
        )
        db.session.execute(
            sa.text("INSERT INTO server_settings (name, value, created_at) VALUES ('zz', 'b', :t)"),
            {"t": "2026-01-01 00:00:00+00:00"},
        )
        return "stored"

    response = client.post(f"{API}/zz-duplicate")
    assert response.status_code == 409
    assert response.get_json()["code"] == "conflict"


# --- The console and the CLI go through the same check -----------------------------------------


def test_console_form_refuses_nul_and_survives_surrogate_bytes(factory, client):
    from tests.console.test_console import Console

    console = Console(client)
    cid, secret = factory.admin("acme")
    assert console.signin(cid, secret).status_code == 303
    console.get("/console/clients/new")
    response = console.post("/console/clients/new", {"name": "n", "friendly_name": "ok\x00ok"})
    assert response.status_code == 400
    assert "must not contain a NUL character" in response.get_data(as_text=True)
    # A form cannot carry a lone surrogate, only its UTF-8-like bytes, which
    # werkzeug decodes as U+FFFD: stored as such, never a 500.
    console.get("/console/clients/new")
    raw = f"csrf_token={console.token}&name=surrogate&friendly_name=ok%ED%A0%80"
    response = client.post(
        "/console/clients/new", data=raw, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    # Post/redirect/get: the page showing the new client's secret renders too.
    assert console.get(response.headers["Location"]).status_code == 200


def test_cli_refuses_nul_in_a_name(runner):
    result = runner.invoke(args=["admin", "create", "--account", "acme", "--name", "a\x00b"])
    assert result.exit_code != 0
    assert "must not contain a NUL character" in result.output


def test_a_stored_lone_surrogate_does_not_break_the_console(factory, client, app):
    """Stored before the check existed: the pages show U+FFFD instead of failing."""
    from tests.console.test_console import Console

    cid, _ = factory.client("acme", name="old")
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            pytest.skip("PostgreSQL jsonb refuses a lone surrogate escape: it never stored one")
        # JSON text as the column holds it: the escape survives the database.
        db.session.execute(
            sa.text("UPDATE clients SET tags = :tags WHERE id = :id"),
            {"tags": '["ok\\ud800"]', "id": cid},
        )
        db.session.commit()
    app.extensions["ccserver"].clients.clear()
    console = Console(client)
    admin_id, admin_secret = factory.admin("acme")
    assert console.signin(admin_id, admin_secret).status_code == 303
    listing = console.get("/console/clients")
    assert listing.status_code == 200
    assert "ok\ufffd" in listing.get_data(as_text=True)
    page = console.get(f"/console/clients/{cid}")
    assert page.status_code == 200
    assert "ok\ufffd" in page.get_data(as_text=True)
