"""Integration: console sessions live in the database and end on every instance at once.

Two apps built on one database stand for two instances: each has its own
client cache (here kept for a minute, so only a database read can see a
change in time), and a browser's cookie copied from one to the other is a
load balancer sending it elsewhere. Real database, real crypto, HTTP through
Flask's test clients.
"""

from __future__ import annotations

import hashlib
import re
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.console.forms import GRACE_PERIODS
from app.extensions import db
from app.models import ConsoleSession
from app.timeutil import utcnow
from tests.console.test_console import Console

COOKIE = "ccserver_console"
API = "/api/v1/clients"


def cookie_of(console: Console) -> str:
    cookie = console.http.get_cookie(COOKIE, path="/console")
    assert cookie is not None
    return cookie.value


def browser_with(app, cookie: str) -> Console:
    """A browser on `app` that presents `cookie` (copied, or sent to another instance)."""
    other = Console(app.test_client())
    other.http.set_cookie(COOKIE, cookie, path="/console")
    return other


def signed_in(console: Console) -> bool:
    response = console.get("/console/clients")
    if response.status_code == 302:
        assert "/console/signin" in response.headers["Location"]
        return False
    assert response.status_code == 200
    return True


def session_token(app, cookie: str) -> str:
    """The session token inside a console cookie (what a thief of the cookie holds)."""
    return app.session_interface.get_signing_serializer(app).loads(cookie)["sid"]


def rows(app) -> list[ConsoleSession]:
    with app.app_context():
        found = list(db.session.scalars(sa.select(ConsoleSession)))
        db.session.remove()
        return found


def run_sql(app, statement: str, **params) -> None:
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


@pytest.fixture
def console(client) -> Console:
    """A browser on instance A (the `app` fixture)."""
    return Console(client)


@pytest.fixture
def other(make_app):
    """Instance B: the same database, its own client cache, kept long."""
    return make_app(CLIENT_CACHE_TTL=60)


@pytest.fixture
def admin(factory, app, console):
    """An acme admin signed in on instance A; returns (client id, secret, cookie)."""
    cid, secret = factory.admin("acme")
    assert console.signin(cid, secret).status_code == 303
    return cid, secret, cookie_of(console)


def test_a_copied_cookie_is_refused_after_sign_out(app, console, admin):
    _, _, cookie = admin
    thief = browser_with(app, cookie)
    assert signed_in(thief)
    assert console.post("/console/signout").status_code == 303
    assert not signed_in(thief)
    assert not signed_in(console)
    assert rows(app) == []


def test_sign_out_on_one_instance_ends_the_session_on_another(app, other, console, admin):
    _, _, cookie = admin
    on_b = browser_with(other, cookie)
    assert signed_in(on_b)
    assert console.post("/console/signout").status_code == 303
    assert not signed_in(on_b)


def test_sign_in_replaces_the_browsers_session(app, factory, console, admin):
    """No fixation: signing in again makes a new token and ends the one the browser had."""
    _, _, first = admin
    cid, secret = factory.admin("acme")
    assert console.signin(cid, secret).status_code == 303
    second = cookie_of(console)
    assert session_token(app, first) != session_token(app, second)
    assert not signed_in(browser_with(app, first))
    assert signed_in(console)
    assert [r.client_id for r in rows(app)] == [cid]


def test_the_database_holds_only_the_tokens_hash(app, console, admin):
    cid, _, cookie = admin
    token = session_token(app, cookie)
    digest = hashlib.sha256(token.encode()).hexdigest()
    (row,) = rows(app)
    assert (row.id, row.client_id) == (digest, cid)
    with app.app_context():
        for table in db.metadata.sorted_tables:
            with db.engine.connect() as conn:
                for values in conn.execute(sa.select(table)):
                    assert token not in repr(tuple(values)), table.name
    # A copy of the table opens nothing: its hash is not a session token.
    serializer = app.session_interface.get_signing_serializer(app)
    forged = serializer.dumps({"sid": digest, "csrf": "x"})
    assert not signed_in(browser_with(app, forged))
    assert signed_in(console)


def test_deleting_the_admin_client_ends_its_sessions(app, other, factory, client, admin):
    cid, _, cookie = admin
    on_b = browser_with(other, cookie)
    assert signed_in(on_b)
    system = factory.admin_headers("system")
    assert client.delete(f"{API}/{cid}", headers=system).status_code == 204
    assert not signed_in(on_b)
    assert [r for r in rows(app) if r.client_id == cid] == []


@pytest.mark.parametrize(
    "change",
    [
        {"disabled": True},
        {"scopes": []},
        {"client_type": "standard", "audiences": [], "scopes": ["read"]},
    ],
    ids=["disabled", "no_scopes", "demoted"],
)
def test_disabling_or_demoting_ends_sessions_on_another_instance_at_once(
    app, other, factory, client, console, admin, change
):
    cid, _, cookie = admin
    on_b = browser_with(other, cookie)
    assert signed_in(on_b)  # B has the client cached for a minute now
    system = factory.admin_headers("system")
    response = client.patch(f"{API}/{cid}", json=change, headers=system)
    assert response.status_code == 200, response.get_json()
    # No wait for B's cache: the session is read from the database.
    assert not signed_in(on_b)
    assert not signed_in(console)
    assert rows(app) == []


def test_rotation_without_grace_ends_the_sessions_its_old_secret_opened(
    app, other, factory, client, admin
):
    cid, _, cookie = admin
    on_b = browser_with(other, cookie)
    assert signed_in(on_b)
    system = factory.admin_headers("system")
    response = client.post(f"{API}/{cid}/secrets/rotate", json={}, headers=system)
    assert response.status_code == 201
    assert not signed_in(on_b)
    # The new secret signs in.
    fresh = Console(other.test_client())
    assert fresh.signin(cid, response.get_json()["secret"]).status_code == 303
    assert signed_in(fresh)


def test_rotation_with_grace_ends_the_sessions_when_the_grace_ends(
    app, other, factory, client, admin
):
    cid, _, cookie = admin
    on_b = browser_with(other, cookie)
    system = factory.admin_headers("system")
    grace = 2
    response = client.post(
        f"{API}/{cid}/secrets/rotate", json={"grace_period": grace}, headers=system
    )
    assert response.status_code == 201
    rotated = time.monotonic()
    assert signed_in(on_b)
    time.sleep(max(0.0, rotated + grace + 0.2 - time.monotonic()))
    assert not signed_in(on_b)


def test_a_secret_deleted_elsewhere_cannot_sign_in_from_a_stale_cache(app, other, factory, client):
    """B's cache still holds the secret; the database decides, and refuses the sign-in."""
    cid, secret = factory.admin("acme")
    on_b = Console(other.test_client())
    assert on_b.signin(cid, secret).status_code == 303  # B caches the record
    system = factory.admin_headers("system")
    listed = client.get(f"{API}/{cid}/secrets", headers=system).get_json()["data"]
    (secret_id,) = [s["id"] for s in listed]
    assert client.delete(f"{API}/{cid}/secrets/{secret_id}", headers=system).status_code == 204
    again = Console(other.test_client())
    assert again.signin(cid, secret).status_code == 401
    assert not signed_in(on_b)
    assert rows(app) == []


def test_revoking_the_clients_tokens_ends_the_sessions_begun_before(
    app, other, factory, client, admin
):
    """The token cut-off (clients.tokens_valid_after) counts for console sessions too."""
    cid, secret, cookie = admin
    on_b = browser_with(other, cookie)
    assert signed_in(on_b)
    system = factory.admin_headers("system")
    response = client.post(f"{API}/{cid}/revoke-tokens", headers=system)
    assert response.status_code == 204
    assert not signed_in(on_b)
    # A sign-in after the cut-off is a new session, and lasts.
    later = Console(other.test_client())
    assert later.signin(cid, secret).status_code == 303
    assert signed_in(later)


def test_revoking_its_own_tokens_in_the_console_signs_the_admin_out(app, console, admin):
    cid, _, _ = admin
    console.get(f"/console/clients/{cid}")
    assert (
        console.post(f"/console/clients/{cid}/revoke-tokens", {"confirm": "yes"}).status_code == 303
    )
    assert not signed_in(console)


def test_sessions_end_at_their_lifetime_and_expired_rows_are_purged(make_app, factory):
    short = make_app(CONSOLE_SESSION_LIFETIME=600)
    cid, secret = factory.admin("acme")
    first = Console(short.test_client())
    assert first.signin(cid, secret).status_code == 303
    (row,) = rows(short)
    assert row.expires_at - row.created_at == timedelta(seconds=600)
    assert signed_in(first)
    run_sql(short, "UPDATE console_sessions SET expires_at = :past", past=utcnow())
    assert not signed_in(first)
    assert rows(short) == []

    # A session nobody comes back to is deleted by a later sign-in.
    idle = Console(short.test_client())
    assert idle.signin(cid, secret).status_code == 303
    run_sql(short, "UPDATE console_sessions SET expires_at = :past", past=utcnow())
    later = Console(short.test_client())
    assert later.signin(cid, secret).status_code == 303
    assert [r.id for r in rows(short)] == [
        hashlib.sha256(session_token(short, cookie_of(later)).encode()).hexdigest()
    ]


def test_the_rotate_form_defaults_to_no_grace(factory, console, admin):
    cid, _, _ = admin
    assert GRACE_PERIODS[0][0] == 0
    page = console.get(f"/console/clients/{cid}").get_data(as_text=True)
    select = re.search(r'<select id="grace" name="grace_period">(.*?)</select>', page, re.S)
    assert select is not None
    options = re.findall(r'<option value="(\d+)"\s*(selected)?', select.group(1))
    assert options[0] == ("0", "selected")
    assert [value for value, chosen in options if chosen] == ["0"]
