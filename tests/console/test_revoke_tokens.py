"""The console's "Revoke all tokens" (docs/api.md §2.1 `revoke-tokens`), through HTTP."""

from __future__ import annotations

from tests.conftest import basic_auth
from tests.console.test_console import Console

AUDIENCE = "https://orders.example"


def active(http, token: str, resource: dict) -> bool:
    response = http.post("/oauth2/introspect", data={"token": token}, headers=resource)
    return response.get_json()["active"]


def test_revoke_all_tokens_from_the_client_page(client, factory):
    console = Console(client)
    assert console.signin(*factory.admin("acme")).status_code == 303
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE], locked=True)
    resource = basic_auth(*factory.client("acme"))
    token = factory.token(cid, secret)["access_token"]
    page = console.get(f"/console/clients/{cid}").get_data(as_text=True)
    assert f"/console/clients/{cid}/confirm/revoke-tokens" in page
    response = console.post(f"/console/clients/{cid}/revoke-tokens", {"confirm": "yes"})
    assert response.status_code == 303
    assert not active(client, token, resource)
    assert active(client, factory.token(cid, secret)["access_token"], resource)
    # Without the form's CSRF token nothing happens.
    later = factory.token(cid, secret)["access_token"]
    assert (
        console.post(
            f"/console/clients/{cid}/revoke-tokens", {"confirm": "yes"}, csrf=False
        ).status_code
        == 403
    )
    assert active(client, later, resource)


def test_another_accounts_client_is_not_found(client, factory):
    console = Console(client)
    assert console.signin(*factory.admin("other")).status_code == 303
    console.get("/console/clients")
    cid, secret = factory.client("acme", scopes=["read"], audiences=[AUDIENCE])
    resource = basic_auth(*factory.client("acme"))
    token = factory.token(cid, secret)["access_token"]
    assert (
        console.post(f"/console/clients/{cid}/revoke-tokens", {"confirm": "yes"}).status_code == 404
    )
    assert active(client, token, resource)
