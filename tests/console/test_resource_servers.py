"""Integration: the console's resource server pages keep the API's rules (docs/api.md §2.7)."""

from __future__ import annotations

import re

import pytest

from app.extensions import db
from app.models import ResourceServer
from tests.console.test_console import Console

ID_RE = re.compile(r"/console/resource-servers/([0-9a-f-]{36})")


@pytest.fixture
def console(client) -> Console:
    return Console(client)


def _signin(factory, console, account_id):
    cid, secret = factory.admin(account_id)
    assert console.signin(cid, secret).status_code == 303


def _rows(app):
    with app.app_context():
        return {
            rs.identifier: (rs.account_id, rs.shared, rs.name, rs.scopes, rs.access_token_ttl)
            for rs in db.session.query(ResourceServer)
        }


def _register(console, **fields):
    console.get("/console/resource-servers/new")
    return console.post("/console/resource-servers/new", fields)


def test_create_list_edit_delete(app, factory, console, client):
    _signin(factory, console, "acme")
    made = _register(
        console,
        identifier="https://billing.example",
        name="Billing",
        scopes="invoices:read Read invoices\ninvoices:write",
        access_token_ttl="600",
    )
    assert made.status_code == 303, made.get_data(as_text=True)
    rs_id = ID_RE.search(made.headers["Location"]).group(1)
    assert _rows(app)["https://billing.example"] == (
        "acme",
        False,
        "Billing",
        [{"value": "invoices:read", "description": "Read invoices"}, {"value": "invoices:write"}],
        600,
    )
    listing = console.get("/console/resource-servers").get_data(as_text=True)
    assert "https://billing.example" in listing
    page = console.get(f"/console/resource-servers/{rs_id}")
    version = re.search(r'name="version" value="(\d+)"', page.get_data(as_text=True)).group(1)
    saved = console.post(
        f"/console/resource-servers/{rs_id}/edit",
        {"name": "Billing v2", "scopes": "", "access_token_ttl": "", "version": version},
    )
    assert saved.status_code == 303
    assert _rows(app)["https://billing.example"][2:] == ("Billing v2", [], None)
    stale = console.post(
        f"/console/resource-servers/{rs_id}/edit", {"name": "x", "version": version}
    )
    assert stale.status_code == 412
    # In use: the delete is refused, as in the API.
    factory.client("acme", audiences=["https://billing.example"])
    console.get(f"/console/resource-servers/{rs_id}")
    refused = console.post(
        f"/console/resource-servers/{rs_id}/delete",
        {"confirm_identifier": "https://billing.example"},
    )
    assert refused.status_code == 409
    assert "https://billing.example" in _rows(app)


def test_delete(app, factory, console):
    _signin(factory, console, "acme")
    made = _register(console, identifier="https://gone.example", name="Gone")
    rs_id = ID_RE.search(made.headers["Location"]).group(1)
    console.get(f"/console/resource-servers/{rs_id}")
    wrong = console.post(f"/console/resource-servers/{rs_id}/delete", {"confirm_identifier": "x"})
    assert wrong.status_code == 400
    done = console.post(
        f"/console/resource-servers/{rs_id}/delete", {"confirm_identifier": "https://gone.example"}
    )
    assert done.status_code == 303 and "https://gone.example" not in _rows(app)


def test_bad_form_is_400_and_creates_nothing(app, factory, console):
    _signin(factory, console, "acme")
    for fields in (
        {"identifier": "has space", "name": "x"},
        {"identifier": "https://ok.example", "name": ""},
        {"identifier": "https://ok.example", "name": "x", "access_token_ttl": "abc"},
        {"identifier": "https://ok.example", "name": "x", "scopes": "a\na"},
    ):
        assert _register(console, **fields).status_code == 400, fields
    assert _rows(app) == {}


def test_acme_cannot_see_touch_or_share_globex_or_shared(app, factory, console):
    globex = factory.resource_server("globex", "https://globex-api.example")
    shared = factory.resource_server("system", "https://shared.example", shared=True)
    _signin(factory, console, "acme")
    listing = console.get("/console/resource-servers").get_data(as_text=True)
    assert "globex-api" not in listing and "https://shared.example" in listing
    assert console.get(f"/console/resource-servers/{globex}").status_code == 404
    assert (
        console.post(f"/console/resource-servers/{globex}/edit", {"name": "x"}).status_code == 404
    )
    assert (
        console.post(
            f"/console/resource-servers/{globex}/delete",
            {"confirm_identifier": "https://globex-api.example"},
        ).status_code
        == 404
    )
    assert console.get(f"/console/resource-servers/{shared}").status_code == 200
    edit = console.post(f"/console/resource-servers/{shared}/edit", {"name": "mine", "version": 1})
    assert edit.status_code == 403
    # An account admin's form has no `shared` box; a forged one is ignored.
    forged = _register(console, identifier="https://acme.example", name="A", shared="on")
    assert forged.status_code == 303
    assert _rows(app)["https://acme.example"][:2] == ("acme", False)
    # Registering globex's identifier again is a conflict.
    taken = _register(console, identifier="https://globex-api.example", name="mine")
    assert taken.status_code == 409
    assert _rows(app)["https://globex-api.example"][0] == "globex"


def test_system_admin_shares(app, factory, console):
    _signin(factory, console, "system")
    made = _register(console, identifier="https://common.example", name="Common", shared="on")
    assert made.status_code == 303
    assert _rows(app)["https://common.example"][:2] == ("system", True)
    refused = _register(
        console, identifier="https://acme2.example", name="A", shared="on", account_id="acme"
    )
    assert refused.status_code == 400


def test_console_client_audiences_follow_the_api_rule(app, factory, console):
    factory.resource_server("globex", "https://globex-api.example")
    factory.resource_server("acme", "https://acme-api.example")
    _signin(factory, console, "acme")
    console.get("/console/clients/new")
    refused = console.post(
        "/console/clients/new", {"name": "thief", "audiences": "https://globex-api.example"}
    )
    assert refused.status_code == 400
    assert "is not a resource server of this account" in refused.get_data(as_text=True)
    console.get("/console/clients/new")
    ok = console.post(
        "/console/clients/new", {"name": "honest", "audiences": "https://acme-api.example"}
    )
    assert ok.status_code == 303
