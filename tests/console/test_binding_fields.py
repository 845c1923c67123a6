"""The console's client form for sender-constrained tokens, the tls_client_auth
certificate rule and the security profile (docs/api.md §2.1), through HTTP;
the API shows what the form saved."""

from __future__ import annotations

import html
import re

from tests.console.test_console import Console

API = "/api/v1/clients"


def edit_form(console: Console, cid: str, **fields) -> dict:
    page = console.get(f"/console/clients/{cid}").get_data(as_text=True)
    version = re.search(r'name="version" value="(\d+)"', page).group(1)
    return {
        "version": version,
        "name": "bound",
        "scopes": "read",
        "audiences": "",
        "client_type": "standard",
        "access_token_ttl": "900",
        "tags": "",
        **fields,
    }


def test_create_and_edit_binding_certificate_rule_and_profile(client, factory):
    console = Console(client)
    assert console.signin(*factory.admin("system")).status_code == 303
    admin = factory.admin_headers("system")
    cid, _, _ = console.create(
        name="bound",
        scopes="read",
        dpop_bound_access_tokens="on",
        certificate_rule="tls_client_auth_san_dns",
        certificate_value="billing.example.com",
    )
    shown = client.get(f"{API}/{cid}", headers=admin).get_json()
    assert shown["dpop_bound_access_tokens"] is True
    assert shown["tls_client_certificate_bound_access_tokens"] is False
    assert shown["tls_client_auth_san_dns"] == "billing.example.com"
    assert shown["security_profile"] is None
    page = console.get(f"/console/clients/{cid}").get_data(as_text=True)
    assert "Every token is DPoP-bound" in page
    assert 'value="billing.example.com"' in page

    form = edit_form(
        console,
        cid,
        tls_client_certificate_bound_access_tokens="on",
        certificate_rule="tls_client_auth_subject_dn",
        certificate_value="CN=billing,O=Acme",
        security_profile="fapi2",
        allowed_auth_methods=["private_key_jwt"],
    )
    response = console.post(f"/console/clients/{cid}/edit", form)
    assert response.status_code == 303, response.get_data(as_text=True)
    shown = client.get(f"{API}/{cid}", headers=admin).get_json()
    assert shown["dpop_bound_access_tokens"] is False
    assert shown["tls_client_certificate_bound_access_tokens"] is True
    assert shown["tls_client_auth_subject_dn"] == "CN=billing,O=Acme"
    assert shown["tls_client_auth_san_dns"] is None
    assert shown["security_profile"] == "fapi2"
    page = console.get(f"/console/clients/{cid}").get_data(as_text=True)
    assert "FAPI 2.0: every token must be DPoP-bound or certificate-bound" in page


def test_a_failed_save_keeps_every_choice(client, factory):
    console = Console(client)
    assert console.signin(*factory.admin("system")).status_code == 303
    cid, _, _ = console.create(name="bound", scopes="read")
    form = edit_form(
        console,
        cid,
        certificate_rule="tls_client_auth_san_ip",
        certificate_value="not-an-ip",
        allowed_auth_methods=["client_secret_basic", "private_key_jwt"],
    )
    response = console.post(f"/console/clients/{cid}/edit", form)
    assert response.status_code == 400
    page = html.unescape(response.get_data(as_text=True))
    assert "tls_client_auth_san_ip" in page
    assert 'value="not-an-ip"' in page
    assert re.search(r'value="tls_client_auth_san_ip"\s+selected', page)
    # Both ticked methods come back ticked, not only the first.
    for method in ("client_secret_basic", "private_key_jwt"):
        assert re.search(rf'value="{method}"\s+checked', page), method
