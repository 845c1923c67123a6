"""The signing-keys page: read-only, for system-account admins with keys:read, as in the API."""

from __future__ import annotations

import re

from tests.console.test_console import Console


def test_system_admin_sees_every_key_with_state_and_times(client, factory):
    headers = factory.admin_headers("system")
    assert client.post("/api/v1/signing-keys/rotate", headers=headers).status_code == 200
    listed = client.get("/api/v1/signing-keys", headers=headers).get_json()["data"]
    console = Console(client)
    assert console.signin(*factory.admin("system")).status_code == 303
    home = console.get("/console/clients").get_data(as_text=True)
    assert 'href="/console/signing-keys"' in home
    page = console.get("/console/signing-keys")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    rows = re.findall(
        r"<tr>\s*<td><code class=\"small\">([^<]+)</code>.*?>(next|current|retired)<", text, re.S
    )
    # Same keys, same order (next, current, retired newest first) as the API.
    assert rows == [(k["kid"], k["status"]) for k in listed]
    assert {"next", "current", "retired"} <= {status for _, status in rows}
    assert "<time datetime=" in text and "PRIVATE" not in text
    # Read-only: no form acts on keys from here.
    assert (
        "/signing-keys/rotate" not in text and 'method="post" action="/console/signing' not in text
    )


def test_other_accounts_and_admins_without_keys_read_are_refused(app, client, factory):
    acme = Console(client)
    assert acme.signin(*factory.admin("acme")).status_code == 303
    assert "/console/signing-keys" not in acme.get("/console/clients").get_data(as_text=True)
    assert acme.get("/console/signing-keys").status_code == 403

    weak = Console(app.test_client())
    assert weak.signin(*factory.admin("system", scopes=["clients:read"])).status_code == 303
    assert "/console/signing-keys" not in weak.get("/console/clients").get_data(as_text=True)
    refused = weak.get("/console/signing-keys")
    assert refused.status_code == 403
    assert "keys:read" in refused.get_data(as_text=True)


def test_resource_servers_have_list_and_detail_pages_in_the_navigation(client, factory):
    rs = factory.resource_server("acme", "https://nav.example", name="Nav API")
    console = Console(client)
    assert console.signin(*factory.admin("acme")).status_code == 303
    home = console.get("/console/clients").get_data(as_text=True)
    assert 'href="/console/resource-servers"' in home
    listing = console.get("/console/resource-servers").get_data(as_text=True)
    assert f'href="/console/resource-servers/{rs}"' in listing
    assert "Nav API" in console.get(f"/console/resource-servers/{rs}").get_data(as_text=True)


def test_one_rule_for_api_and_console():
    """app.clients.policy decides for both faces: the scope, then the system account."""
    import pytest

    from app.clients.policy import ensure_may_use_signing_keys
    from app.errors import Forbidden

    ensure_may_use_signing_keys("keys:read", {"keys:read"}, True)
    with pytest.raises(Forbidden) as missing:
        ensure_may_use_signing_keys("keys:read", {"clients:read"}, True)
    assert missing.value.code == "insufficient_scope"
    with pytest.raises(Forbidden, match="system account"):
        ensure_may_use_signing_keys("keys:read", {"keys:read"}, False)
