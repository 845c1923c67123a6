"""Client and secret lists: last-used and expiry as relative times; previous and next pages."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import sqlalchemy as sa

from app.extensions import db
from app.models import ClientSecret
from app.timeutil import utcnow
from tests.console.test_console import Console


def row_of(text: str, name: str) -> str:
    """The table row whose link reads `name`."""
    for row in re.findall(r"<tr>(.*?)</tr>", text.split("<tbody>")[1], re.S):
        if f">{name}</a>" in row:
            return row
    raise AssertionError(f"no row for {name}")


def set_secret_times(app, cid: str, *, used_ago=None, expires_in=None) -> ClientSecret:
    with app.app_context():
        secret = db.session.scalars(
            sa.select(ClientSecret).where(ClientSecret.client_id == cid)
        ).one()
        now = utcnow()
        if used_ago is not None:
            secret.last_used_at = now - used_ago
        if expires_in is not None:
            secret.expires_at = now + expires_in
        db.session.commit()
        db.session.refresh(secret)
        db.session.expunge(secret)
        return secret


def test_client_list_shows_last_use_and_expiry_relative_with_the_exact_time(app, client, factory):
    used, _ = factory.client("acme", name="used-one")
    secret = set_secret_times(
        app, used, used_ago=timedelta(minutes=3, seconds=10), expires_in=timedelta(days=2, hours=1)
    )
    factory.client("acme", name="idle-one")
    factory.client("acme", name="keyless", create_secret=False)
    console = Console(client)
    assert console.signin(*factory.admin("acme")).status_code == 303
    text = console.get("/console/clients").get_data(as_text=True)
    assert '<th scope="col">Last used</th>' in text and '<th scope="col">Expires</th>' in text

    row = row_of(text, "used-one")
    exact_use = secret.last_used_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    exact_end = secret.expires_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f'title="{exact_use}">3 min ago</time>' in row
    assert f'title="{exact_end}">in 2 days</time>' in row
    idle = row_of(text, "idle-one")
    assert "never</span>" in idle  # never used
    assert re.search(r"<td class=\"small\">never</td>", idle)  # never expires
    assert "no active credential" in row_of(text, "keyless")


def test_secrets_list_shows_last_use_and_expiry_relative(app, client, factory):
    cid, _ = factory.client("acme", name="secretive")
    secret = set_secret_times(app, cid, used_ago=timedelta(hours=5), expires_in=timedelta(days=40))
    console = Console(client)
    assert console.signin(*factory.admin("acme")).status_code == 303
    text = console.get(f"/console/clients/{cid}").get_data(as_text=True)
    section = text.split('id="secrets"')[1].split("</table>")[0]
    assert (
        f'title="{secret.last_used_at.strftime("%Y-%m-%d %H:%M:%S UTC")}">5 hours ago</time>'
        in section
    )
    assert (
        f'title="{secret.expires_at.strftime("%Y-%m-%d %H:%M:%S UTC")}">in 1 month</time>'
        in section
    )


def test_previous_and_next_pages(make_app, factory):
    small = make_app(CONSOLE_PAGE_SIZE=2)
    for i in range(5):
        factory.client("acme", name=f"page-{i}")
    console = Console(small.test_client())
    assert console.signin(*factory.admin("acme")).status_code == 303

    def visit(url: str) -> tuple[list[str], str | None, str | None]:
        text = console.get(url).get_data(as_text=True)
        names = re.findall(r'/console/clients/[0-9a-f-]+">([^<]+)</a>', text.split("<tbody>")[1])
        links = {
            rel: html.unescape(href)
            for href, rel in re.findall(r'<a href="([^"]+)" rel="(prev|next)"', text)
        }
        return names, links.get("prev"), links.get("next")

    names, prev, nxt = visit("/console/clients?name_prefix=page-")
    assert names == ["page-0", "page-1"] and prev is None
    pages = [names]
    while nxt:
        assert "name_prefix=page-" in nxt
        names, prev, nxt = visit(nxt)
        pages.append(names)
        assert prev is not None and "name_prefix=page-" in prev
        # The previous link leads back to exactly the page before.
        assert visit(prev)[0] == pages[-2]
    assert pages == [["page-0", "page-1"], ["page-2", "page-3"], ["page-4"]]
    # The second page's previous link is the first page itself (no cursor).
    second = visit("/console/clients?name_prefix=page-")[2]
    assert "cursor" not in visit(second)[1]
