"""Disable, revoke-tokens, rotate, delete-secret ask first: a bare POST is 400, nothing changes."""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Client, ClientSecret
from tests.conftest import basic_auth
from tests.console.test_console import CLIENT_ID_RE, SECRET_RE, Console, token_status

SECRET_PREFIX = "ccs_"

FORM_RE = re.compile(r'<form method="post" action="([^"]+)">(.*?)</form>', re.S)
HIDDEN_RE = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


@pytest.fixture
def acme(client, factory) -> Console:
    console = Console(client)
    assert console.signin(*factory.admin("acme")).status_code == 303
    return console


def confirm_form(console: Console, path: str) -> tuple[str, dict[str, str]]:
    """The confirmation page's acting form: its target and hidden fields."""
    page = console.get(path)
    assert page.status_code == 200, page.get_data(as_text=True)
    target, inner = FORM_RE.search(page.get_data(as_text=True)).groups()
    return html.unescape(target), {k: html.unescape(v) for k, v in HIDDEN_RE.findall(inner)}


def secret_ids(app, cid: str) -> set[tuple]:
    """The client's secrets as (id, expires_at): any rotation or deletion changes the set."""
    with app.app_context():
        rows = db.session.scalars(sa.select(ClientSecret).where(ClientSecret.client_id == cid))
        return {(s.id, s.expires_at) for s in rows}


def test_disable_asks_first(app, acme, factory):
    cid, secret = factory.client("acme")
    page = acme.get(f"/console/clients/{cid}").get_data(as_text=True)
    assert f"/console/clients/{cid}/confirm/disable" in page
    bare = acme.post(f"/console/clients/{cid}/state", {"action": "disable"})
    assert bare.status_code == 400
    assert "Confirm the action" in bare.get_data(as_text=True)
    with app.app_context():
        assert not db.session.get(Client, cid).disabled
    assert token_status(acme.http, cid, secret) == 200

    target, fields = confirm_form(acme, f"/console/clients/{cid}/confirm/disable")
    assert target == f"/console/clients/{cid}/state"
    assert fields["confirm"] == "yes" and fields["action"] == "disable"
    assert acme.post(target, fields).status_code == 303
    with app.app_context():
        assert db.session.get(Client, cid).disabled
    assert token_status(acme.http, cid, secret) == 401


def test_enable_lock_and_unlock_need_no_confirmation(app, acme, factory):
    cid, _ = factory.client("acme", disabled=True)
    for action in ("enable", "lock", "unlock"):
        assert acme.post(f"/console/clients/{cid}/state", {"action": action}).status_code == 303
    with app.app_context():
        client = db.session.get(Client, cid)
        assert not client.disabled and not client.locked


def test_revoke_tokens_asks_first(client, acme, factory):
    cid, secret = factory.client("acme")
    before = factory.token(cid, secret)["access_token"]
    resource = factory.client("acme")

    def active() -> bool:
        response = client.post(
            "/oauth2/introspect", data={"token": before}, headers=basic_auth(*resource)
        )
        return response.get_json()["active"]

    assert acme.post(f"/console/clients/{cid}/revoke-tokens").status_code == 400
    assert active()
    target, fields = confirm_form(acme, f"/console/clients/{cid}/confirm/revoke-tokens")
    assert target == f"/console/clients/{cid}/revoke-tokens"
    assert acme.post(target, fields).status_code == 303
    assert not active()


def test_rotate_asks_first_with_the_chosen_grace(app, acme, factory):
    cid, secret = factory.client("acme")
    before = secret_ids(app, cid)
    bare = acme.post(f"/console/clients/{cid}/secrets/rotate", {"grace_period": "0"})
    assert bare.status_code == 400
    assert secret_ids(app, cid) == before
    assert token_status(acme.http, cid, secret) == 200

    page = acme.get(f"/console/clients/{cid}/confirm/rotate?grace_period=3600")
    assert "keeps working for 1 hour" in page.get_data(as_text=True)
    target, fields = confirm_form(acme, f"/console/clients/{cid}/confirm/rotate?grace_period=3600")
    assert target == f"/console/clients/{cid}/secrets/rotate"
    assert fields["grace_period"] == "3600" and fields["confirm"] == "yes"
    # Without a (valid) choice the confirmation offers the service's default: no grace.
    _, fields = confirm_form(acme, f"/console/clients/{cid}/confirm/rotate")
    assert fields["grace_period"] == "0"
    page = acme.get(f"/console/clients/{cid}/confirm/rotate").get_data(as_text=True)
    assert "Every other secret stops working at once." in page


def test_delete_secret_asks_first(app, acme, factory):
    cid, secret = factory.client("acme")
    ((secret_id, _),) = secret_ids(app, cid)
    assert acme.post(f"/console/clients/{cid}/secrets/{secret_id}/delete").status_code == 400
    assert secret_ids(app, cid) != set()
    assert token_status(acme.http, cid, secret) == 200
    page = acme.get(f"/console/clients/{cid}").get_data(as_text=True)
    assert (
        html.escape(f"/console/clients/{cid}/confirm/delete-secret?secret_id={secret_id}") in page
    )
    path = f"/console/clients/{cid}/confirm/delete-secret?secret_id={secret_id}"
    target, fields = confirm_form(acme, path)
    assert target == f"/console/clients/{cid}/secrets/{secret_id}/delete"
    assert acme.post(target, fields).status_code == 303
    assert secret_ids(app, cid) == set()
    assert token_status(acme.http, cid, secret) == 401


def test_confirmation_pages_refuse_unknown_things(acme, factory):
    cid, _ = factory.client("acme")
    other, _ = factory.client("globex")
    assert acme.get(f"/console/clients/{cid}/confirm/explode").status_code == 404
    assert acme.get(f"/console/clients/{cid}/confirm/delete-secret?secret_id=x").status_code == 404
    assert acme.get(f"/console/clients/{other}/confirm/disable").status_code == 404


def test_confirmation_pages_need_clients_write(client, factory):
    reader = Console(client)
    assert reader.signin(*factory.admin("acme", scopes=["clients:read"])).status_code == 303
    cid, _ = factory.client("acme")
    assert reader.get(f"/console/clients/{cid}/confirm/disable").status_code == 403


# --- Post/redirect/get: a new secret shown once from the session -------------------------


def test_rotation_redirects_and_a_refresh_neither_shows_nor_rotates_again(app, acme, factory):
    cid, first = factory.client("acme")
    posted = acme.post(
        f"/console/clients/{cid}/secrets/rotate", {"grace_period": "0", "confirm": "yes"}
    )
    assert posted.status_code == 303
    location = posted.headers["Location"]
    assert location.endswith(f"/console/clients/{cid}/secrets/new")
    # The secret crosses the redirect sealed: the cookie never holds it in the clear.
    assert all(SECRET_PREFIX not in value for value in posted.headers.getlist("Set-Cookie"))
    page = acme.get(location)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    new = SECRET_RE.search(page.get_data(as_text=True)).group(1)
    assert token_status(acme.http, cid, new) == 200
    assert token_status(acme.http, cid, first) == 401
    secrets_after = secret_ids(app, cid)

    refreshed = acme.get(location)
    assert refreshed.status_code == 302
    assert refreshed.headers["Location"].endswith(f"/console/clients/{cid}#secrets")
    assert new not in refreshed.get_data(as_text=True)
    landing = acme.get(refreshed.headers["Location"]).get_data(as_text=True)
    assert "shown only once" in landing and new not in landing
    assert secret_ids(app, cid) == secrets_after  # no second rotation
    assert token_status(acme.http, cid, new) == 200


def test_create_and_add_redirect_to_a_page_shown_once(app, acme, factory):
    acme.get("/console/clients/new")
    posted = acme.post("/console/clients/new", {"name": "prg-made", "scopes": "read"})
    assert posted.status_code == 303
    page = acme.get(posted.headers["Location"]).get_data(as_text=True)
    assert "Client prg-made created" in page
    cid = CLIENT_ID_RE.search(page).group(1)
    assert acme.get(posted.headers["Location"]).status_code == 302
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).where(Client.name == "prg-made")) == 1

    posted = acme.post(f"/console/clients/{cid}/secrets", {"description": "", "expires_in": "0"})
    assert posted.status_code == 303
    assert SECRET_RE.search(acme.get(posted.headers["Location"]).get_data(as_text=True))
    assert len(secret_ids(app, cid)) == 2
    assert acme.get(posted.headers["Location"]).status_code == 302
    assert len(secret_ids(app, cid)) == 2


def test_a_kept_secret_opens_only_in_its_own_session_and_client(client, app, acme, factory):
    cid, _ = factory.client("acme")
    other, _ = factory.client("acme")
    posted = acme.post(f"/console/clients/{cid}/secrets", {"description": "", "expires_in": "0"})
    # Another client's page finds no secret for it (and the kept one is dropped).
    assert acme.get(f"/console/clients/{other}/secrets/new").status_code == 302
    assert acme.get(posted.headers["Location"]).status_code == 302
    # A cookie copied into another signed-in session opens nothing there.
    posted = acme.post(f"/console/clients/{cid}/secrets", {"description": "", "expires_in": "0"})
    stolen = posted.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    with app.test_request_context():
        from flask import current_app

        serializer = current_app.session_interface.get_signing_serializer(current_app)
        sealed = serializer.loads(stolen)["once"]
    intruder = Console(app.test_client())
    assert intruder.signin(*factory.admin("acme")).status_code == 303
    with intruder.http.session_transaction("/console/clients") as session:
        session["once"] = sealed
    assert intruder.get(f"/console/clients/{cid}/secrets/new").status_code == 302


# --- One rotation default; the result says until when the old secret works ---------------


def test_rotation_result_says_until_when_the_old_secret_works(app, acme, factory):
    from app.clients.secrets import DEFAULT_GRACE_PERIOD

    cid, first = factory.client("acme")
    page = acme.get(f"/console/clients/{cid}").get_data(as_text=True)
    selected = re.search(r'<option value="(\d+)" selected>', page).group(1)
    assert int(selected) == DEFAULT_GRACE_PERIOD

    rotate = f"/console/clients/{cid}/secrets/rotate"
    shown = acme.shown(acme.post(rotate, {"grace_period": "0", "confirm": "yes"}))
    assert "The old secret stopped working now." in shown.get_data(as_text=True)

    shown = acme.shown(acme.post(rotate, {"grace_period": "3600", "confirm": "yes"}))
    text = shown.get_data(as_text=True)
    match = re.search(
        r'The old secret works until <time datetime="([^"]+)">([^<]+) UTC</time>', text
    )
    assert match, text
    with app.app_context():
        newest = db.session.scalars(
            sa.select(ClientSecret)
            .where(ClientSecret.client_id == cid, ClientSecret.expires_at.is_not(None))
            .order_by(ClientSecret.expires_at.desc())
        ).first()
    until = datetime.fromisoformat(match.group(1))
    # The page's time is the old secrets' stored expiry (to the second).
    assert abs(until - newest.expires_at) < timedelta(seconds=1)
    assert match.group(2) == newest.expires_at.strftime("%Y-%m-%d %H:%M:%S")
