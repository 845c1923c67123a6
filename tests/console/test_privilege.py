"""The privilege rule (docs/api.md §2) on the console: every form that
changes an admin holding a scope the signed-in admin lacks is 403 and
changes nothing."""

from __future__ import annotations

import pytest

from tests.api.test_privilege import WEAK, snapshot
from tests.console.test_console import Console

API = "/api/v1/clients"


@pytest.fixture
def console(client) -> Console:
    return Console(client)


@pytest.fixture
def strong(client, factory):
    """(id, secret id, kid, name, version) of a system admin holding every management scope."""
    cid, _ = factory.admin("system")
    full = factory.admin_headers("system")
    secret_id = client.post(f"{API}/{cid}/secrets", json={}, headers=full).get_json()["id"]
    kid = client.post(f"{API}/{cid}/keys", json={}, headers=full).get_json()["kid"]
    shown = client.get(f"{API}/{cid}", headers=full).get_json()
    return cid, secret_id, kid, shown


@pytest.fixture
def weak(factory, console) -> Console:
    assert console.signin(*factory.admin("system", scopes=WEAK)).status_code == 303
    return console


def forms(strong) -> dict[str, tuple[str, dict]]:
    cid, secret_id, kid, shown = strong
    base = f"/console/clients/{cid}"
    edit = {
        "version": "1",
        "name": shown["name"],
        "friendly_name": "mine now",
        "client_type": "admin",
        "scopes": " ".join(shown["scopes"]),
        "audiences": " ".join(shown["audiences"]),
        "access_token_ttl": str(shown["access_token_ttl"]),
        "tags": "",
    }
    return {
        "edit": (f"{base}/edit", edit),
        "lock": (f"{base}/state", {"action": "lock"}),
        "unlock": (f"{base}/state", {"action": "unlock"}),
        "disable": (f"{base}/state", {"action": "disable", "confirm": "yes"}),
        "delete": (f"{base}/delete", {"confirm_name": shown["name"]}),
        "add_secret": (f"{base}/secrets", {"description": "", "expires_in": "0"}),
        "rotate_secret": (f"{base}/secrets/rotate", {"grace_period": "0", "confirm": "yes"}),
        "delete_secret": (f"{base}/secrets/{secret_id}/delete", {"confirm": "yes"}),
        "add_key": (f"{base}/keys", {"action": "generate"}),
        "delete_key": (f"{base}/keys/{kid}/delete", {"confirm": "yes"}),
        "revoke_tokens": (f"{base}/revoke-tokens", {"confirm": "yes"}),
    }


FORMS = ["edit", "lock", "unlock", "disable", "delete", "add_secret", "rotate_secret"]
FORMS += ["delete_secret", "add_key", "delete_key", "revoke_tokens"]


@pytest.mark.parametrize("form", FORMS)
def test_each_console_change_to_a_stronger_admin_is_refused(app, weak, strong, form):
    path, data = forms(strong)[form]
    weak.get(f"/console/clients/{strong[0]}")
    before = snapshot(app)
    response = weak.post(path, data)
    assert response.status_code == 403, response.get_data(as_text=True)
    assert "which the caller does not hold" in response.get_data(as_text=True)
    assert snapshot(app) == before


def test_the_stronger_admins_page_offers_no_change(weak, strong, factory):
    page = weak.get(f"/console/clients/{strong[0]}").get_data(as_text=True)
    assert "Save changes" not in page
    peer, _ = factory.admin("system", scopes=WEAK)
    assert "Save changes" in weak.get(f"/console/clients/{peer}").get_data(as_text=True)


def test_the_console_cannot_create_a_stronger_admin(app, weak):
    weak.get("/console/clients/new")
    before = snapshot(app)
    response = weak.post(
        "/console/clients/new",
        {"name": "stronger", "client_type": "admin", "scopes": "clients:read audit:read"},
    )
    assert response.status_code == 403
    assert snapshot(app) == before
