"""The audit page: filters, CSV and JSON export of the filtered rows, names and links, paging."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.console.test_console import Console

#: What a client secret looks like (app.clients.hashing): its prefix and URL-safe base64.
SECRET_SHAPE = re.compile(r"ccs_[A-Za-z0-9_-]{16,}")


@pytest.fixture
def acme(client, factory) -> tuple[Console, str]:
    console = Console(client)
    admin_id, secret = factory.admin("acme")
    assert console.signin(admin_id, secret).status_code == 303
    return console, admin_id


def body_rows(text: str) -> list[str]:
    return re.findall(r"<tr>(.*?)</tr>", text.split("<tbody>")[1], re.S)


def test_actor_and_target_shown_by_name_with_links(acme, factory):
    console, admin_id = acme
    cid, _, _ = console.create(name="named-one", scopes="read")
    gone, _, _ = console.create(name="gone-one")
    console.get(f"/console/clients/{gone}/delete")
    assert (
        console.post(f"/console/clients/{gone}/delete", {"confirm_name": "gone-one"}).status_code
        == 303
    )
    rotated = console.post(
        f"/console/clients/{cid}/secrets/rotate", {"grace_period": "0", "confirm": "yes"}
    )
    console.shown(rotated)
    text = console.get("/console/audit").get_data(as_text=True)
    rows = body_rows(text)
    created = next(r for r in rows if "client.created" in r and "named-one" in r)
    admin_name = re.search(
        r'<a href="/console/clients/' + admin_id + r'" title="' + admin_id + r'">([^<]+)</a>',
        created,
    )
    assert admin_name, created  # the acting admin client, by name, linked
    assert f'<a href="/console/clients/{cid}" title="{cid}">named-one</a>' in created
    rotation = next(r for r in rows if "secret.rotated" in r)
    assert (
        f'href="/console/clients/{cid}#secrets"' in rotation and "named-one · secret …" in rotation
    )
    # A deleted client's events keep its id: nothing to name or link.
    deleted = next(r for r in rows if "client.deleted" in r)
    assert f'<code class="small">{gone}</code>' in deleted


def test_filters_by_action_actor_target_and_time(acme, factory, client):
    console, admin_id = acme
    cid, _, _ = console.create(name="filtered")
    other, _ = factory.client("acme", name="by-test")  # actor "test"
    console.post(f"/console/clients/{cid}/keys", {"action": "generate"})

    def actions(query: str) -> list[str]:
        response = console.get(f"/console/audit?{query}")
        assert response.status_code == 200, response.get_data(as_text=True)
        return re.findall(r"<td>([a-z_]+\.[a-z_]+)</td>", response.get_data(as_text=True))

    assert set(actions("action=key.created")) == {"key.created"}
    by_test = actions("actor=test")
    assert by_test and set(by_test) == {"client.created"}
    # A client as the target also finds what it holds (its keys).
    assert set(actions(f"target={cid}")) == {"client.created", "key.created"}
    assert actions(f"target={other}") == ["client.created"]
    soon = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert actions(f"since={soon}") == []
    assert actions(f"until={past}") == []
    assert len(actions(f"since={past}&until={soon}&actor={admin_id}")) == 2
    # The form keeps the filters; the export links carry them.
    text = console.get(f"/console/audit?action=key.created&actor={admin_id}").get_data(as_text=True)
    assert '<option value="key.created" selected>' in text
    assert f'value="{admin_id}"' in text
    assert html.escape(f"/console/audit/export.csv?action=key.created&actor={admin_id}") in text


def test_bad_filters_are_named_and_dropped(acme):
    console, _ = acme
    response = console.get("/console/audit?action=client.exploded&since=yesterday")
    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert "action: choose one of the listed actions" in text
    assert "since: a UTC date and time" in text
    assert console.get("/console/audit/export.json?since=nope").status_code == 400
    assert console.get("/console/audit/export.xml").status_code == 404


def test_export_csv_and_json_hold_the_filtered_rows_and_no_secret(acme, factory, client):
    console, admin_id = acme
    cid, first, _ = console.create(name="exported")
    shown = console.shown(
        console.post(f"/console/clients/{cid}/secrets", {"description": "x", "expires_in": "0"})
    )
    second = re.search(
        r'id="shown-secret" class="secret" value="([^"]+)"', shown.get_data(as_text=True)
    ).group(1)
    console.shown(console.post(f"/console/clients/{cid}/keys", {"action": "generate"}))
    globex, _ = factory.client("globex", name="elsewhere")

    response = console.get(f"/console/audit/export.json?actor={admin_id}")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="audit-')
    assert response.headers["Cache-Control"] == "no-store"
    data = response.get_json()["data"]
    assert {row["action"] for row in data} == {"client.created", "secret.created", "key.created"}
    assert all(row["actor"] == admin_id and row["actor_name"] for row in data)
    assert [row["id"] for row in data] == sorted((row["id"] for row in data), reverse=True)

    csv_response = console.get(f"/console/audit/export.csv?actor={admin_id}")
    assert csv_response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(csv_response.get_data(as_text=True))))
    assert [int(r["id"]) for r in rows] == [row["id"] for row in data]
    assert list(rows[0]) == [
        "id", "at", "account_id", "actor", "actor_name", "action", "target", "target_name"
    ]  # fmt: skip

    everything = console.get("/console/audit/export.json").get_data(as_text=True)
    assert globex not in everything  # the account's events only
    for text in (everything, console.get("/console/audit/export.csv").get_data(as_text=True)):
        assert not SECRET_SHAPE.search(text)
        assert first not in text and second not in text
        assert "PRIVATE KEY" not in text and '"d"' not in text
    assert json.loads(everything)["data"]


def test_csv_cells_never_start_a_formula(acme, factory):
    console, _ = acme
    rs = factory.resource_server("acme", "https://formula.example", name="=HYPERLINK(1)")
    factory.client("acme", name="uses-formula", audiences=["https://formula.example"])
    text = console.get(f"/console/audit/export.csv?target={rs}").get_data(as_text=True)
    (row,) = csv.DictReader(io.StringIO(text))
    assert row["target_name"] == "'=HYPERLINK(1)"


def test_newer_and_older_pages(make_app, factory):
    small = make_app(CONSOLE_PAGE_SIZE=2)
    for i in range(5):
        factory.client("acme", name=f"paged-{i}")
    console = Console(small.test_client())
    assert console.signin(*factory.admin("acme")).status_code == 303  # not audited

    def visit(url: str):
        text = console.get(url).get_data(as_text=True)
        names = re.findall(r'title="[^"]+">(paged-\d)</a>', text.split("<tbody>")[1])
        links = {
            rel: html.unescape(href)
            for href, rel in re.findall(r'<a href="([^"]+)" rel="(prev|next)"', text)
        }
        return names, links.get("prev"), links.get("next")

    names, prev, nxt = visit("/console/audit?action=client.created")
    assert prev is None
    pages = [names]
    while nxt:
        names, prev, nxt = visit(nxt)
        pages.append(names)
        assert "action=client.created" in prev
        assert visit(prev)[0] == pages[-2]
    flat = [n for page in pages for n in page]
    assert flat[:5] == [f"paged-{i}" for i in range(4, -1, -1)]


def test_names_of_another_accounts_objects_stay_ids(acme, factory, client):
    console, _ = acme
    system_id, system_secret = factory.admin("system")
    token = factory.token(system_id, system_secret)["access_token"]
    made = client.post(
        "/api/v1/clients",
        json={"name": "made-by-system", "account_id": "acme"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert made.status_code == 201
    text = console.get(f"/console/audit?actor={system_id}").get_data(as_text=True)
    (row,) = body_rows(text)
    assert f'<code class="small">{system_id}</code>' in row  # the system admin: not named
    assert ">made-by-system</a>" in row  # the acme client it made: named
